"""LSQ fake quantization with a learned step (and zero point): the LSQ paper's gradients, in one autograd function.

Forward (identical to :func:`bench.quant.fake.fake_quantize` on the grid of the current step)::

    z_r = clamp(floor(z + 1/2), qmin, qmax)          (the integer zero point, rounded half up)
    v   = x * (1/s) + z_r
    x^  = s * (clamp(round(x * (1/s)) + z_r, qmin, qmax) - z_r)   (round: the spec's rounding mode, before the
                                                                  zero point is added, as targets requantize)

Backward, deciding "clipped" on ``v`` *before* rounding (Esser et al. 2020, Eq. 3; LSQ+ for the zero point)::

    dx^/dx = 1                        if qmin < v < qmax, else 0
    dx^/ds = round(v) - v             if qmin < v < qmax
             qmin - z_r  /  qmax - z_r  if v <= qmin  /  v >= qmax
    dx^/dz = 0 inside, -s clipped

with the gradients of ``s`` and ``z`` multiplied by ``grad_factor`` (LSQ's ``1 / sqrt(N Qp)``) and summed per tensor or
per channel. PyTorch's fused ``torch._fake_quantize_learnable_per_{tensor,channel}_affine`` (MQBench's kernel) decide
"clipped" *after* rounding: for ``v`` in ``(qmax, qmax + 1/2)`` (and the mirror band below ``qmin``) they return
``round(v) - v`` for ``ds`` and 1 for ``dx``, where the paper gives ``qmax - z`` and 0. ``kernel="torch"`` selects
that kernel (round half to even only).
"""

from __future__ import annotations

from typing import Any

import torch

from bench.quant import fused_lsq
from bench.quant.fixedpoint import round_float

KERNELS = ("paper", "torch")


def _shape(x: torch.Tensor, ch_axis: int | None) -> list[int]:
    shape = [1] * x.dim()
    if ch_axis is not None:
        shape[ch_axis] = -1
    return shape


