"""APoT's projection onto its levels (:class:`bench.algos.apot.APoTQuantizer`): the eager formula (:func:`eager`)
and fused CPU kernels of it (``fused=true``, :func:`fused`), from the C++ extension of :mod:`bench.quant.fused_lsq`.

Bit for bit the eager ops: the division by the learned clip, the clamp, the nearest level (``torch.bucketize`` of
``|u|`` on the mid-points between levels, then ``levels[idx] * sign(u)``), the straight-through sum and the product
with the clip in one pass forward (torch's ``bucketize`` alone is a scalar binary search, about 1 ms per activation
of resnet18_mini: 24 ms of a 107 ms step); backward the gradient of the input and the two per-element products of
the clip's gradient in one pass, reduced with ATen's ``sum_to`` as autograd reduces them. Probed against the eager
ops on first use, like the other fused kernels, and off with them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq


def mids(levels: torch.Tensor) -> torch.Tensor:
    """The mid-points between consecutive levels (the decision points of the nearest level)."""
    return (levels[1:] + levels[:-1]) / 2


def project(u: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Nearest level of ``|u|`` (``u`` in [-1, 1], levels sorted in [0, 1]), sign kept."""
    idx = torch.bucketize(u.abs(), mids(levels))
    return levels[idx] * torch.sign(u)


def eager(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor, lo: float) -> torch.Tensor:
    """``alpha * P(clamp(x / alpha, lo, 1))`` with a straight-through ``P`` (:func:`project`), with eager ops."""
    u = torch.clamp(x / alpha, lo, 1.0)
    return (u + (project(u, levels) - u).detach()) * alpha


class _APoT(torch.autograd.Function):
    """The fused forward / backward (``alpha``: a 1-element tensor, its gradient reduced to its shape)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor, lo: float,
    ) -> torch.Tensor:
        m = mids(levels)
        ctx.save_for_backward(x, alpha, levels, m)
        ctx.lo = lo
        return fused_lsq.extension().apot_fwd(x, alpha.item(), lo, m, levels)

    @staticmethod
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, alpha, levels, m = ctx.saved_tensors
        need_a = ctx.needs_input_grad[1]
        if not grad.is_contiguous():  # autograd's own gradients: results in grad's layout, sums in its order
            gx, ga = fused_lsq.eager_grads(lambda x_, a_: eager(x_, a_, levels, ctx.lo), [x, alpha], [True, need_a],
                                           grad)
            return gx, ga, None, None
        gx, ga = fused_lsq.extension().apot_bwd(x, grad, alpha.item(), ctx.lo, m, levels, list(alpha.shape), need_a)
        return gx, ga if need_a else None, None, None


def fused(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor, lo: float) -> torch.Tensor:
    """:func:`eager`'s numbers from the fused kernels, for an input :func:`usable` accepted."""
    if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
        return _APoT.apply(x, alpha, levels, lo)
    return fused_lsq.extension().apot_fwd(x.detach(), alpha.item(), lo, mids(levels), levels)


def probe() -> bool:
    """Output and the gradients of the input and the clip against the eager formula, on every level's mid-point and
    its neighbours, the clip's ends, NaN, infinities, signed zeros and random values, for signed and unsigned
    ranges, level lists of 4 to 256 levels (counted and binary-searched), additive powers of two and uniform."""
    g = torch.Generator().manual_seed(4)
    pot = sorted({a + b for a in (0.0, 0.5, 0.125, 2.0**-5) for b in (0.0, 0.25, 2.0**-4, 2.0**-6)})  # APoT's 4-bit
    for levels, lo in ((torch.tensor([0.0, 0.25, 0.5, 1.0]), 0.0), (torch.tensor(pot) / max(pot), -1.0),
                       (torch.linspace(0, 1, 64) ** 1.5, 0.0), (torch.arange(128) / 127.0, -1.0),
                       (torch.arange(256) / 255.0, 0.0)):
        for a_val in (1.0, 0.37, 2.9):
            alpha = torch.tensor([a_val])
            m = mids(levels)
            edges = torch.cat([m, m.nextafter(torch.tensor(2.0)), m.nextafter(torch.tensor(-1.0)), levels])
            x = torch.cat([edges, -edges, torch.rand(3000, generator=g) * 2.6 - 1.3]) * alpha
            x[:2] = torch.tensor([a_val, -a_val])  # the clip's ends
            grad = torch.randn(x.shape, generator=g)
            grad[2:8] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0])
            special = x.clone()
            special[8:14] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
            # finite inputs and gradients (alpha's gradient a number), then NaN / inf in both
            for xs, gs in ((x, grad.nan_to_num(0.5, 1.5, -1.5)), (special, grad)):
                tensors = [xs.requires_grad_(True), alpha.requires_grad_(True)]
                if not fused_lsq.agree(eager, fused, tensors, (levels, lo), gs):
                    return False
    return True


def usable(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, a 1-element float32 clip
    and float32 levels."""
    if not (fused_lsq.usable(x) and x.is_contiguous() and alpha.numel() == 1 and alpha.dtype == torch.float32
            and levels.dtype == torch.float32 and levels.dim() == 1 and levels.numel() >= 1):
        return False
    return fused_lsq.probed(("apot",), probe)
