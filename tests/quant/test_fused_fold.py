"""Strategy 4's fold with the fused kernels (``bench.quant.fused_fold``, ``fused=true``): the layer's output and every
gradient bit for bit those of the eager ops, on signs, zero and tiny gammas (the floor), depthwise and plain convs, a
non-contiguous gradient (eager route); the probes; a NaN gamma as eager gives it."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from bench.quant import fused_fold, fused_lsq
from bench.quant.qmodules import QuantConvBn2d
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]

INT4_PC = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)


def _layer(groups: int, gammas: torch.Tensor, seed: int) -> QuantConvBn2d:
    torch.manual_seed(seed)
    c = gammas.numel()
    conv = nn.Conv2d(c if groups > 1 else 3, c, 3, padding=1, groups=groups, bias=False)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 2.0)
        bn.weight.copy_(gammas)
        bn.bias.normal_(0, 0.5)
    fq = FakeQuantize(INT4_PC, "weight")
    w = conv.weight.detach()
    s = (w.abs().amax(dim=(1, 2, 3)) / 7).clamp_min(1e-3)
    fq.set_qparams(s, torch.zeros_like(s, dtype=torch.int32), signed=True)
    return QuantConvBn2d(conv, bn, 4, fq).train()


def _step(m: QuantConvBn2d, x: torch.Tensor, up: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    fused_lsq.set_enabled(fused)
    x = x.clone().requires_grad_(True)
    out = m(x)
    (out * up).sum().backward()
    return [out.detach(), x.grad, m.conv.weight.grad, m.bn.weight.grad, m.bn.bias.grad, m.bn.running_var.clone()]


GAMMAS = {
    "signs": torch.tensor([1.0, -1.0, 0.5, -0.25, 2.0, 1.5]),
    "zero and tiny": torch.tensor([0.0, -0.0, 1e-7, -1e-7, 3e-6, 1.0]),  # below the floor: the floor's zero gradient
}


@pytest.mark.parametrize("groups", [1, 6])
@pytest.mark.parametrize("gammas", list(GAMMAS), ids=str)
@pytest.mark.parametrize("contiguous_grad", [True, False])
@pytest.mark.parametrize("hw", [(2, 2), (7, 9), (9, 10)])  # the division's backward: short runs (< 64) and long ones
def test_fused_fold_is_bit_identical_to_eager(fresh, groups, gammas, contiguous_grad, hw):
    m = _layer(groups, GAMMAS[gammas], seed=groups)
    h, w = hw
    x = torch.randn(4, m.conv.in_channels, h, w)
    up = torch.randn(w, h, 6, 4).permute(3, 2, 1, 0) if not contiguous_grad else torch.randn(4, 6, h, w)
    eager = _step(copy.deepcopy(m), x, up, fused=False)
    fused = _step(copy.deepcopy(m), x, up, fused=True)
    assert ("fold_factor",) in fused_lsq._checked and fused_lsq.enabled()  # the fused kernels ran
    for a, b in zip(eager, fused, strict=True):
        assert torch.equal(a, b)


def test_a_first_use_under_no_grad_probes_and_keeps_the_kernels_on(fresh):
    # BN re-calibration computes pre_bn without gradients: the factor's probe (which compares gradients) must run
    fused_lsq.set_enabled(True)
    m = _layer(1, GAMMAS["signs"], seed=5)
    with torch.no_grad():
        m(torch.randn(4, 3, 5, 5))
    assert ("fold_factor",) in fused_lsq._checked and fused_lsq.enabled()


def test_the_fused_division_gradient_ran(fresh, monkeypatch):
    calls = []
    real = fused_fold.div_channels_grad
    monkeypatch.setattr(fused_fold, "div_channels_grad", lambda *a: calls.append(1) or real(*a))
    m = _layer(1, GAMMAS["signs"], seed=3)
    m._bn().register_forward_hook(lambda *a: None)  # a BN with hooks: the division and BN stay two nodes (fused_divbn)
    _step(m, torch.randn(4, 3, 5, 5), torch.randn(4, 6, 5, 5), fused=True)
    assert calls and ("div_channels",) in fused_lsq._checked


def test_a_nan_gamma_gives_the_eager_nans(fresh):
    m = _layer(1, torch.tensor([float("nan"), 1.0, -1.0, 0.5, 2.0, 1.0]), seed=4)
    x, up = torch.randn(4, 3, 5, 5), torch.randn(4, 6, 5, 5)
    eager = _step(copy.deepcopy(m), x, up, fused=False)
    fused = _step(copy.deepcopy(m), x, up, fused=True)
    assert torch.isnan(fused[0]).any()
    for a, b in zip(eager, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_probes_agree_and_a_disagreeing_one_turns_the_kernels_off(fresh, monkeypatch, caplog):
    fused_lsq.set_enabled(True)
    assert fused_fold._probe_factor() and fused_fold._probe_div()
    monkeypatch.setattr(fused_fold, "_probe_factor", lambda: False)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert fused_fold.fold_factor(torch.ones(3), torch.ones(3), 1e-5, 1e-5) is None
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_the_probes_leave_the_global_random_state_alone(fresh):
    # a probe runs inside a cell's first step: drawing from torch's global generator would change the cell's numbers
    from bench.quant import fused_apot, fused_dsq, fused_pact, fused_qil

    fused_lsq.set_enabled(True)
    state = torch.get_rng_state()
    assert fused_fold._probe_factor() and fused_fold._probe_div() and fused_pact.probe_pact("half_even")
    assert fused_pact.probe_clip("half_up") and fused_dsq.probe("half_even")
    assert fused_apot.probe() and fused_qil.probe()
    assert fused_lsq._probe(("half_even", True, True, True)) and fused_lsq._probe(("half_up", False, False, False))
    assert torch.equal(torch.get_rng_state(), state)


def test_the_probe_catches_a_non_strict_floor(fresh, monkeypatch):
    # torch's clamp_min backward passes the gradient only strictly above the bound: a kernel with >= must fail
    real = fused_lsq.extension()

    class AtBound:
        fold_factor = real.fold_factor

        @staticmethod
        def fold_factor_grad(grad, f0, sigma, floor):
            out = real.fold_factor_grad(grad, f0, sigma, floor)
            at = f0.abs() == torch.tensor(floor)
            return torch.where(at, grad * torch.sign(f0) / sigma, out)

    monkeypatch.setattr(fused_lsq, "extension", lambda: AtBound)
    assert not fused_fold._probe_factor()
