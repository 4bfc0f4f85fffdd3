"""QIL's interval transformer and discretiser (:class:`bench.algos.qil.QILQuantizer`): the eager formula
(:func:`eager`) and fused CPU kernels of it (``fused=true``, :func:`fused`), from the C++ extension of
:mod:`bench.quant.fused_lsq`.

Bit for bit the eager ops: ``|x|`` (or ``x``), the shift by ``c - d`` and the division by ``2 d``, the clamp to
``[0, 1]``, the straight-through rounding of ``t * qmax``, the sign and the product with the detached ``2 d`` in one
pass forward (about twelve eager passes); backward the input's gradient and the per-element gradients of ``c - d``
and ``2 d`` in one pass, reduced with ATen's ``sum_to`` as autograd reduces them (``c - d`` and ``2 d`` themselves,
LSQ's gradient scaling and the absolute value of ``d`` stay eager: one-element ops). Probed against the eager ops
on first use, like the other fused kernels, and off with them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq
from bench.quant.fake import round_ste


def eager(x: torch.Tensor, cm: torch.Tensor, w: torch.Tensor, qmax: int, signed: bool) -> torch.Tensor:
    """QIL's transformer ``clamp((|x| - cm) / w, 0, 1)`` (``x`` unsigned), quantized to ``qmax`` levels, sign kept and
    multiplied back by the detached ``w``, with eager ops (``cm = c - d``, ``w = 2 d``)."""
    mag = x.abs() if signed else x
    t = torch.clamp((mag - cm) / w, 0.0, 1.0)
    q = round_ste(t * qmax) / qmax
    if signed:
        q = q * torch.sign(x)
    return q * w.detach()


class _QIL(torch.autograd.Function):
    """The fused forward / backward (``cm = c - d`` and ``w = 2 d``: 1-element tensors)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, cm: torch.Tensor, w: torch.Tensor, qmax: int, signed: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, cm, w)
        ctx.args = (qmax, signed)
        return fused_lsq.extension().qil_fwd(x, cm.item(), w.item(), qmax, signed)

    @staticmethod
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, cm, w = ctx.saved_tensors
        qmax, signed = ctx.args
        need_c, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if not grad.is_contiguous():  # autograd's own gradients: results in grad's layout, sums in its order
            gx, gc, gw = fused_lsq.eager_grads(lambda x_, c_, w_: eager(x_, c_, w_, qmax, signed), [x, cm, w],
                                               [True, need_c, need_w], grad)
            return gx, gc, gw, None, None
        gx, gc, gw = fused_lsq.extension().qil_bwd(x, grad, cm.item(), w.item(), qmax, signed, list(cm.shape),
                                                   list(w.shape), need_c, need_w)
        return gx, gc if need_c else None, gw if need_w else None, None, None


def fused(x: torch.Tensor, cm: torch.Tensor, w: torch.Tensor, qmax: int, signed: bool) -> torch.Tensor:
    """:func:`eager`'s numbers from the fused kernels, for an input :func:`usable` accepted."""
    if torch.is_grad_enabled() and (x.requires_grad or cm.requires_grad or w.requires_grad):
        return _QIL.apply(x, cm, w, qmax, signed)
    return fused_lsq.extension().qil_fwd(x.detach(), cm.item(), w.item(), qmax, signed)


def probe() -> bool:
    """Output (with and without gradients) and the gradients of the input, ``c - d`` and ``2 d`` against the eager
    formula, on the interval's ends, the rounding's ties, NaN, infinities, signed zeros and random values, signed and
    unsigned, 4 and 8 bits."""
    g = torch.Generator().manual_seed(5)
    for qmax in (7, 15, 127, 255):
        for signed in (True, False):
            for c_val, d_val in ((0.6, 0.5), (1.3, 0.37)):
                cm, w = torch.tensor([c_val - d_val]), torch.tensor([2 * d_val])
                steps = torch.arange(-2, 2 * qmax + 3) / (2 * qmax)  # ties k + 1/2 of t * qmax, and t's ends
                x = torch.cat([steps * w + cm, torch.randn(3000, generator=g) * (c_val + d_val)])
                x = torch.cat([x, -x])
                grad = torch.randn(x.shape, generator=g)
                grad[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0])
                special = x.clone()
                special[6:12] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
                for xs, gs in ((x, grad.nan_to_num(0.5, 1.5, -1.5)), (special, grad)):
                    tensors = [xs.requires_grad_(True), cm.requires_grad_(True), w.requires_grad_(True)]
                    if not fused_lsq.agree(eager, fused, tensors, (qmax, signed), gs):
                        return False
    return True


def usable(x: torch.Tensor, cm: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the fused kernels take this call: on, probed, a contiguous float32 CPU input, 1-element float32
    ``c - d`` and ``2 d``."""
    if not (fused_lsq.usable(x) and x.is_contiguous() and cm.numel() == 1 and w.numel() == 1
            and cm.dtype == w.dtype == torch.float32):
        return False
    return fused_lsq.probed(("qil",), probe)
