"""QuantConv2d / QuantLinear / QuantConvBn2d (BN folding strategies -1..4) against reference formulas and torch BN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.quant.qmodules import STRATEGIES, QuantConv2d, QuantConvBn2d, QuantLinear, fold_conv_bn_weights
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec

INT4_PC = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)
FOLDING = [s for s in STRATEGIES if s != -1]


def _conv_bn(
    bias: bool = True, groups: int = 1, affine: bool = True, seed: int = 0
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A conv + BN with non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    cin, cout = (4, 4) if groups > 1 else (3, 5)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(cout, affine=affine)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 2.0)
        if affine:
            bn.weight.uniform_(0.5, 1.5).mul_(torch.tensor([1.0, -1.0] * (cout // 2) + [1.0] * (cout % 2)))
            bn.bias.normal_(0, 0.5)
    return conv, bn


def _x(cin: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(4, cin, 6, 6)


def _bypassed() -> FakeQuantize:
    fq = FakeQuantize(INT4_PC, "weight")
    fq.enabled = False
    return fq


def _int4_for(w: torch.Tensor) -> FakeQuantize:
    """Per-channel int4 symmetric quantizer calibrated on ``w``'s per-channel absmax."""
    fq = FakeQuantize(INT4_PC, "weight")
    s = w.detach().abs().amax(dim=(1, 2, 3)) / 7
    fq.set_qparams(s, torch.zeros_like(s, dtype=torch.int32), signed=True)
    return fq


def _hand_quant(w: torch.Tensor, qmin: int = -8, qmax: int = 7) -> torch.Tensor:
    s = (w.abs().amax(dim=(1, 2, 3)) / qmax).reshape(-1, 1, 1, 1)
    return s * torch.clamp(torch.round(w / s), qmin, qmax)


