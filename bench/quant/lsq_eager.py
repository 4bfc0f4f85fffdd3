"""LSQ's fake quantizer with eager ATen ops (:class:`EagerLSQ`): the reference the fused kernels
(:mod:`bench.quant.fused_lsq`) are probed against and the route wherever they do not run. The formulas are those of
:mod:`bench.quant.lsq`, which routes between the two."""

from __future__ import annotations

from typing import Any

import torch

from bench.quant.fixedpoint import round_float


def _shape(x: torch.Tensor, ch_axis: int | None) -> list[int]:
    shape = [1] * x.dim()
    if ch_axis is not None:
        shape[ch_axis] = -1
    return shape


class EagerLSQ(torch.autograd.Function):
    """Forward in four passes over ``x``; backward from the saved ``u = x / s`` and clamped codes, with the
    zero point's gradient computed only when it is learned. Bit for bit the formulas of the module docstring:
    ``clamp(round(u) + z, qmin, qmax) - z == clamp(round(u), qmin - z, qmax - z)`` (integers, exact in float32), and
    outside the grid the clamped code is ``qmin - z`` / ``qmax - z``, the gradient of the step there. Backward makes
    as few passes as those formulas allow: with a zero point of 0 (or none, ``z=None``), ``v = u + 0`` is ``u`` and is
    not computed (the comparisons see the same values), and the clipped elements are zeroed in place of multiplying by
    a float mask (the same numbers: ``g * 1 = g``; where ``g * 0`` would give ``-0`` this gives ``+0``, equal values;
    an inf or NaN gradient on a clipped element gives 0 here, NaN there, in a cell that has diverged either way). With
    ``fused=true`` a contiguous float32 CPU input goes through :func:`bench.quant.fused_lsq.apply` instead: one autograd
    node whose forward and backward run in C++, the same numbers (probed against this class)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, qmin: int, qmax: int,
        grad_factor: float, ch_axis: int | None, rounding: str,
    ) -> torch.Tensor:
        # the rounded zero point, a new tensor: z itself may change in place before backward (the quantizer clamps it)
        zr = None if z is None else torch.floor(z.detach() + 0.5).clamp(qmin, qmax)
        sb, zb = _grid(x, s, zr, ch_axis)
        # a zero point of 0 (symmetric grids) spares backward the pass v = u + z; read on the CPU only, where it
        # costs no device synchronisation
        zero_z = zr is None or (not x.is_cuda and not bool(zr.any()))
        u = x * sb.reciprocal()
        code = round_float(u, rounding)
        code = code.clamp_(qmin - zb, qmax - zb)  # the integer code minus the zero point
        ctx.save_for_backward(u, code, s, zr)
        ctx.meta = (qmin, qmax, grad_factor, ch_axis, zero_z)
        return code * sb

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qmin, qmax, g, ch_axis, zero_z = ctx.meta
        need_z = ctx.needs_input_grad[2]
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
