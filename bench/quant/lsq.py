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

import torch

from bench.quant import fused_lsq
from bench.quant.lsq_eager import EagerLSQ

KERNELS = ("paper", "torch")


def lsq_fake_quantize(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, qmin: int, qmax: int, grad_factor: float,
    ch_axis: int | None = None, rounding: str = "half_even", kernel: str = "paper", positive_eps: float | None = None,
) -> torch.Tensor:
    """Fake-quantize ``x`` with a learnable step ``s`` and zero point ``z`` (1-element per tensor, or one per channel
    along ``ch_axis``; ``z=None``: a zero point of 0, not learned); gradients as the LSQ paper (``kernel="paper"``)
    or PyTorch's fused kernel (``"torch"``, round half to even only). See the module docstring. ``positive_eps``: ``s``
    is the raw learned parameter and the step is ``s.abs().clamp_min(positive_eps)`` (the quantizers' ``positive``),
    its gradient taken back through it as autograd does (inside the fused node where the fused kernels run)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown LSQ kernel {kernel!r}; accepted: {', '.join(KERNELS)}")
    if kernel == "torch" and rounding != "half_even":
        raise ValueError(f"kernel='torch' rounds half to even, not {rounding}")
    if ch_axis is not None:
        ch_axis %= x.dim()  # backward's reduced dimensions are those != ch_axis
    if kernel == "paper" and s.dtype == torch.float32 and (z is None or z.dtype == torch.float32):  # probed dtypes
        need_z = z is not None and z.requires_grad and torch.is_grad_enabled()
        if fused_lsq.variant(x, rounding, z is not None, need_z, ch_axis) is not None:
            return fused_lsq.apply(x, s, z, qmin, qmax, grad_factor, ch_axis, rounding, positive_eps)
    if positive_eps is not None:
        s = s.abs().clamp_min(positive_eps)
    if kernel == "paper":
        return EagerLSQ.apply(x, s, z, qmin, qmax, grad_factor, ch_axis, rounding)
    if z is None:
        z = torch.zeros_like(s.detach())
    if ch_axis is None:
        return torch._fake_quantize_learnable_per_tensor_affine(x, s.reshape(1), z.reshape(1), qmin, qmax, grad_factor)
    return torch._fake_quantize_learnable_per_channel_affine(x, s, z, ch_axis, qmin, qmax, grad_factor)