class _LSQ(torch.autograd.Function):
    """Forward in four passes over ``x``; backward from the saved ``u = x / s`` and clamped codes, with the
    zero point's gradient computed only when it is learned. Bit for bit the formulas of the module docstring:
    ``clamp(round(u) + z, qmin, qmax) - z == clamp(round(u), qmin - z, qmax - z)`` (integers, exact in float32), and
    outside the grid the clamped code is ``qmin - z`` / ``qmax - z``, the gradient of the step there. Backward makes
    as few passes as those formulas allow: with a zero point of 0 (or none, ``z=None``), ``v = u + 0`` is ``u`` and is
    not computed (the comparisons see the same values), and the clipped elements are zeroed in place of multiplying by
    a float mask (the same numbers: ``g * 1 = g``; where ``g * 0`` would give ``-0`` this gives ``+0``, equal values;
    an inf or NaN gradient on a clipped element gives 0 here, NaN there, in a cell that has diverged either way). With
    ``fused=true`` a contiguous float32 CPU input goes through :mod:`bench.quant.fused_lsq` instead (backward too,
    given a contiguous gradient): one pass each way and one call from Python, the same numbers, the input saved for
    backward in place of ``u`` and the codes, so an input modified in place after the call makes backward raise
    autograd's in-place error."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, qmin: int, qmax: int,
        grad_factor: float, ch_axis: int | None, rounding: str,
    ) -> torch.Tensor:
        # the rounded zero point, a new tensor: z itself may change in place before backward (the quantizer clamps it)
        zr = None if z is None else torch.floor(z.detach() + 0.5).clamp(qmin, qmax)
        if s.dtype == torch.float32 and (z is None or z.dtype == torch.float32):  # the probe's dtypes
            key = fused_lsq.variant(x, rounding, z is not None, ctx.needs_input_grad[2], ch_axis)
            if key is not None:  # one pass; backward recomputes u and the code from x
                ctx.save_for_backward(x, s, zr)  # the kernels round z_r again: the same integers
                ctx.meta = (qmin, qmax, grad_factor, ch_axis, True, (key, rounding))
                return fused_lsq.forward(x, s, zr, qmin, qmax, rounding, ch_axis)
        sb, zb = _grid(x, s, zr, ch_axis)
        # a zero point of 0 (symmetric grids) spares backward the pass v = u + z; read on the CPU only, where it
        # costs no device synchronisation
        zero_z = zr is None or (not x.is_cuda and not bool(zr.any()))
        u = x * sb.reciprocal()
        code = round_float(u, rounding)
        code = code.clamp_(qmin - zb, qmax - zb)  # the integer code minus the zero point
        ctx.save_for_backward(u, code, s, zr)
        ctx.meta = (qmin, qmax, grad_factor, ch_axis, zero_z, None)
        return code * sb

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qmin, qmax, g, ch_axis, zero_z, fused = ctx.meta
        need_z = ctx.needs_input_grad[2]
        if fused is not None:
            x, s, zr = ctx.saved_tensors
            if grad.is_contiguous():
                grads = fused_lsq.backward(x, s, zr, qmin, qmax, grad, fused[1], need_z, ch_axis, g)
                return grads[0], grads[1], grads[2] if need_z else None, None, None, None, None, None
            # eager products and results follow grad's layout, and their sums its order: the eager route from here
            sb, zb = _grid(x, s, zr, ch_axis)
            zero_z = zr is None or not bool(zr.any())
            u = x * sb.reciprocal()
            code = round_float(u, fused[1]).clamp_(qmin - zb, qmax - zb)
        else:
            u, code, s, zr = ctx.saved_tensors
            sb, zb = _grid(u, s, zr, ch_axis)
        v = u if zero_z else u + zb
        clipped = torch.le(v, qmin).logical_or_(torch.ge(v, qmax))
        grad_x = grad.masked_fill(clipped, 0.0)
        dims = [d for d in range(u.dim()) if d != ch_axis]
        ds = torch.sub(code, u)  # round(u) - u inside; qmin - z / qmax - z clipped (in place: exact aliasing)
        torch.where(clipped, code, ds, out=ds)
        grad_s = ds.mul_(grad).sum(dim=dims).reshape(s.shape) * g
        grad_z = None
        if need_z:
            assert zr is not None  # a learned zero point
            dz = torch.where(clipped, -sb.expand_as(v), torch.zeros_like(v))
            grad_z = (grad * dz).sum(dim=dims).reshape(zr.shape) * g
        return grad_x, grad_s, grad_z, None, None, None, None, None


def _grid(x: torch.Tensor, s: torch.Tensor, zr: torch.Tensor | None,
          ch_axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The step and the rounded zero point ``z_r`` (0 where there is none) shaped to broadcast against ``x``."""
    shape = _shape(x, ch_axis)
    sb = s.reshape(shape) if ch_axis is not None else s.reshape(())
    if zr is None:
        return sb, torch.zeros((), dtype=s.dtype, device=s.device)
    return sb, zr.reshape(shape) if ch_axis is not None else zr.reshape(())


def lsq_fake_quantize(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, qmin: int, qmax: int, grad_factor: float,
    ch_axis: int | None = None, rounding: str = "half_even", kernel: str = "paper",
) -> torch.Tensor:
    """Fake-quantize ``x`` with a learnable step ``s`` and zero point ``z`` (1-element per tensor, or one per channel
    along ``ch_axis``; ``z=None``: a zero point of 0, not learned); gradients as the LSQ paper (``kernel="paper"``)
    or PyTorch's fused kernel (``"torch"``, round half to even only). See the module docstring."""
    if kernel == "torch":
        if rounding != "half_even":
            raise ValueError(f"kernel='torch' rounds half to even, not {rounding}")
        if z is None:
            z = torch.zeros_like(s.detach())
        if ch_axis is None:
            return torch._fake_quantize_learnable_per_tensor_affine(x, s.reshape(1), z.reshape(1), qmin, qmax,
                                                                     grad_factor)
        return torch._fake_quantize_learnable_per_channel_affine(x, s, z, ch_axis, qmin, qmax, grad_factor)
    if kernel != "paper":
        raise ValueError(f"unknown LSQ kernel {kernel!r}; accepted: {', '.join(KERNELS)}")
    if ch_axis is not None:
        ch_axis %= x.dim()  # backward's reduced dimensions are those != ch_axis
    return _LSQ.apply(x, s, z, qmin, qmax, grad_factor, ch_axis, rounding)
