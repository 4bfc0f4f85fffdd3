"""DSQ's fake quantization (:func:`bench.algos.dsq.dsq_fake_quantize`): the eager formula (:func:`eager`) and fused
CPU kernels of it (``fused=true``, :func:`fused`), from the C++ extension of :mod:`bench.quant.fused_lsq`.

Bit for bit the eager ops: the elementwise steps around the soft step's ``tanh`` (``x / s``, the clamp, ``floor``, the
tanh's argument; the soft and the hard value, the straight-through sum, the zero point and the scale) run in two passes
forward instead of about eighteen, and the gradient's (``(g s) cf``; clamp's mask, ``k``, ``1 / s``) in two passes
backward instead of about ten, each element through the eager ops' IEEE operations in their order. The ``tanh`` itself
and its backward stay ATen's (``at::tanh``, ``at::tanh_backward``, called from C++ on tensors of the eager ones' shape
and layout): torch's vectorized tanh is not correctly rounded, so no other tanh gives its numbers. Probed against the
eager ops on first use, like the other fused kernels, and off with them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq
from bench.quant.fixedpoint import round_float

MODES = fused_lsq.ROUNDINGS


def soft_step(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """DSQ's tanh soft step ``phi(u)`` (its derivative is DSQ's gradient of rounding)."""
    tanh_scale = 1.0 / (1.0 - alpha)
    k = math.log((tanh_scale + 1.0) / (tanh_scale - 1.0))
    fl = torch.floor(u)
    return fl + 0.5 * tanh_scale * torch.tanh(k * (u - fl - 0.5)) + 0.5


def eager(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, alpha: float,
    rounding: str = "half_even",
) -> torch.Tensor:
    """DSQ's fake quantization with eager ops: the exact quantization forward (rounded as ``rounding`` says, before
    the zero point is added), the soft step's derivative backward (0 where clamped)."""
    u0 = x * scale.reciprocal()
    u = torch.clamp(u0 + zero_point, qmin, qmax)
    hard = torch.clamp(round_float(u0.detach(), rounding) + zero_point, qmin, qmax)
    soft = soft_step(u, alpha)
    return (soft + (hard - soft).detach() - zero_point) * scale


def constants(alpha: float) -> tuple[float, float]:
    """DSQ's ``k = log((1 + 1/(1-a)) / (1/(1-a) - 1))`` and the soft step's factor ``0.5 / (1 - a)`` (Python floats,
    as the eager formula computes them)."""
    tanh_scale = 1.0 / (1.0 - alpha)
    return math.log((tanh_scale + 1.0) / (tanh_scale - 1.0)), 0.5 * tanh_scale


def _axis(x: torch.Tensor, scale: torch.Tensor) -> int | None:
    """The channel axis of a broadcast-shaped ``scale`` (-1 per tensor); ``None`` for a shape the kernels do not take
    (more than one axis, or one that does not match ``x``)."""
    if scale.numel() == 1:
        return -1
    if scale.dim() != x.dim():
        return None
    axes = [d for d, n in enumerate(scale.shape) if n != 1]
    return axes[0] if len(axes) == 1 and scale.shape[axes[0]] == x.shape[axes[0]] else None


class _DSQ(torch.autograd.Function):
    """The fused forward / backward (the gradient of ``x`` only: DSQ's scale and zero point are rule-based)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, r: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int,
        alpha: float, rounding: str, ch: int,
    ) -> torch.Tensor:
        k, cf = constants(alpha)
        out, t = fused_lsq.extension().dsq_fwd(x, r, s, z, qmin, qmax, k, cf, MODES[rounding], ch)
        ctx.save_for_backward(x, t, r, s, z)
        ctx.args = (qmin, qmax, alpha, rounding, ch)
        return out

    @staticmethod
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, t, r, s, z = ctx.saved_tensors
        qmin, qmax, alpha, rounding, ch = ctx.args
        if not grad.is_contiguous():  # autograd's own gradient: its results follow grad's layout
            (gx,) = fused_lsq.eager_grads(lambda x_: eager(x_, s, z, qmin, qmax, alpha, rounding), [x], [True], grad)
        else:
            k, cf = constants(alpha)
            gx = fused_lsq.extension().dsq_bwd(x, t, grad, r, s, z, qmin, qmax, k, cf, ch)
        return gx, None, None, None, None, None, None, None, None


def fused(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, alpha: float,
          rounding: str = "half_even") -> torch.Tensor:
    """:func:`eager`'s numbers from the fused kernels, for an input :func:`usable` accepted."""
    ch = _axis(x, scale)
    assert ch is not None, "fused DSQ: a scale of one value or one per channel"
    s, z = scale.detach(), zero_point.detach()
    r = s.reciprocal()  # torch's, as the eager formula takes it
    if torch.is_grad_enabled() and x.requires_grad:
        return _DSQ.apply(x, r, s, z, qmin, qmax, alpha, rounding, ch)
    k, cf = constants(alpha)
    return fused_lsq.extension().dsq_fwd(x.detach(), r, s, z, qmin, qmax, k, cf, MODES[rounding], ch)[0]


def probe(rounding: str) -> bool:
    """Output (with and without gradients) and the input's gradient against the eager formula on ties, the grid's
    ends, NaN, infinities, signed zeros and random values; per tensor and per channel, signed, unsigned and
    asymmetric grids."""
    g = torch.Generator().manual_seed(3)
    cases = (  # (qmin, qmax, shape, scale shape, zero point)
        (-8, 7, [3, 5, 7, 11], [1], 0.0), (0, 15, [16 * 2048 + 5], [1], 0.0), (0, 255, [2, 3, 40], [1], 37.0),
        (-8, 7, [6, 3, 3, 3], [6, 1, 1, 1], 0.0), (0, 15, [6, 3, 3, 3], [6, 1, 1, 1], 3.0))
    for qmin, qmax, shape, sshape, zp in cases:
        n, c = torch.Size(shape).numel(), torch.Size(sshape).numel()
        s = (torch.tensor([0.25, 0.0371, 0.0117647, 0.5, 1.3, 0.1])[:c] if c > 1 else torch.tensor([0.0371]))
        s = s.reshape(sshape)
        z = torch.full(sshape, zp) if c == 1 else torch.arange(c, dtype=torch.float32).reshape(sshape) * (zp > 0)
        k = torch.arange(qmin - zp - 3, qmax - zp + 3.25, 0.25)
        x = (k.repeat(n // len(k) + 1)[:n].reshape(shape) * s
             + ((torch.rand(n, generator=g) < 0.2) * torch.randn(n, generator=g)).reshape(shape))
        x.view(-1)[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
        grad = torch.randn(shape, generator=g)
        grad.view(-1)[6:12] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0])
        if not fused_lsq.agree(eager, fused, [x.requires_grad_(True)], (s, z, qmin, qmax, 0.4, rounding), grad):
            return False
    return True


def usable(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, rounding: str) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, a scale and zero point
    of one value or one per channel along one axis, without gradients of their own."""
    if not (fused_lsq.usable(x) and x.is_contiguous() and rounding in MODES and _axis(x, scale) is not None
            and scale.shape == zero_point.shape and not scale.requires_grad and not zero_point.requires_grad
            and scale.dtype == zero_point.dtype == torch.float32):
        return False
    return fused_lsq.probed(("dsq", rounding), lambda: probe(rounding))
