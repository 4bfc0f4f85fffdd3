"""PACT's and DoReFa's activation quantizers with the fused kernels (``bench.quant.fused_pact``, ``fused=true``):
output and the gradients of the input (and of PACT's clips) bit for bit the eager ops', for every rounding, signed /
unsigned / asymmetric grids, ties, the clip points, NaN and infinities; a non-contiguous gradient (eager route); with
and without gradients; the probe."""

from __future__ import annotations

import logging

import pytest
import torch

from bench.quant import fused_lsq, fused_pact
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]


def _run(fn, x, alpha, beta, qmin, qmax, rounding, grad):
    # the quantizer's grid as PACTActQuantizer._grid computes it: clips differentiable in alpha (and beta)
    xt, at = x.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
    bt = None if beta is None else beta.clone().requires_grad_(True)
    if bt is None:
        s = at / qmax
        lo, hi, z = s * qmin, s * qmax, torch.zeros_like(s)
    else:
        b = torch.minimum(bt, torch.zeros_like(bt))
        s = (at - b) / (qmax - qmin)
        z = torch.clamp(qmin - torch.round(b.detach() / s.detach()), qmin, qmax)
        lo, hi = b, b + s * (qmax - qmin)
    out = fn(xt, lo, hi, s.detach(), z.detach(), qmin, qmax, rounding)
    out.backward(grad)
    return [out.detach(), xt.grad, at.grad] + ([] if bt is None else [bt.grad])


GRIDS = [(-8, 7, None), (0, 15, None), (0, 255, torch.tensor([-0.7]))]


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
@pytest.mark.parametrize("grid", GRIDS, ids=["signed", "unsigned", "asymmetric"])
@pytest.mark.parametrize("contiguous_grad", [True, False])
def test_fused_pact_is_bit_identical_to_eager(fresh, rounding, grid, contiguous_grad):
    qmin, qmax, beta = grid
    gen = torch.Generator().manual_seed(qmax)
    alpha = torch.tensor([1.9])
    x = torch.randn(8, 6, 9, 11, generator=gen) * 2
    x[0, 0, 0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    x[1] = (torch.arange(6 * 9 * 11).reshape(6, 9, 11) % 40 - 20) * (1.9 / qmax) / 2  # ties and the clip points
    grad = torch.randn(11, 9, 6, 8, generator=gen).permute(3, 2, 1, 0) if not contiguous_grad else \
        torch.randn(8, 6, 9, 11, generator=gen)
    fused_lsq.set_enabled(True)
    assert fused_pact.usable(x, alpha, alpha, rounding)  # probed, agreed
    want = _run(fused_pact.eager, x, alpha, beta, qmin, qmax, rounding, grad)
    got = _run(fused_pact.fused, x, alpha, beta, qmin, qmax, rounding, grad)
    assert fused_lsq.enabled() and ("pact", rounding) in fused_lsq._checked
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))


def test_a_nan_input_follows_torchs_fake_quant(fresh):
    # torch's CPU fake-quant kernel sends NaN to the grid's lower end (fmax / fmin); the other roundings keep NaN
    x, lo, hi, s, z = torch.tensor([float("nan")]), torch.tensor([-0.8]), torch.tensor([0.7]), torch.tensor(0.1), \
        torch.tensor(0.0)
    fused_lsq.set_enabled(True)
    assert fused_pact.usable(x, lo, hi, "half_even")
    assert fused_pact.fused(x, lo, hi, s, z, -8, 7, "half_even").isnan().all()  # y + (q - y) with y = NaN
    assert fused_pact.eager(x, lo, hi, s, z, -8, 7, "half_even").isnan().all()


def test_a_first_use_under_no_grad_probes_and_keeps_the_kernels_on(fresh):
    # evaluation runs without gradients: the probe (which compares gradients) must still run, and agree
    fused_lsq.set_enabled(True)
    x, one = torch.randn(4, 3, 5, 5), torch.tensor([1.0])
    with torch.no_grad():
        assert fused_pact.usable(x, -one, one, "half_even")
        out = fused_pact.fused(x, -one, one, torch.tensor(0.125), torch.tensor(0.0), -8, 7, "half_even")
    assert fused_lsq.enabled() and torch.equal(out, fused_pact.eager(x, -one, one, torch.tensor(0.125),
                                                                      torch.tensor(0.0), -8, 7, "half_even"))


def test_the_probe_turns_a_wrong_kernel_off(fresh, monkeypatch, caplog):
    real = fused_lsq.extension()

    class NoSignedZero:  # the real kernels, but a code of 0 times s left as -0 where torch gives +0
        pact_bwd = real.pact_bwd

        @staticmethod
        def pact_fwd(x, lo, hi, s, z, inv, qmin, qmax, mode, kind):
            out = real.pact_fwd(x, lo, hi, s, z, inv, qmin, qmax, mode, kind)
            return torch.where(out == 0, -out.abs(), out)

    monkeypatch.setattr(fused_lsq, "extension", lambda: NoSignedZero)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert not fused_pact.usable(torch.randn(4, 3), torch.tensor([-1.0]), torch.tensor([1.0]), "half_even")
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_what_the_fused_kernels_do_not_take(fresh):
    fused_lsq.set_enabled(True)
    one = torch.tensor([1.0])
    assert not fused_pact.usable(torch.randn(4, 6).t(), -one, one, "half_even")  # non-contiguous
    assert not fused_pact.usable(torch.randn(4, 6, dtype=torch.float64), -one, one, "half_even")
    assert not fused_pact.usable(torch.randn(4, 6), -torch.ones(6), torch.ones(6), "half_even")  # per channel
    fused_lsq.set_enabled(False)
    assert not fused_pact.usable(torch.randn(4, 6), -one, one, "half_even")


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
@pytest.mark.parametrize("grid", [(-8, 7, 0, -1.0, 1.0), (0, 15, 0, 0.0, 1.0), (0, 255, 128, -1.0, 1.0)],
                         ids=["signed", "unsigned", "asymmetric"])
