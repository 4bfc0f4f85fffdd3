"""QIL's transformer and discretiser with the fused kernels (``bench.quant.fused_qil``, ``fused=true``): output (with
and without gradients) and the gradients of the input, ``c - d`` and ``2 d`` bit for bit the eager ops', signed and
unsigned, 4 and 8 bits, the interval's ends, the rounding's ties, NaN and infinities; a non-contiguous gradient (eager
route); the probe. The eager formula itself is tested against QIL's rules in tests/algos."""

from __future__ import annotations

import logging

import pytest
import torch

from bench.quant import fused_lsq, fused_qil
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]


@pytest.mark.parametrize("qmax", [7, 15, 255])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("contiguous_grad", [True, False])
def test_fused_qil_is_bit_identical_to_eager(fresh, qmax, signed, contiguous_grad):
    gen = torch.Generator().manual_seed(qmax)
    c, d = 0.9, 0.55
    cm, w = torch.tensor([c - d]), torch.tensor([2 * d])
    x = torch.randn(6, 5, 7, 9, generator=gen)
    ties = (torch.arange(0, 2 * qmax + 1) / (2 * qmax)) * w + cm  # t * qmax on k / 2: the rounding's ties, t's ends
    x.view(-1)[:len(ties)] = ties
    x.view(-1)[len(ties):2 * len(ties)] = -ties
    x[5, 4, 6, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    grad = torch.randn(9, 7, 5, 6, generator=gen).permute(3, 2, 1, 0) if not contiguous_grad else \
        torch.randn(6, 5, 7, 9, generator=gen)
    fused_lsq.set_enabled(True)
    assert fused_qil.usable(x, cm, w)  # probed, agreed
    # output with gradients, the gradients of x, c - d and 2 d, output without gradients
    tensors = [x.requires_grad_(True), cm.requires_grad_(True), w.requires_grad_(True)]
    want, got = (fused_lsq.outputs_and_grads(f, tensors, (qmax, signed), grad)
                 for f in (fused_qil.eager, fused_qil.fused))
    assert fused_lsq.enabled() and ("qil",) in fused_lsq._checked
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))


def test_the_fused_output_is_qils_formula(fresh):
    # independently of the eager code: pruned below c - d, clipped above c + d, qmax uniform levels of 2 d between
    c, d, qmax = 1.0, 0.5, 4
    x = torch.tensor([0.2, 0.5, 0.6, 0.7, 1.0, 1.2, 1.5, 2.0, -0.7, -2.0])
    fused_lsq.set_enabled(True)
    assert fused_qil.usable(x, torch.tensor([c - d]), torch.tensor([2 * d]))
    got = fused_qil.fused(x, torch.tensor([c - d]), torch.tensor([2 * d]), qmax, True)
    want = torch.tensor([0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, -0.25, -1.0])  # (|x| - 0.5) / 1 on quarters
    assert torch.equal(got, want)


def test_a_wrong_kernel_is_turned_off(fresh, monkeypatch, caplog):
    real = fused_lsq.extension()

    class SignedZeroGradient:  # the real kernels, but x's gradient without sign's zero added (a -0 stays -0)
        qil_fwd = real.qil_fwd

        @staticmethod
        def qil_bwd(x, grad, cm, w, qmax, is_signed, cm_shape, w_shape, need_cm, need_w):
            gx, gc, gw = real.qil_bwd(x, grad, cm, w, qmax, is_signed, cm_shape, w_shape, need_cm, need_w)
            flip = (gx == 0) & (grad < 0) & (x > 0) if is_signed else torch.zeros_like(gx, dtype=torch.bool)
            return gx.where(~flip, -gx), gc, gw

    monkeypatch.setattr(fused_lsq, "extension", lambda: SignedZeroGradient)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert not fused_qil.usable(torch.randn(4, 3), torch.tensor([0.1]), torch.tensor([1.0]))
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_what_the_fused_kernels_do_not_take(fresh):
    fused_lsq.set_enabled(True)
    cm, w = torch.tensor([0.1]), torch.tensor([1.0])
    assert not fused_qil.usable(torch.randn(4, 6).t(), cm, w)  # non-contiguous
    assert not fused_qil.usable(torch.randn(4, 6), torch.zeros(4, 1), w)  # an interval per row
    assert not fused_qil.usable(torch.randn(4, 6, dtype=torch.float64), cm, w)
    assert fused_qil.usable(torch.randn(4, 6), cm, w)
    fused_lsq.set_enabled(False)
    assert not fused_qil.usable(torch.randn(4, 6), cm, w)
