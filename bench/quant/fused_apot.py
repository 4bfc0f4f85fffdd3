"""APoT's projection onto its levels (:func:`bench.algos.apot.apot_eager`) with fused CPU kernels (``fused=true``),
from the C++ extension of :mod:`bench.quant.fused_lsq`.

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

from bench.quant import fused_lsq


def mids(levels: torch.Tensor) -> torch.Tensor:
    """The mid-points between consecutive levels (the decision points of the nearest level), as eager computes them."""
    return (levels[1:] + levels[:-1]) / 2


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
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, alpha, levels, m = ctx.saved_tensors
        need_a = ctx.needs_input_grad[1]
        if not grad.is_contiguous():  # autograd's own gradients: results in grad's layout, sums in its order
            from bench.algos.apot import apot_eager

            with torch.enable_grad():
                xx, aa = x.detach().requires_grad_(True), alpha.detach().requires_grad_(need_a)
                out = apot_eager(xx, aa, levels, ctx.lo)
                grads = torch.autograd.grad(out, [xx, aa] if need_a else [xx], grad)
            return grads[0], grads[1] if need_a else None, None, None
        gx, ga = fused_lsq.extension().apot_bwd(x, grad, alpha.item(), ctx.lo, m, levels, list(alpha.shape), need_a)
        return gx, ga if need_a else None, None, None


def fused(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor, lo: float) -> torch.Tensor:
    """:func:`bench.algos.apot.apot_eager`'s numbers from the fused kernels, for an input :func:`usable` accepted."""
    if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
        return _APoT.apply(x, alpha, levels, lo)
    return fused_lsq.extension().apot_fwd(x.detach(), alpha.item(), lo, mids(levels), levels)


def probe() -> bool:
    """Output and the gradients of the input and the clip against the eager formula, on every level's mid-point and
    its neighbours, the clip's ends, NaN, infinities, signed zeros and random values, for signed and unsigned
    ranges and the level sets of 2 to 8 bits."""
    from bench.algos.apot import apot_eager, apot_levels

    g = torch.Generator().manual_seed(4)
    for b, lo in ((2, 0.0), (3, -1.0), (4, 0.0), (5, -1.0), (6, 0.0), (7, -1.0), (8, 0.0)):
        levels = apot_levels(b)
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
                outs = []
                for fn in (apot_eager, fused):
                    xt, at = xs.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
                    out = fn(xt, at, levels, lo)
                    out.backward(gs)
                    with torch.no_grad():
                        plain = fn(xs, alpha, levels, lo)
                    outs.append([out.detach(), xt.grad, at.grad, plain])
                if not all(fused_lsq.same_bits(p, q) for p, q in zip(*outs, strict=True)):
                    return False
    return True


def usable(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, a 1-element float32 clip
    and float32 levels."""
    if not (fused_lsq.usable(x) and x.is_contiguous() and alpha.numel() == 1 and alpha.dtype == torch.float32
            and levels.dtype == torch.float32 and levels.dim() == 1 and levels.numel() >= 1):
        return False
    return fused_lsq.probed(("apot",), probe)