CASES = [dict(bias=True), dict(bias=False), dict(bias=True, groups=4), dict(bias=False, affine=False)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", CASES, ids=["bias", "nobias", "depthwise", "noaffine"])
def test_eval_bypassed_equals_conv_bn(strategy: int, case: dict) -> None:
    conv, bn = _conv_bn(**case)
    x = _x(conv.in_channels)
    ref = nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn)).eval()(x)
    m = QuantConvBn2d(conv, bn, strategy, _bypassed()).eval()
    out = m(x)
    torch.testing.assert_close(out, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)
    if strategy != -1:
        torch.testing.assert_close(m.to_folded()(x), ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("strategy", FOLDING)
@pytest.mark.parametrize("case", CASES[:3], ids=["bias", "nobias", "depthwise"])
def test_eval_quantized_equals_to_folded_and_hand_reference(strategy: int, case: dict) -> None:
    conv, bn = _conv_bn(**case)
    x = _x(conv.in_channels)
    # Eq. (4) by hand, from the untouched modules
    sigma = torch.sqrt(bn.running_var + bn.eps)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    w_ref = conv.weight.detach() * (bn.weight.detach() / sigma).reshape(-1, 1, 1, 1)
    b_ref = bn.bias.detach() + (b - bn.running_mean) * bn.weight.detach() / sigma
    ref = F.conv2d(x, _hand_quant(w_ref), b_ref, padding=1, groups=conv.groups)

    m = QuantConvBn2d(conv, bn, strategy, _int4_for(w_ref)).eval()
    w_fold, b_fold = m.folded_weight_bias()
    torch.testing.assert_close(w_fold, w_ref)
    torch.testing.assert_close(b_fold, b_ref)
    with torch.no_grad():
        out = m(x)
        folded = m.to_folded()
        assert isinstance(folded, QuantConv2d) and folded.weight_fq is m.weight_fq
        assert folded.conv is not m.conv
        assert torch.equal(out, folded(x))  # deployed module: exactly the same ops
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # quantization is really on: differs from the float fold
    assert (out - F.conv2d(x, w_ref, b_ref, padding=1, groups=conv.groups)).abs().max() > 1e-3


def test_fold_helper_matches_eval_bn() -> None:
    conv, bn = _conv_bn()
    x = _x(3)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    torch.testing.assert_close(F.conv2d(x, w, b, padding=1), bn.eval()(conv(x)), atol=1e-5, rtol=1e-5)
    # linear weights (2-d) fold along the output axis too
    lin_w, lin_b = fold_conv_bn_weights(torch.ones(5, 2), None, torch.zeros(5), torch.full((5,), 3.0), None, None, 1.0)
    torch.testing.assert_close(lin_w, torch.full((5, 2), 0.5))
    torch.testing.assert_close(lin_b, torch.zeros(5))


def test_strategy0_merges_and_drops_bn() -> None:
    conv, bn = _conv_bn()
    m = QuantConvBn2d(conv, bn, 0, _bypassed())
    assert m.bn is None and m.conv is not conv
    names = {n for n, _ in m.named_parameters()}
    assert names == {"conv.weight", "conv.bias"}
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    torch.testing.assert_close(m.conv.weight.detach(), w.detach())
    # training and eval are the same plain conv
    x = _x(3)
    torch.testing.assert_close(m.train()(x), F.conv2d(x, w, b, padding=1).detach(), atol=1e-5, rtol=1e-5)


def test_strategy_minus1_not_foldable_and_bad_args() -> None:
    conv, bn = _conv_bn()
    with pytest.raises(ValueError):
        QuantConvBn2d(conv, bn, -1, nn.Identity()).to_folded()
    with pytest.raises(ValueError):
        QuantConvBn2d(conv, bn, 5, nn.Identity())
    with pytest.raises(ValueError):
        QuantConvBn2d(conv, nn.BatchNorm2d(5, track_running_stats=False), 1, nn.Identity())
    with pytest.raises(ValueError):
        QuantConvBn2d(conv, nn.BatchNorm2d(4), 1, nn.Identity())


def _train_step(strategy: int, momentum: float | None = 0.1, fq: nn.Module | None = None, **case):
    """One train-mode forward/backward of the module and of the FP32 conv+BN reference (same init)."""
    conv, bn = _conv_bn(**case)
    bn.momentum = momentum
    ref_conv, ref_bn = copy.deepcopy(conv), copy.deepcopy(bn)
    x = _x(conv.in_channels)
    m = QuantConvBn2d(conv, bn, strategy, fq if fq is not None else _bypassed()).train()
    out = m(x)
    ref = ref_bn.train()(ref_conv(x))
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    return m, out, ref, conv, bn, ref_conv, ref_bn


def test_strategy1_train_keeps_running_stats() -> None:
    conv, bn = _conv_bn()
    before = copy.deepcopy(bn.state_dict())
    m = QuantConvBn2d(conv, bn, 1, _bypassed()).train()
    x = _x(3)
    out = m(x)
    for k, v in before.items():
        assert torch.equal(bn.state_dict()[k], v), k
    # train output = the running-stat fold, identical to eval
    assert torch.equal(out, m.eval()(x))


@pytest.mark.parametrize("strategy", [2, 3, 4])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("case", CASES, ids=["bias", "nobias", "depthwise", "noaffine"])
def test_train_bypassed_matches_bn(strategy: int, momentum: float | None, case: dict) -> None:
    m, out, ref, conv, bn, ref_conv, ref_bn = _train_step(strategy, momentum, **case)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out, ref, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, atol=1e-6, rtol=1e-5)
    assert int(bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 1
    # batch statistics are in the autograd graph, so without quantization the gradients are BN's
    torch.testing.assert_close(conv.weight.grad, ref_conv.weight.grad, atol=1e-4, rtol=1e-4)
    if bn.affine:
        torch.testing.assert_close(bn.weight.grad, ref_bn.weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(bn.bias.grad, ref_bn.bias.grad, atol=1e-4, rtol=1e-4)
    if conv.bias is not None:  # BN cancels a conv bias: its gradient is ~0 in both
        torch.testing.assert_close(conv.bias.grad, ref_conv.bias.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", [2, 3])
def test_train_quantized_running_stats_from_fp_conv(strategy: int) -> None:
    # with a real quantizer, 2 / 3 still take their statistics from the FP32 conv, exactly what BN sees
    conv, bn = _conv_bn()
    w_fold, _ = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, 1e-5)
    m, out, ref, _, bn, _, ref_bn = _train_step(strategy, fq=_int4_for(w_fold))
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out, ref, atol=1e-4)  # the quantization noise is there


def test_strategy3_train_quantized_formula() -> None:
    # y = conv(x, q(w * gamma / sigma_run)) * sigma_run / sigma_b + beta + (b - mu_b) * gamma / sigma_b,
    # sigma_run after this batch's update
    conv, bn = _conv_bn()
    x = _x(3)
    y_fp = conv(x).detach()
    mu_b, var_b = y_fp.mean(dim=(0, 2, 3)), y_fp.var(dim=(0, 2, 3), unbiased=False)
    run_var = 0.9 * bn.running_var + 0.1 * y_fp.var(dim=(0, 2, 3), unbiased=True)
    sig_r, sig_b = torch.sqrt(run_var + bn.eps), torch.sqrt(var_b + bn.eps)
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    w_q = _hand_quant(conv.weight.detach() * (gamma / sig_r).reshape(-1, 1, 1, 1))
    ref = F.conv2d(x, w_q, padding=1) * (sig_r / sig_b).reshape(1, -1, 1, 1)
    ref = ref + (beta + (conv.bias.detach() - mu_b) * gamma / sig_b).reshape(1, -1, 1, 1)
    fq = _int4_for(conv.weight.detach() * (gamma / sig_r).reshape(-1, 1, 1, 1))
    out = QuantConvBn2d(conv, bn, 3, fq).train()(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_strategy4_train_quantized_formula() -> None:
    conv, bn = _conv_bn()
    x = _x(3)
    ref_bn = copy.deepcopy(bn).train()
    sig_r = torch.sqrt(bn.running_var + bn.eps)
    f = bn.weight.detach() / sig_r
    w_fold = conv.weight.detach() * f.reshape(-1, 1, 1, 1)
    y = F.conv2d(x, _hand_quant(w_fold), padding=1) / f.reshape(1, -1, 1, 1) + conv.bias.detach().reshape(1, -1, 1, 1)
    ref = ref_bn(y)
    out = QuantConvBn2d(conv, bn, 4, _int4_for(w_fold)).train()(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # BN statistics come from the quantized-weight conv output
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, atol=1e-5, rtol=1e-5)


def test_strategy4_zero_gamma_is_finite() -> None:
    conv, bn = _conv_bn()
    with torch.no_grad():
        bn.weight[0] = 0.0
    out = QuantConvBn2d(conv, bn, 4, _bypassed()).train()(_x(3))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], torch.full_like(out[:, 0], bn.bias[0].item()))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradients_reach_parameters_with_real_quantizer(strategy: int) -> None:
    conv, bn = _conv_bn()
    w_fold, _ = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, 1e-5)
    m = QuantConvBn2d(conv, bn, strategy, _int4_for(w_fold)).train()
    m(_x(3)).square().sum().backward()
    params = [m.conv.weight, m.conv.bias] if strategy == 0 else [conv.weight, bn.weight, bn.bias]
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_eval_after_training_equals_to_folded() -> None:
    # after some training steps the running statistics moved; eval still matches the deployed module exactly
    for strategy in FOLDING:
        conv, bn = _conv_bn()
        w_fold, _ = fold_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, 1e-5
        )
        m = QuantConvBn2d(conv, bn, strategy, _int4_for(w_fold)).train()
        with torch.no_grad():
            for seed in range(3):
                m(_x(3, seed=seed) * 2 + 1)
            m.eval()
            x = _x(3, seed=9)
            assert torch.equal(m(x), m.to_folded()(x)), strategy