@pytest.mark.parametrize("contiguous_grad", [True, False])
def test_fused_dorefa_activations_are_bit_identical_to_eager(fresh, rounding, grid, contiguous_grad):
    # DoReFa's grid: the fixed range [0, 1] or [-1, 1] (qparams_from_range), clipped at the grid's ends as
    # LearnableQuantizer.calibrated_range computes them
    qmin, qmax, zp, lo_r, hi_r = grid
    s = torch.tensor([(hi_r - lo_r) / (qmax - qmin) if zp else max(-lo_r, hi_r) / qmax])
    z = torch.tensor([zp], dtype=torch.int32)
    lo, hi = s * (qmin - z.float()), s * (qmax - z.float())
    gen = torch.Generator().manual_seed(qmax)
    x = torch.randn(8, 6, 9, 11, generator=gen)
    x[0, 0, 0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    x[1] = (torch.arange(6 * 9 * 11).reshape(6, 9, 11) % 40 - 20 + zp) * s / 2  # ties, the clip points
    grad = torch.randn(11, 9, 6, 8, generator=gen).permute(3, 2, 1, 0) if not contiguous_grad else \
        torch.randn(8, 6, 9, 11, generator=gen)
    grad[0, 0, 0, :3] = torch.tensor([-1.0, float("nan"), -float("inf")])  # on NaN x: 0 * grad keeps the signs
    fused_lsq.set_enabled(True)
    assert fused_pact.clip_usable(x, lo, hi, rounding)  # probed, agreed
    # output with gradients, the input's gradient, output without gradients (an evaluation: fake.py's other roundings
    # give q itself there, not y + (q - y))
    want, got = (fused_lsq.outputs_and_grads(f, [x.requires_grad_(True)], (lo, hi, s, z, qmin, qmax, rounding), grad)
                 for f in (fused_pact.clip_eager, fused_pact.clip_fused))
    assert fused_lsq.enabled() and ("clipq", rounding) in fused_lsq._checked
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))


def test_dorefas_gradient_on_nan_is_torchs_mask(fresh):
    # torch's fake quantization multiplies the gradient by its mask: NaN's code is outside the grid, so grad * 0.0
    # (-0 for a negative gradient, NaN for an infinite one); written out here, not taken from the eager ops
    x = torch.tensor([float("nan")] * 3 + [0.3])
    grad = torch.tensor([-2.0, float("inf"), 2.0, -1.5])
    lo, hi, s, z = torch.tensor([-0.8]), torch.tensor([0.7]), torch.tensor([0.1]), torch.tensor([0], dtype=torch.int32)
    fused_lsq.set_enabled(True)
    assert fused_pact.clip_usable(x, lo, hi, "half_even")
    xt = x.clone().requires_grad_(True)
    out = fused_pact.clip_fused(xt, lo, hi, s, z, -8, 7, "half_even")
    out.backward(grad)
    assert torch.equal(out[:3], torch.tensor([-0.8] * 3)) and out[3].item() == pytest.approx(0.3)
    assert xt.grad[0].item() == 0.0 and torch.signbit(xt.grad[0]) and torch.isnan(xt.grad[1])
    assert xt.grad[2].item() == 0.0 and not torch.signbit(xt.grad[2]) and xt.grad[3].item() == -1.5


def test_a_wrong_dorefa_gradient_turns_the_kernels_off(fresh, monkeypatch, caplog):
    real = fused_lsq.extension()

    class NoMask:  # the real kernels, but the gradient passed where torch's fake quantization masks it (NaN)
        pact_fwd = real.pact_fwd

        @staticmethod
        def clipq_bwd(x, grad, lo, hi, z, inv, qmin, qmax, mode):
            out = real.clipq_bwd(x, grad, lo, hi, z, inv, qmin, qmax, mode)
            return torch.where(x.isnan(), grad, out)

    monkeypatch.setattr(fused_lsq, "extension", lambda: NoMask)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert not fused_pact.clip_usable(torch.randn(4, 3), torch.tensor([-1.0]), torch.tensor([1.0]), "half_even")
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_learned_clips_do_not_go_through_dorefas_kernels(fresh):
    fused_lsq.set_enabled(True)
    one = torch.tensor([1.0])
    assert not fused_pact.clip_usable(torch.randn(4, 6), -one, one.clone().requires_grad_(True), "half_even")
    assert not fused_pact.clip_usable(torch.randn(4, 6).t(), -one, one, "half_even")  # non-contiguous
    assert fused_pact.clip_usable(torch.randn(4, 6), -one, one, "half_even")
