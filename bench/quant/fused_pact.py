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

DoReFa's activation quantizer (:class:`bench.algos.dorefa.DoReFaActQuantizer`: the same clip at fixed grid ends, then
the fake quantization of the clipped value itself, with its own gradient) runs through the same forward kernel and a
backward kernel of its own (:func:`clip_fused`, :func:`clip_eager`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq
from bench.quant.fake import fake_quantize

MODES = fused_lsq.ROUNDINGS  # the kernels' rounding modes, as LSQ's


def eager(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
          qmax: int, rounding: str) -> torch.Tensor:
    """PACT's clip, fake quantization and straight-through sum with eager ops (``s`` and ``z`` detached)."""
    y = torch.where(x >= hi, hi, torch.where(x <= lo, lo, x))  # no split gradients at the clip points
    q = fake_quantize(y.detach(), s, z.to(torch.int32), qmin, qmax, None, rounding)
    return y + (q - y).detach()


def clip_eager(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
               qmax: int, rounding: str) -> torch.Tensor:
    """DoReFa's activation quantizer with eager ops: the clip at the grid's ends, then the fake quantization of the
    clipped value (its gradient: the fake quantization's, through the clip)."""
    y = torch.where(x >= hi, hi, torch.where(x <= lo, lo, x))
    return fake_quantize(y, s, z.to(torch.int32), qmin, qmax, None, rounding)


def _probe(rounding: str, fns: tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]],
           clip_grads: bool) -> bool:
    """Output and gradients (of x; of lo and hi with ``clip_grads``) of the fused ``fns[1]`` against the eager
    ``fns[0]`` on ties, the clip points, the grid's ends, NaN, infinities and random values, signed and unsigned
    grids, zero points of 0 and not; without ``clip_grads`` (fixed clips) also the output without gradients."""
    g = torch.Generator().manual_seed(2)
    for qmin, qmax, zp, shape in ((-8, 7, 0, [3, 5, 7, 11]), (0, 15, 0, [16 * 2048 + 5]), (0, 255, 37, [2, 3, 40])):
        for s_val in (0.25, 0.0371, 0.0117647):
            s = torch.tensor([s_val])
            z = torch.tensor([zp], dtype=torch.int32)
            lo_v, hi_v = s * (qmin - z.float()), s * (qmax - z.float())  # as LearnableQuantizer.calibrated_range
            n = torch.Size(shape).numel()
            k = torch.arange(qmin - zp - 3, qmax - zp + 3.25, 0.25)
            x = (k.repeat(n // len(k) + 1)[:n] * s + (torch.rand(n, generator=g) < 0.2) * torch.randn(n, generator=g))
            x[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
            x = x.reshape(shape)
            grad = torch.randn(shape, generator=g)
            grad.view(-1)[6:12] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0])
            tensors = [x.requires_grad_(True), lo_v.requires_grad_(clip_grads), hi_v.requires_grad_(clip_grads)]
            if not fused_lsq.agree(*fns, tensors, (s, z, qmin, qmax, rounding), grad, plain=not clip_grads):
                return False
    return True


class _PACT(torch.autograd.Function):
    """The fused forward / backward; ``lo``, ``hi`` broadcast 1-element tensors, ``s``, ``z`` detached."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: float, qmin: int,
        qmax: int, rounding: str,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, lo, hi)
        ctx.args = (s, z, qmin, qmax, rounding)
        mode = MODES[rounding]
        return fused_lsq.extension().pact_fwd(x, lo.item(), hi.item(), s.item(), z, _inv(s, mode), qmin, qmax, mode, 0)

    @staticmethod
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, lo, hi = ctx.saved_tensors
        need_lo, need_hi = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if grad.is_contiguous():
            gx, glo, ghi = fused_lsq.extension().pact_bwd(x, grad, lo.item(), hi.item(), list(lo.shape),
                                                          list(hi.shape), need_lo, need_hi)
        else:  # autograd's own gradients (their results follow grad's layout, their sums its order)
            s, z, qmin, qmax, rounding = ctx.args
            gx, glo, ghi = fused_lsq.eager_grads(
                lambda x_, lo_, hi_: eager(x_, lo_, hi_, s, torch.tensor(z), qmin, qmax, rounding), [x, lo, hi],
                [True, need_lo, need_hi], grad)
        return gx, glo if need_lo else None, ghi if need_hi else None, None, None, None, None, None


def fused(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
          qmax: int, rounding: str) -> torch.Tensor:
    """:func:`eager`'s numbers from the fused kernels (for an input :func:`usable` accepted)."""
    return _PACT.apply(x, lo, hi, s.detach().float().reshape(()), float(z), qmin, qmax, rounding)


def _takes(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rounding: str) -> bool:
    # what the kernels take: a contiguous float32 CPU input (fused kernels on), 1-element float32 clips
    return (fused_lsq.usable(x) and x.is_contiguous() and rounding in MODES and lo.numel() == 1 and hi.numel() == 1
            and lo.dtype == hi.dtype == torch.float32)


def usable(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rounding: str) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, 1-element clips."""
    if not _takes(x, lo, hi, rounding):
        return False
    return fused_lsq.probed(("pact", rounding), lambda: probe_pact(rounding))


def probe_pact(rounding: str) -> bool:
    """PACT's kernels against :func:`eager` (gradients of the clips included)."""
    return _probe(rounding, (eager, fused), True)


def probe_clip(rounding: str) -> bool:
    """DoReFa's activation kernels against :func:`clip_eager` (with and without gradients)."""
    return _probe(rounding, (clip_eager, clip_fused), False)


def _inv(s: torch.Tensor, mode: int) -> float:
    # 1 / s as each eager route computes it: torch's fake quantization divides in float (1 / s in double, then rounded
    # to float, is the same number), fake.py takes torch.reciprocal
    return 1.0 / s.item() if mode == MODES["half_even"] else s.reciprocal().item()


class _ClipQ(torch.autograd.Function):
    """DoReFa's activation quantizer with a gradient: the fused forward / backward (``lo``, ``hi`` fixed)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, lo: float, hi: float, s: torch.Tensor, z: float, qmin: int, qmax: int,
        rounding: str,
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.args = (lo, hi, s, z, qmin, qmax, rounding)
        mode = MODES[rounding]
        # torch's fake quantization gives the quantized value; fake.py's gives y + (q - y) inside the grid when y
        # needs a gradient
        kind = 2 if mode == MODES["half_even"] else 1
        return fused_lsq.extension().pact_fwd(x, lo, hi, s.item(), z, _inv(s, mode), qmin, qmax, mode, kind)

    @staticmethod
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        lo, hi, s, z, qmin, qmax, rounding = ctx.args
        if not grad.is_contiguous():  # autograd's own gradient: its results follow grad's layout
            lo_t, hi_t, z_t = torch.tensor([lo]), torch.tensor([hi]), torch.tensor([z])
            (gx,) = fused_lsq.eager_grads(lambda x_: clip_eager(x_, lo_t, hi_t, s, z_t, qmin, qmax, rounding), [x],
                                          [True], grad)
        else:
            mode = MODES[rounding]
            gx = fused_lsq.extension().clipq_bwd(x, grad, lo, hi, z, _inv(s, mode), qmin, qmax, mode)
        return gx, None, None, None, None, None, None, None


def clip_fused(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int,
               qmax: int, rounding: str) -> torch.Tensor:
    """:func:`clip_eager`'s numbers (``lo``, ``hi`` without gradients) from the fused kernels, for an input
    :func:`clip_usable` accepted."""
    mode = MODES[rounding]
    sf, zf = s.detach().float().reshape(()), float(z.reshape(()))
    if torch.is_grad_enabled() and x.requires_grad:
        return _ClipQ.apply(x, lo.item(), hi.item(), sf, zf, qmin, qmax, rounding)
    return fused_lsq.extension().pact_fwd(x.detach(), lo.item(), hi.item(), sf.item(), zf, _inv(sf, mode), qmin,
                                          qmax, mode, 2)


def clip_usable(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rounding: str) -> bool:
    """Whether the fused kernels take this call of :func:`clip_fused`: as :func:`usable`, clips without gradients."""
    if lo.requires_grad or hi.requires_grad or not _takes(x, lo, hi, rounding):
        return False
    return fused_lsq.probed(("clipq", rounding), lambda: probe_clip(rounding))
