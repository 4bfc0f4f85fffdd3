"""PACT's activation quantizer (:class:`bench.algos.pact.PACTActQuantizer`) with fused CPU kernels (``fused=true``):
the clip, the fake quantization of the clipped value and the straight-through sum in one pass forward, the clip's
gradients in one pass backward, from the C++ extension of :mod:`bench.quant.fused_lsq`.

Bit for bit the eager ops: ``where(x >= hi, hi, where(x <= lo, lo, x))``, then
``torch.fake_quantize_per_tensor_affine`` (rounding half to even: its CPU arithmetic, NaN and -inf to the grid's lower
end included) or :func:`bench.quant.fake.fake_quantize`'s formula (the other roundings), then ``y + (q - y)``;
backward, autograd's gradients of the two ``where``s (``where(c, g, 0)`` / ``where(c, 0, g)``) with the clip's
gradients reduced by ``at::sum_to``, as autograd reduces the gradient of a broadcast input. Eight passes over the
activation and a scalar loop (PyTorch's CPU fake-quant kernel) forward, about six backward, become one each way.
Probed against the eager ops on first use, like the LSQ kernels, and off with them.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.quant import fused_lsq
from bench.quant.fake import fake_quantize

MODES = fused_lsq.ROUNDINGS  # the kernels' rounding modes, as LSQ's


def eager(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
          qmax: int, rounding: str) -> torch.Tensor:
    """PACT's clip, fake quantization and straight-through sum with eager ops (``s`` and ``z`` detached)."""
    y = torch.where(x >= hi, hi, torch.where(x <= lo, lo, x))  # no split gradients at the clip points
    q = fake_quantize(y.detach(), s, z.to(torch.int32), qmin, qmax, None, rounding)
    return y + (q - y).detach()


def _probe(rounding: str) -> bool:
    """Output and the gradients of x, lo and hi against :func:`eager` on ties, the clip points, the grid's ends,
    NaN, infinities and random values, signed and unsigned grids, zero points of 0 and not."""
    g = torch.Generator().manual_seed(2)
    for qmin, qmax, zp, shape in ((-8, 7, 0, [3, 5, 7, 11]), (0, 15, 0, [16 * 2048 + 5]), (0, 255, 37, [2, 3, 40])):
        for s_val in (0.25, 0.0371):
            s = torch.tensor(s_val)
            z = torch.tensor(zp)
            lo_v, hi_v = s * (qmin - zp), s * (qmax - zp)
            n = torch.Size(shape).numel()
            k = torch.arange(qmin - zp - 3, qmax - zp + 3.25, 0.25)
            x = (k.repeat(n // len(k) + 1)[:n] * s + (torch.rand(n, generator=g) < 0.2) * torch.randn(n, generator=g))
            x[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
            x = x.reshape(shape)
            grad = torch.randn(shape, generator=g)
            outs = []
            for fn in (eager, fused):
                xt = x.clone().requires_grad_(True)
                lo, hi = lo_v.reshape(1).clone().requires_grad_(True), hi_v.reshape(1).clone().requires_grad_(True)
                out = fn(xt, lo, hi, s, z, qmin, qmax, rounding)
                out.backward(grad)
                outs.append([out.detach(), xt.grad, lo.grad, hi.grad])
            for a, b in zip(*outs, strict=True):
                if not torch.equal(torch.nan_to_num(a, nan=7.5), torch.nan_to_num(b, nan=7.5)) or \
                        not torch.equal(torch.isnan(a), torch.isnan(b)) or \
                        not torch.equal(torch.signbit(a), torch.signbit(b)):
                    return False
    return True


class _PACT(torch.autograd.Function):
    """The fused forward / backward; ``lo``, ``hi`` broadcast 1-element tensors, ``s``, ``z`` detached."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: float, qmin: int,
        qmax: int, mode: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, lo, hi)
        # 1 / s as each eager route computes it: torch's fake quantization divides in float (1 / s in double, then
        # rounded to float, is the same number), fake.py takes torch.reciprocal
        inv = 1.0 / s.item() if mode == MODES["half_even"] else s.reciprocal().item()
        return fused_lsq.extension().pact_fwd(x, lo.item(), hi.item(), s.item(), z, inv, qmin, qmax, mode)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, lo, hi = ctx.saved_tensors
        need_lo, need_hi = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if grad.is_contiguous():
            gx, glo, ghi = fused_lsq.extension().pact_bwd(x, grad, lo.item(), hi.item(), list(lo.shape),
                                                          list(hi.shape), need_lo, need_hi)
        else:  # autograd's formulas with eager ops (their results follow grad's layout, their sums its order)
            c1, c2 = x >= hi, x <= lo
            inner = torch.where(c1, torch.zeros((), dtype=grad.dtype), grad)
            gx = torch.where(c2, torch.zeros((), dtype=grad.dtype), inner)
            glo = torch.where(c2, inner, torch.zeros((), dtype=grad.dtype)).sum_to_size(lo.shape) if need_lo else None
            ghi = torch.where(c1, grad, torch.zeros((), dtype=grad.dtype)).sum_to_size(hi.shape) if need_hi else None
        return gx, glo if need_lo else None, ghi if need_hi else None, None, None, None, None, None


def fused(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
          qmax: int, rounding: str) -> torch.Tensor:
    """:func:`eager`'s numbers from the fused kernels (for an input :func:`usable` accepted)."""
    return _PACT.apply(x, lo, hi, s.detach().float().reshape(()), float(z), qmin, qmax, MODES[rounding])


def usable(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rounding: str) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, 1-element clips."""
    if not (fused_lsq.usable(x) and x.is_contiguous() and rounding in MODES and lo.numel() == 1 and hi.numel() == 1
            and lo.dtype == hi.dtype == torch.float32):
        return False
    return fused_lsq.probed(("pact", rounding), lambda: _probe(rounding))
