"""Bias correction against references written here: output shifts of ``add_output_bias`` measured on the modules,
empirical per-layer means measured with hooks on the quantized and the float model, the clipped-normal mean against
Monte Carlo and the white paper's ReLU formula, and the analytic term ``-dW E[x]`` computed by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.fx as fx
from torch import nn

from bench.models.tiny import TinyNet
from bench.ptq.bias_correction import add_output_bias, clipped_normal_mean, correct_bias
from bench.ptq.calibrate import calibrate
from bench.ptq.cle import equalize
from bench.quant.debug import set_mode
from bench.quant.insert import prepare, quantizers, weighted_modules
from bench.quant.profiles import load_profile
from bench.quant.qmodules import STRATEGIES, QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec

INT4_PC = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)


def _int4_for(w: torch.Tensor) -> FakeQuantize:
    fq = FakeQuantize(INT4_PC, "weight")
    s = w.detach().abs().flatten(1).amax(1) / 7
    fq.set_qparams(s, torch.zeros_like(s, dtype=torch.int32), signed=True)
    return fq


def _conv_bn(affine: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(5, affine=affine)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 2.0)
        if affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.5)
    return conv, bn


# ---------------------------------------------------------------- add_output_bias


def _shift_case(kind: str, strategy: int | None = None, affine: bool = True) -> nn.Module:
    conv, bn = _conv_bn(affine)
    if kind == "convbn":
        assert strategy is not None
        w = conv.weight * (bn.running_var + bn.eps).rsqrt().reshape(-1, 1, 1, 1)
        return QuantConvBn2d(conv, bn, strategy, _int4_for(w))
    if kind == "conv_nobias":
        return QuantConv2d(conv, _int4_for(conv.weight))
    if kind == "conv_bias":
        conv.bias = nn.Parameter(torch.randn(5))
        return QuantConv2d(conv, _int4_for(conv.weight))
    lin = nn.Linear(4, 5)
    return QuantLinear(lin, _int4_for(lin.weight))


CASES = [("convbn", s, True) for s in STRATEGIES] + [("convbn", s, False) for s in (-1, 0, 4)] + [
    ("conv_nobias", None, True), ("conv_bias", None, True), ("linear", None, True)]


@pytest.mark.parametrize(("kind", "strategy", "affine"), CASES)
def test_add_output_bias_shifts_eval_output_by_delta(kind: str, strategy: int | None, affine: bool) -> None:
    m = _shift_case(kind, strategy, affine).eval()
    x = torch.randn(4, 4) if kind == "linear" else torch.randn(4, 3, 6, 6)
    delta = torch.tensor([0.5, -1.0, 2.0, 0.0, -0.25])
    with torch.no_grad():
        y0 = m(x)
        add_output_bias(m, delta)
        y1 = m(x)
    shape = (1, -1) if kind == "linear" else (1, -1, 1, 1)
    torch.testing.assert_close(y1 - y0, delta.reshape(shape).expand_as(y0), rtol=0, atol=2e-5)
    assert all(isinstance(p, nn.Parameter) for p in m.parameters())


def test_add_output_bias_rejects_other_modules() -> None:
    with pytest.raises(TypeError):
        add_output_bias(nn.Conv2d(1, 2, 1), torch.zeros(2))


# ---------------------------------------------------------------- models


def tiny(seed: int = 0) -> nn.Module:
    """TinyNet with non-trivial BN statistics of the data distribution (as tests/ptq/test_calibrate.py's fp_model)."""
    torch.manual_seed(seed)
    model = TinyNet().train()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.3, 1.5)
                bn.bias.uniform_(-0.5, 1.0)
                bn.reset_running_stats()
                bn.momentum = None
        for _ in range(3):
            model(torch.randn(64, 1, 16, 16) * 2 + 0.5)
    return model.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def prepared(model: nn.Module, profile: str, w_bits: int = 4, x: torch.Tensor | None = None) -> fx.GraphModule:
    gm = prepare(model, load_profile(profile), w_bits=w_bits, a_bits=8, first_last_bits=None)
    calibrate(gm, images(128) if x is None else x, 64)
    return gm


