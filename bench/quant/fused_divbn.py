"""Strategy 4's per-channel division and the training-mode BN behind it (``bn(y / f)``,
:meth:`bench.quant.qmodules.QuantConvBn2d.forward`) as one autograd node with a fused CPU backward (``fused=true``),
bit for bit what the two eager nodes compute.

Forward is ATen's: ``y`` divided by ``f`` in place, then ``native_batch_norm`` in training mode with the module's
running-statistics update (what :class:`torch.nn.BatchNorm2d` does). Backward, eager, is two passes over the
activation that write it twice: BN's backward writes ``dz``, the division's backward reads it back to write
``dz / f`` and ``(z / f) * dz`` (summed for ``f``). The C++ kernel (``div_bn_grad`` in ``lsq_kernels.cpp``) computes
``dz`` in registers with ATen's BN formula and summation order and writes the two products directly: on resnet18_mini
at batch 128 (2 cores) 6.9 -> 3.0 ms for the 128 x 16 x 32 x 32 layer, the same bits.

That order (the vector width ATen's BN kernel runs at on this CPU, which of its operations the compiler fused into
multiply-adds) belongs to the torch build, so it is checked where it is used: the first time a shape comes up in a
process, ATen and the kernel (at each candidate width) both compute the gradients, on the real gradient and on random
values spread over forty binades; the kernel serves the shape only at a width where all agree bit for bit, otherwise
ATen does, as without ``fused``. The first call of a shape returns ATen's result either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq

WIDTHS = (8, 16)  # float lanes of ATen's BN kernel: AVX2's 8 (also what AVX-512 machines run for it), AVX-512's 16
_width: dict[tuple[int, ...], int | None] = {}  # shape -> the width at which the kernel gave ATen's bits, or None


def _aten(dy: Tensor, z: Tensor, f: Tensor, w: Tensor, mean: Tensor, invstd: Tensor, eps: float,
          dz_extra: Tensor | None = None) -> list[Tensor]:
    """The eager gradients: autograd's BN backward (training mode), then the division's two products (with
    ``dz_extra``, a gradient of the quotient itself, added to BN's input gradient first)."""
    dz, gw, gb = torch.ops.aten.native_batch_norm_backward(dy, z, w, None, None, mean, invstd, True, eps,
                                                           [True, True, True])
    if dz_extra is not None:
        dz = dz + dz_extra
    f4 = f.reshape(1, -1, 1, 1)
    return [dz / f4, (z / f4).mul_(dz), gw, gb]


def _kernel(dy: Tensor, z: Tensor, f: Tensor, w: Tensor, mean: Tensor, invstd: Tensor, width: int) -> list[Tensor]:
    return fused_lsq.extension().div_bn_grad(dy, z, f, w, mean, invstd, width)


def grads(dy: Tensor, z: Tensor, f: Tensor, w: Tensor, mean: Tensor, invstd: Tensor, eps: float) -> list[Tensor]:
    """``[dz / f, (z / f) * dz, grad of w, grad of b]`` for ``out = BN(z)`` (training mode, saved ``mean`` and
    ``invstd``) with ``dz`` its input's gradient: the kernel where it has given ATen's bits for this shape in this
    process, else ATen's (always for a gradient that is not contiguous)."""
    if not dy.is_contiguous():
        return _aten(dy, z, f, w, mean, invstd, eps)
    key = tuple(z.shape)
    if key in _width:
        width = _width[key]
        return _aten(dy, z, f, w, mean, invstd, eps) if width is None else _kernel(dy, z, f, w, mean, invstd, width)
    want = _aten(dy, z, f, w, mean, invstd, eps)
    _width[key] = next((wd for wd in WIDTHS if _check(dy, want, z, f, w, mean, invstd, eps, wd)), None)
    return want


def _check(dy: Tensor, want: list[Tensor], z: Tensor, f: Tensor, w: Tensor, mean: Tensor, invstd: Tensor,
           eps: float, width: int) -> bool:
    """Whether the kernel at ``width`` gives ATen's bits on the real gradient (``want`` is ATen's) and on random
    gradients whose magnitudes spread over 2^-20 .. 2^20 (so that another order of the same sums rounds differently
    somewhere)."""
    try:
        if not _same(_kernel(dy, z, f, w, mean, invstd, width), want):
            return False
        gen = torch.Generator().manual_seed(0)
        for spread in (False, True):
            g2 = torch.randn(dy.shape, generator=gen)
            if spread:
                g2 = g2 * 2.0 ** torch.randint(-20, 21, g2.shape, generator=gen).float()
            if not _same(_kernel(g2, z, f, w, mean, invstd, width), _aten(g2, z, f, w, mean, invstd, eps)):
                return False
        return True
    except Exception:  # no compiler: fused_lsq has warned (or will); ATen here, the same numbers
        return False


def _same(got: list[Tensor], want: list[Tensor]) -> bool:
    return all(fused_lsq.same_bits(a, b) for a, b in zip(got, want, strict=True))


class _DivBN(torch.autograd.Function):
    """``(bn(y / f), y / f)`` with ``y`` divided in place (it is returned as the second output, which callers drop)
    and BN in training mode updating its running statistics as the module does: a shape's first call, whose backward
    checks the kernel (``DivBNFn`` in ``lsq_kernels.cpp`` is this node in C++, for the later ones)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, y: Tensor, f: Tensor, w: Tensor, b: Tensor, running_mean: Tensor, running_var: Tensor,
        momentum: float, eps: float,
    ) -> tuple[Tensor, Tensor]:
        z = y.div_(f.reshape(1, -1, 1, 1))
        ctx.mark_dirty(y)
        out, mean, invstd = torch.native_batch_norm(z, w, b, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(z, f, w, mean, invstd)
        ctx.eps = eps
        ctx.set_materialize_grads(False)
        return out, z

    @staticmethod
    @once_differentiable  # as fused_lsq's nodes: a first-order training step
    def backward(ctx: Any, dy: Tensor | None, dz_extra: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, f, w, mean, invstd = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(z)
        if dz_extra is None:
            gy, prod, gw, gb = grads(dy, z, f, w, mean, invstd, ctx.eps)
        else:  # someone used the quotient itself: its gradient joins BN's (eager formulas)
            gy, prod, gw, gb = _aten(dy, z, f, w, mean, invstd, ctx.eps, dz_extra)
        # keepdim as autograd's sum_to reduces a broadcast operand (without it, another reduction order)
        gf = prod.sum(dim=(0, 2, 3), keepdim=True).neg_().reshape(f.shape) if ctx.needs_input_grad[1] else None
        return (gy if ctx.needs_input_grad[0] else None, gf, gw if ctx.needs_input_grad[2] else None,
                gb if ctx.needs_input_grad[3] else None, None, None, None, None)


def applies(y: Tensor, f: Tensor, bn: nn.Module) -> bool:
    """Whether :func:`div_bn` serves ``bn(y / f)``: fused kernels on, a plain :class:`torch.nn.BatchNorm2d` in
    training mode with affine parameters, tracked running statistics and no hooks (its own or global), and a
    non-empty contiguous 4-D float32 CPU ``y`` of more than one pixel per plane (ATen's BN takes another kernel for
    1 x 1 maps) that needs a gradient."""
    return (type(bn) is nn.BatchNorm2d and bn.training and bn.track_running_stats and bn.affine
            and bn.running_mean is not None and bn.running_var is not None and not _hooked(bn)
            and torch.is_grad_enabled() and y.requires_grad and y.dim() == 4 and y.numel() > 0
            and y.is_contiguous() and y.size(2) * y.size(3) > 1 and fused_lsq.usable(y)
            and f.dtype == torch.float32 and f.is_contiguous() and bn.weight.dtype == torch.float32)


def _hooked(bn: nn.Module) -> bool:
    """Whether a hook would see the BN module run: its own forward / backward hooks or global module hooks (the node
    does not call the module, so they would not fire)."""
    from torch.nn.modules import module as m

    return bool(bn._forward_hooks or bn._forward_pre_hooks or bn._backward_hooks or bn._backward_pre_hooks
                or m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks)


def div_bn(y: Tensor, f: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """``bn(y / f)`` for the per-channel factor ``f`` (shape ``[C]``) with ``y`` a fresh conv output that nothing
    else holds (divided in place), as one node (:func:`applies` must hold); the module's momentum and counter
    handled as :meth:`torch.nn.BatchNorm2d.forward` handles them."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    key = tuple(y.shape)
    if key not in _width:  # the shape's first call: its backward checks the kernel against ATen (in Python)
        out, _ = _DivBN.apply(y, f, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)
        return out
    # later calls: the same node defined in C++ (no Python on either side), the kernel at the width that agreed (0:
    # ATen's BN backward and the division's products; ATen for a gradient that is not contiguous)
    width = _width[key] or 0
    return fused_lsq.extension().div_bn_apply(y, f, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                              float(momentum), float(bn.eps), width)