def test_frozen_bn_uses_running_fold() -> None:
    # module in train mode with only bn in eval: running statistics, no update (BN freezing)
    for strategy in (2, 3, 4):
        conv, bn = _conv_bn()
        m = QuantConvBn2d(conv, bn, strategy, _bypassed()).train()
        m.bn.eval()
        before = bn.running_var.clone()
        x = _x(3)
        assert torch.equal(m(x), m.to_folded()(x))
        assert torch.equal(bn.running_var, before)


def test_quant_conv2d_shares_params_and_applies_fq() -> None:
    conv, _ = _conv_bn()
    conv.stride, conv.dilation = (2, 2), (2, 2)
    fq = _int4_for(conv.weight)
    m = QuantConv2d(conv, fq)
    assert m.conv is conv and m.conv.weight is conv.weight and m.conv.bias is conv.bias
    assert set(dict(m.named_parameters()).values()) == {conv.weight, conv.bias}
    x = _x(3)
    ref = F.conv2d(x, _hand_quant(conv.weight.detach()), conv.bias, stride=2, padding=1, dilation=2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    w, b = m.folded_weight_bias()
    assert w is conv.weight and b is conv.bias
    m(x).sum().backward()
    assert conv.weight.grad is not None


def test_quant_linear_shares_params_and_applies_fq() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    fq = FakeQuantize(QuantSpec(bits=4, per_channel=True, ch_axis=0), "weight")
    s = lin.weight.detach().abs().amax(dim=1) / 7
    fq.set_qparams(s, torch.zeros_like(s, dtype=torch.int32))
    m = QuantLinear(lin, fq)
    assert m.linear is lin and m.linear.weight is lin.weight
    x = torch.randn(3, 6)
    w_q = s[:, None] * torch.clamp(torch.round(lin.weight.detach() / s[:, None]), -8, 7)
    torch.testing.assert_close(m(x), F.linear(x, w_q, lin.bias), atol=1e-5, rtol=1e-5)
    w, b = m.folded_weight_bias()
    assert w is lin.weight and b is lin.bias
    # an nn.Identity quantizer gives the plain layer
    torch.testing.assert_close(QuantLinear(lin, nn.Identity())(x), lin(x))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_strategy4_division_gradients_are_autograds_bit_for_bit(needs: tuple[bool, bool], inplace: bool) -> None:
    # the per-channel division of strategy 4 returns exactly what autograd's div gives (same values, same sums)
    from bench.quant.qmodules import _DivChannels

    torch.manual_seed(3)
    y0 = torch.randn(8, 6, 5, 7) * 3
    f0 = (torch.rand(1, 6, 1, 1) + 0.05) * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0]).reshape(1, 6, 1, 1)
    up = torch.randn(8, 6, 5, 7)
    ya, fa = y0.clone().requires_grad_(needs[0]), f0.clone().requires_grad_(needs[1])
    yb, fb = y0.clone().requires_grad_(needs[0]), f0.clone().requires_grad_(needs[1])
    # in place, as strategy 4 divides its conv's output: a non-leaf that nothing else holds
    za, zb = ya / fa, _DivChannels.apply(yb * 1 if inplace else yb, fb, inplace)
    assert torch.equal(za, zb)
    (za * up).sum().backward()
    (zb * up).sum().backward()
    for a, b in ((ya, yb), (fa, fb)):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)