def bias_grid(m: nn.Module) -> torch.Tensor:
    """The grid of a layer's integer bias per output channel: ``s_x s_w`` (times ``gamma / sigma`` where BN stays in
    float, strategy -1)."""
    w = m.folded_weight_bias()[0]
    step = m.bias_step(w).double()
    if isinstance(m, QuantConvBn2d) and m.strategy == -1:
        bn = m.bn
        step = step * (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).abs()
    return step


def layer_means(gm: fx.GraphModule, x: torch.Tensor, *, bypass: bool) -> dict[str, torch.Tensor]:
    """Per-output-channel mean of every weighted layer's output (float64) over ``x``, measured with forward hooks;
    ``bypass``: in the float model (all quantizers off, restored afterwards)."""
    acc: dict[str, list] = {}
    hooks = []
    for name, m in weighted_modules(gm):

        def hook(mod: nn.Module, i: tuple, o: torch.Tensor, name: str = name) -> None:
            c = o.shape[-1] if isinstance(mod, QuantLinear) else o.shape[1]
            flat = o.double().reshape(-1, c) if isinstance(mod, QuantLinear) else o.double().transpose(0, 1).reshape(
                c, -1).T
            a = acc.setdefault(name, [0.0, 0])
            a[0] = a[0] + flat.sum(0)
            a[1] += flat.shape[0]

        hooks.append(m.register_forward_hook(hook))
    state = {id(fq): fq.enabled for _, fq in quantizers(gm)}
    if bypass:
        set_mode(gm, bypass=True)
    with torch.no_grad():
        gm.eval()(x)
    for _, fq in quantizers(gm):
        fq.enabled = state[id(fq)]
    for h in hooks:
        h.remove()
    return {name: total / count for name, (total, count) in acc.items()}


# ---------------------------------------------------------------- empirical


@pytest.mark.parametrize("profile", ["tensorrt", "academic"])
def test_empirical_matches_float_layer_means(profile: str) -> None:
    model = tiny()
    x = images(256)
    gm = prepared(model, profile, x=x)
    ref = copy.deepcopy(gm)
    fp = layer_means(gm, x, bypass=True)
    q0 = layer_means(gm, x, bypass=False)
    gm.train()
    rep = correct_bias(gm, "empirical", x, batch_size=100)  # three batches, the last one smaller
    assert gm.training and all(fq.enabled for _, fq in quantizers(gm))  # mode and quantizer states restored
    assert rep == {"bias_correction": "empirical", "bias_corrected_layers": 10, "bias_correction_skipped": 0}
    q1 = layer_means(gm, x, bypass=False)
    first = "stem_conv"
    assert (q0[first] - fp[first]).abs().max() > 1e-3  # the quantized model was biased
    # every corrected layer's mean is the float one (the first: its correction is exactly the shift measured here;
    # the later ones: measured with the earlier ones corrected)
    # up to the integer bias: the target adds round(b / (s_x s_w)) s_x s_w, so half a step of that grid remains
    mods = dict(weighted_modules(gm))
    for name in fp:
        scale = fp[name].abs().max().item()
        err = (q1[name] - fp[name]).abs()
        assert bool((err <= 0.5 * bias_grid(mods[name]) + 2e-5 * max(scale, 1.0)).all()), name
    # on unseen images of the same distribution the logits' mean shift from the float model shrinks too
    xt = images(512, seed=7)
    with torch.no_grad():
        set_mode(ref, bypass=True)
        y_fp = ref.eval()(xt)
        set_mode(ref)
        shift_before = (ref(xt) - y_fp).mean(0).abs().mean().item()
        shift_after = (gm.eval()(xt) - y_fp).mean(0).abs().mean().item()
    assert shift_after < 0.5 * shift_before


def test_empirical_skips_layers_whose_weight_quantizer_is_off() -> None:
    gm = prepared(tiny(), "tensorrt")
    off = gm.get_submodule("b1_conv1")
    off.weight_fq.enabled = False
    b_before = off.folded_weight_bias()[1].detach().clone()
    rep = correct_bias(gm, "empirical", images(64), batch_size=64)
    assert rep["bias_corrected_layers"] == 9 and rep["bias_correction_skipped"] == 1
    assert not off.weight_fq.enabled
    torch.testing.assert_close(off.folded_weight_bias()[1].detach(), b_before, rtol=0, atol=0)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="analytic"):
        correct_bias(prepared(tiny(), "tensorrt"), "bogus", images(4))


