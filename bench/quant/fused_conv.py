"""The input gradient of a conv with one input channel (a network's first conv on grey images) with a fused CPU
kernel (``fused=true``), bit for bit what ATen computes.

In FP32 training nothing needs the gradient of the image; in QAT the input quantizer's learned step does, and ATen
(oneDNN) computes it by padding the single input channel to a vector of 16: resnet18_mini's first conv (128 x 1 x 32 x
32 -> 16 channels, stride 2) takes about 1.5 ms for it on 2 cores, 0.14 ms for the weight's gradient. The C++ kernel
(``conv1_input_grad`` in ``lsq_kernels.cpp``) adds the same products in oneDNN's order on the shapes it was written
for (per input pixel one fused multiply-add chain per kernel column over kernel rows and output channels, the chains
added in column order), a few samples at a time so that several chains are in flight.

That order is oneDNN's choice for a shape, thread count and instruction set, not a documented contract, so it is
checked where it is used: the first time a (shape, stride, padding, threads) key comes up in a process, the kernel and
ATen both compute the gradient, on the real gradient and on random values (some spread over forty binades), and the
kernel serves that key only if all agree bit for bit; otherwise (another CPU, a stride-1 conv), and for inputs of fewer
than 4096 pixels (a batch of a few small maps, where a different order can agree by chance), ATen does, as without
``fused``. The key's first call returns ATen's result either way, so numbers never depend on which ran.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bench.quant import fused_lsq

_agrees: dict[tuple, bool] = {}  # (shapes, stride, padding, threads) -> the kernel gave ATen's bits
# below this many input pixels ATen serves: on maps of a few pixels (batch 1-2) oneDNN's order can differ from the
# kernel's and still agree on the check's gradients by chance (a review found 241 such keys among 17,575 tiny shapes)
MIN_PIXELS = 4096


def _aten_input_grad(grad: Tensor, x: Tensor, w: Tensor, stride: list[int], padding: list[int]) -> Tensor:
    # what autograd's ConvolutionBackward computes for the input
    return torch.ops.aten.convolution_backward(grad, x, w, None, stride, padding, [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]


def _kernel(grad: Tensor, x: Tensor, w: Tensor, stride: list[int], padding: list[int]) -> Tensor:
    return fused_lsq.extension().conv1_input_grad(grad, w, x.size(2), x.size(3), stride[0], stride[1], padding[0],
                                                  padding[1])


def input_grad(grad: Tensor, x: Tensor, w: Tensor, stride: list[int], padding: list[int]) -> Tensor:
    """The gradient of ``conv2d(x, w, stride=stride, padding=padding)`` for ``x`` (one channel) given the output's
    ``grad``: the fused kernel where it has given ATen's bits for this key in this process, else ATen's (always for a
    gradient that is not contiguous: oneDNN's kernel for it may be another)."""
    if not grad.is_contiguous():
        return _aten_input_grad(grad, x, w, stride, padding)
    key = (tuple(grad.shape), tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding), torch.get_num_threads())
    ok = _agrees.get(key)
    if ok:
        return _kernel(grad, x, w, stride, padding)
    want = _aten_input_grad(grad, x, w, stride, padding)
    if ok is None:
        _agrees[key] = x.numel() >= MIN_PIXELS and _check(grad, want, x, w, stride, padding)
    return want


def _check(grad: Tensor, want: Tensor, x: Tensor, w: Tensor, stride: list[int], padding: list[int]) -> bool:
    """Whether the kernel gives ATen's bits on the real gradient (``want`` is ATen's) and on random gradients and
    weights whose magnitudes spread over 2^-20 .. 2^20 (so that a different order of the same products rounds
    differently somewhere)."""
    try:
        if not fused_lsq.same_bits(_kernel(grad, x, w, stride, padding), want):
            return False
        gen = torch.Generator().manual_seed(0)
        for spread in (False, True):
            g2, w2 = torch.randn(grad.shape, generator=gen), torch.randn(w.shape, generator=gen)
            if spread:
                g2 = g2 * 2.0 ** torch.randint(-20, 21, g2.shape, generator=gen).float()
                w2 = w2 * 2.0 ** torch.randint(-20, 21, w2.shape, generator=gen).float()
            if not fused_lsq.same_bits(_kernel(g2, x, w2, stride, padding),
                                       _aten_input_grad(g2, x, w2, stride, padding)):
                return False
        return True
    except Exception:  # no compiler: fused_lsq has warned (or will); ATen here, the same numbers
        return False


class _Conv1(torch.autograd.Function):
    """``conv2d(x, w, b)`` for an ``x`` with one channel: forward and the weight's and bias's gradients are ATen's
    (the same calls autograd makes), the input's gradient is :func:`input_grad`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, stride: list[int], padding: list[int]
    ) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, None if b is None else [b.numel()])
        return torch.nn.functional.conv2d(x, w, b, stride, padding)

    @staticmethod
    @once_differentiable  # as fused_lsq's nodes: a first-order training step
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        stride, padding, bias_sizes = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gw = gb = None
        if need_w or need_b:
            _, gw, gb = torch.ops.aten.convolution_backward(grad, x, w, bias_sizes, stride, padding, [1, 1], False,
                                                            [0, 0], 1, [False, need_w, need_b])
        gx = input_grad(grad, x, w, stride, padding) if need_x else None
        return gx, gw if need_w else None, gb if need_b else None, None, None


def applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether :func:`conv2d` routes ``conv`` on ``x`` through the fused input gradient: fused kernels on, a 4-D
    float32 CPU input of one channel that needs a gradient, a plain conv (groups 1, dilation 1, zero padding given as
    numbers)."""
    return (x.requires_grad and torch.is_grad_enabled() and x.dim() == 4 and x.size(1) == 1 and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and tuple(conv.dilation) == (1, 1)
            and fused_lsq.usable(x))


def conv2d(conv: nn.Conv2d, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``conv._conv_forward(x, w, b)`` (the conv's stride and padding with weight ``w`` and bias ``b``), with the
    fused input gradient where :func:`applies`; the same numbers either way."""
    if not applies(conv, x) or w.dtype != torch.float32 or (b is not None and b.dtype != torch.float32):
        return conv._conv_forward(x, w, b)
    return _Conv1.apply(x, w, b, list(conv.stride), list(conv.padding))
