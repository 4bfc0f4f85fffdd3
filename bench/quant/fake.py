"""Fake-quantization maths: quantization parameters from a range, power-of-two scales, the fused fake-quant ops.

``x_hat = s * (clamp(round(x * (1/s)) + z, qmin, qmax) - z)`` (round half to even), with the straight-through
estimator for ``round`` (gradient 1 inside the grid, 0 where clamped). PyTorch's fused
``fake_quantize_per_{tensor,channel}_affine`` compute exactly this, multiplying by the float32 reciprocal of the
scale (it differs from ``x / s`` only at exact half-way points); they are used whenever scale and zero point are
fixed, and :func:`quantize_to_int` uses the same reciprocal so integer codes agree bit for bit.
"""

from __future__ import annotations

import torch

from bench.quant.spec import QuantSpec

EPS = torch.finfo(torch.float32).eps  # smallest scale: an all-zero tensor still gets a valid grid


def pot_scale(scale: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """Snap a scale to a power of two: ``2 ** round(log2(s))`` (``mode="round"``, MQBench's choice for learned
    scales) or ``2 ** ceil(log2(s))`` (``mode="ceil"``: the smallest power of two that keeps the whole range)."""
    snap = torch.ceil if mode == "ceil" else torch.round
    return torch.pow(2.0, snap(torch.log2(scale.clamp_min(EPS))))


def qparams_from_range(
    min_val: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec, signed: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) mapping ``[min_val, max_val]`` onto the spec's integer grid.

    Works per tensor (0-d or 1-element inputs) and per channel (1-d inputs). The range is widened to contain 0 so
    that zero is exactly representable. Symmetric: ``s = max(|min|, |max|) / qmax`` on a signed grid and
    ``max / qmax`` on an unsigned one, ``z = 0``. Asymmetric: ``s = (max - min) / (qmax - qmin)``,
    ``z = clamp(qmin - round(min / s), qmin, qmax)``. Power-of-two profiles snap ``s`` up to the next power of two
    (``pot_scale(s, "ceil")``): a range is a promise not to clip, and rounding in the log domain would clip up to
    29% of it (MinMax on TVM lost 16 points of ResNet-50-mini W8A8 accuracy that way); an MSE search still reaches
    smaller powers of two by shrinking the range it passes in.
    """
    if signed is None:
        signed = spec.signed if spec.signed is not None else bool((min_val < 0).any())
    qmin, qmax = spec.qrange(signed)
    min_neg = torch.minimum(min_val.float(), torch.zeros_like(min_val, dtype=torch.float32))
    max_pos = torch.maximum(max_val.float(), torch.zeros_like(max_val, dtype=torch.float32))
    if spec.symmetric:
        amax = torch.maximum(-min_neg, max_pos) if signed else max_pos
        scale = (amax / qmax).clamp_min(EPS)
        if spec.pot_scale:
            scale = pot_scale(scale, "ceil")
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((max_pos - min_neg) / (qmax - qmin)).clamp_min(EPS)
        if spec.pot_scale:
            scale = pot_scale(scale, "ceil")
        zero_point = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    ch_axis: int | None = None,
) -> torch.Tensor:
    """Fake-quantize ``x`` with fixed ``scale`` / ``zero_point`` (per tensor, or per channel along ``ch_axis``).

    Gradient: straight-through inside the grid, zero where the value was clamped (PyTorch's fused ops).
    """
    if ch_axis is None:
        return torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()).float(), zero_point.reshape(()).to(torch.int32), qmin, qmax
        )
    return torch.fake_quantize_per_channel_affine(
        x, scale.reshape(-1).float(), zero_point.reshape(-1).to(torch.int32), ch_axis, qmin, qmax
    )


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def quantize_to_int(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, ch_axis: int | None = None
) -> torch.Tensor:
    """The integer codes ``clamp(round(x * (1/s)) + z, qmin, qmax)`` (float tensor holding integers), exactly the
    codes behind :func:`fake_quantize`."""
    if ch_axis is not None:
        shape = [1] * x.dim()
        shape[ch_axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return torch.clamp(torch.round(x * scale.float().reciprocal()) + zero_point, qmin, qmax)