# ---------------------------------------------------------------- analytic


def _phi(t: float) -> float:
    return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)


def _cdf(t: float) -> float:
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


def relu_mean_paper(beta: float, gamma: float) -> float:
    """White paper Sec. 3.3: E[ReLU(x)] = gamma N(-beta / gamma) + beta (1 - Phi(-beta / gamma))."""
    return gamma * _phi(-beta / gamma) + beta * (1 - _cdf(-beta / gamma))


@pytest.mark.parametrize(("lo", "hi"), [(0.0, math.inf), (0.0, 6.0), (-math.inf, math.inf), (-1.0, 1.0), (0.0, 0.5)])
def test_clipped_normal_mean_against_monte_carlo(lo: float, hi: float) -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0, 5.5])
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.1, 1.5, 1.0])
    z = mu.double().reshape(-1, 1) + sigma.double().reshape(-1, 1) * torch.randn(6, 400_000, generator=g).double()
    mc = z.clamp(lo, hi).mean(1)
    se = z.clamp(lo, hi).std(1) / math.sqrt(z.shape[1])
    got = clipped_normal_mean(mu, sigma, lo, hi)
    assert ((got - mc).abs() < 5 * se + 1e-6).all(), (got, mc)  # (se = 0 where almost all mass is clipped)
    if (lo, hi) == (0.0, math.inf):
        paper = [relu_mean_paper(b, s) for b, s in zip(mu.tolist(), sigma.tolist(), strict=True)]
        torch.testing.assert_close(got, torch.tensor(paper, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_clipped_normal_mean_per_channel_upper_and_zero_sigma() -> None:
    mu = torch.tensor([1.0, 1.0, 3.0, -1.0])
    sigma = torch.tensor([1.0, 1.0, 0.0, 0.0])
    upper = torch.tensor([0.5, 6.0, 2.0, 2.0])
    got = clipped_normal_mean(mu, sigma, 0.0, upper)
    assert 0 < got[0] < 0.5 and got[1] == pytest.approx(relu_mean_paper(1.0, 1.0), abs=1e-6)
    assert got[2].item() == 2.0 and got[3].item() == 0.0  # sigma 0: the clipped mean itself


class Net(nn.Module):
    """conv-bn-relu -> conv(3x3 or 1x1)-bn-relu6 -> global average pool -> flatten -> linear."""

    def __init__(self, k2: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, k2, padding=k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(self.flatten(self.pool(y)))


def net(k2: int = 3) -> nn.Module:
    torch.manual_seed(3)
    model = Net(k2).train()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.3, 1.5)
            bn.bias.uniform_(-0.5, 1.0)
            bn.momentum = None
        for _ in range(3):
            model(images(64, seed=5))
    return model.eval()


def _hand_fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    return conv.weight.detach() * (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)


def _relu_means(bn: nn.BatchNorm2d) -> torch.Tensor:
    means = [relu_mean_paper(b, g) for b, g in zip(bn.bias.tolist(), bn.weight.tolist(), strict=True)]
    return torch.tensor(means, dtype=torch.float64)


def _relu6_means(bn: nn.BatchNorm2d) -> torch.Tensor:
    # E[min(relu(x), 6)] = E[relu(x)] - E[relu(x - 6)] for x ~ N(beta, gamma^2)
    means = [relu_mean_paper(b, g) - relu_mean_paper(b - 6, g)
             for b, g in zip(bn.bias.tolist(), bn.weight.tolist(), strict=True)]
    return torch.tensor(means, dtype=torch.float64)


@pytest.mark.parametrize("profile", ["tensorrt", "academic", "snpe"])
def test_analytic_correction_is_minus_dw_times_clipped_normal_mean(profile: str) -> None:
    model = net()
    gm = prepared(model, profile)
    fc_bias = gm.get_submodule("fc").linear.bias.detach().clone()
    bn2_bias = gm.get_submodule("conv2").bn.bias.detach().clone()
    rep = correct_bias(gm, "analytic", images(4))
    # conv1 reads the network input: unknown distribution
    assert rep == {"bias_correction": "analytic", "bias_corrected_layers": 2, "bias_correction_skipped": 1}
    m2 = gm.get_submodule("conv2")
    strategy = m2.strategy
    w = _hand_fold(model.conv2, model.bn2) if strategy != -1 else model.conv2.weight.detach()
    dw = (m2.weight_fq(w) - w).double()
    assert dw.abs().max() > 0
    expected = -(dw.sum((2, 3)) @ _relu_means(model.bn1))
    if strategy == -1:  # BN kept in float scales the conv's output shift by gamma / sigma
        expected = expected * (model.bn2.weight.double() / torch.sqrt(model.bn2.running_var.double() + 1e-5))
    torch.testing.assert_close(m2.bn.bias.detach().double() - bn2_bias.double(), expected, rtol=1e-4, atol=1e-6)
    # fc reads flatten(pool(relu6(bn2))): E[x] per feature from bn2's original beta / gamma, clip [0, 6]
    fc = gm.get_submodule("fc")
    wf = model.fc.weight.detach()
    dwf = (fc.weight_fq(wf) - wf).double()
    torch.testing.assert_close(fc.linear.bias.detach().double() - fc_bias.double(),
                               -(dwf @ _relu6_means(model.bn2)), rtol=1e-4, atol=1e-6)


def test_analytic_removes_weight_induced_mean_shift_of_a_1x1_layer() -> None:
    """With only conv2's weights quantized, its output mean (1x1: no padding) moves back to the float one: conv1 is
    linear in Gaussian inputs, so BN1's output really is N(beta, gamma^2) per channel, and conv2's input is the float
    model's (a quantized conv1 would shift it, which the analytic term -dW E[x] does not model)."""
    model = net(k2=1)
    x = torch.randn(2048, 1, 16, 16, generator=torch.Generator().manual_seed(9)) * 2 + 0.5
    with torch.no_grad():  # statistics of exactly this distribution
        for bn in (model.bn1, model.bn2):
            bn.reset_running_stats()
        model.train()(x)
    model.eval()
    gm = prepared(model, "snpe", x=x[:256])
    set_mode(gm, bypass=True)
    gm.get_submodule("conv2").weight_fq.enabled = True
    fp = layer_means(gm, x, bypass=True)["conv2"]
    before = layer_means(gm, x, bypass=False)["conv2"] - fp
    correct_bias(gm, "analytic", x)
    after = layer_means(gm, x, bypass=False)["conv2"] - fp
    assert before.abs().max() > 0.02
    assert after.abs().max() < 0.02 * before.abs().max()


def test_analytic_on_equalised_tinynet_uses_folded_bn_and_channel_clip() -> None:
    model = tiny()
    eq, _ = equalize(model, absorb_bias=True)
    gm = prepared(eq, "snpe")
    mods = dict(gm.named_modules())
    dw = mods["ir1_dw"]
    assert isinstance(dw, QuantConv2d)
    pw = mods["ir1_pw"].conv
    upper = mods["ir1_act1"].upper.double()
    b0 = dw.conv.bias.detach().double().clone()
    rep = correct_bias(gm, "analytic", images(4))
    # corrected: b1_conv1 (stem ReLU), b1_conv2, ir1_dw, ir1_pwl, ir2_dw, ir2_pwl, fc (ir2_pwl -> pool, no act);
    # skipped: the stem (network input) and ir1_pw / ir2_pw (they read residual adds)
    assert (rep["bias_corrected_layers"], rep["bias_correction_skipped"]) == (7, 3)
    # ir1_dw reads ChannelClip(ir1_pw): E[x] of N(bn_beta, bn_gamma^2) clipped to [0, upper], by Monte Carlo
    g = torch.Generator().manual_seed(0)
    z = pw.bn_beta.double().reshape(-1, 1) + pw.bn_gamma.double().abs().reshape(-1, 1) * torch.randn(
        16, 200_000, generator=g, dtype=torch.float64)
    e = torch.minimum(z.clamp_min(0), upper.reshape(-1, 1)).mean(1)
    w = dw.conv.weight.detach()
    delta_w = (dw.weight_fq(w) - w).double()
    expected = -(delta_w.sum((2, 3)).reshape(-1) * e)  # depthwise: channel i reads input i only
    torch.testing.assert_close(dw.conv.bias.detach().double() - b0, expected, rtol=0,
                               atol=5e-3 * expected.abs().max().item())