def test_strategy4_training_step_equals_plain_autograd_formula() -> None:
    # a strategy-4 layer trained for a step: output and every gradient equal the same formula written with plain
    # autograd ops (conv of the quantized folded weight, divided back, a real BN), bit for bit
    conv, bn = _conv_bn(seed=4)
    conv_r, bn_r = copy.deepcopy(conv), copy.deepcopy(bn)
    x = _x(3, seed=5)
    out = QuantConvBn2d(conv, bn, 4, _bypassed()).train()(x)
    sig = torch.sqrt(bn_r.running_var + bn_r.eps)
    f = bn_r.weight / sig
    f = torch.where(f < 0, -1.0, 1.0) * f.abs().clamp_min(1e-5)
    y = F.conv2d(x, conv_r.weight * f.reshape(-1, 1, 1, 1), None, padding=1) / f.reshape(1, -1, 1, 1)
    ref = bn_r.train()(y + conv_r.bias.reshape(1, -1, 1, 1))
    assert torch.equal(out, ref)
    up = torch.randn_like(out)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    for a, b in ((conv.weight, conv_r.weight), (conv.bias, conv_r.bias), (bn.weight, bn_r.weight),
                 (bn.bias, bn_r.bias), (bn.running_var, bn_r.running_var)):
        assert torch.equal(a.grad if a.requires_grad else a, b.grad if b.requires_grad else b)
