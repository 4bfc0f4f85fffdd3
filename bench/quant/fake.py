"""Fake-quantization maths: quantization parameters from a range, power-of-two scales, the fake-quant ops.

``x_hat = s * (clamp(round(x * (1/s)) + z, qmin, qmax) - z)``, with the straight-through estimator for ``round``
(gradient 1 inside the grid, 0 where clamped). ``round`` is the spec's ``rounding``: the integer target's own
requantization rounding (``half_even``, ``half_up``, ``half_away``; ``bench.quant.fixedpoint``), so that the
simulation resolves exact half-way points as the target does (they are frequent on power-of-two grids). For
``half_even`` PyTorch's fused ``fake_quantize_per_{tensor,channel}_affine`` compute exactly this, multiplying by the
float32 reciprocal of the scale; the other modes use the same reciprocal, and :func:`quantize_to_int` too, so
integer codes agree bit for bit.
"""

from __future__ import annotations

import torch

from bench.quant.fixedpoint import round_float
from bench.quant.spec import QuantSpec

EPS = torch.finfo(torch.float32).eps  # smallest scale: an all-zero tensor still gets a valid grid


def pot_scale(scale: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """Snap a scale to a power of two: ``2 ** round(log2(s))`` (``mode="round"``, MQBench's choice for learned
    scales) or ``2 ** ceil(log2(s))`` (``mode="ceil"``: the smallest power of two that keeps the whole range)."""
    snap = torch.ceil if mode == "ceil" else torch.round
    return torch.pow(2.0, snap(torch.log2(scale.clamp_min(EPS))))


def qparams_from_range(
    min_val: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec, signed: bool | None = None,
    snap: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) mapping ``[min_val, max_val]`` onto the spec's integer grid.

    Works per tensor (0-d or 1-element inputs) and per channel (1-d inputs). The range is widened to contain 0 so
    that zero is exactly representable. Symmetric: ``s = max(|min|, |max|) / qmax`` on a signed grid and
    ``max / qmax`` on an unsigned one, ``z = 0``. Asymmetric: ``s = (max - min) / (qmax - qmin)``,
    ``z = clamp(qmin - round(min / s), qmin, qmax)``. Power-of-two profiles snap ``s`` to a power of two with
    ``snap`` (``"ceil"`` or ``"round"``; default: the spec's ``pot_snap``, where ``"mse"`` -- a choice that needs the
    data, made by the observers -- reads as ``"ceil"``).
    """
    if signed is None:
        signed = spec.signed if spec.signed is not None else bool((min_val < 0).any())
    qmin, qmax = spec.qrange(signed)
    mode = snap or spec.pot_snap
    mode = "ceil" if mode == "mse" else mode
    min_neg = torch.minimum(min_val.float(), torch.zeros_like(min_val, dtype=torch.float32))
    max_pos = torch.maximum(max_val.float(), torch.zeros_like(max_val, dtype=torch.float32))
    if spec.symmetric:
        amax = torch.maximum(-min_neg, max_pos) if signed else max_pos
        scale = (amax / qmax).clamp_min(EPS)
        if spec.pot_scale:
            scale = pot_scale(scale, mode)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((max_pos - min_neg) / (qmax - qmin)).clamp_min(EPS)
        if spec.pot_scale:
            scale = pot_scale(scale, mode)
        zero_point = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    ch_axis: int | None = None,
    rounding: str = "half_even",
) -> torch.Tensor:
    """Fake-quantize ``x`` with fixed ``scale`` / ``zero_point`` (per tensor, or per channel along ``ch_axis``),
    rounding half-way points with ``rounding``.

    Gradient: straight-through inside the grid, zero where the value was clamped (as PyTorch's fused ops).
    """
    if rounding != "half_even":
        s, z = _bcast(x, scale.float(), ch_axis), _bcast(x, zero_point, ch_axis).float()
        q = round_float(x * s.reciprocal(), rounding) + z
        inside = (q >= qmin) & (q <= qmax)
        out = (q.clamp(qmin, qmax) - z) * s
        return torch.where(inside, x + (out - x).detach(), out.detach()) if x.requires_grad else out
    if ch_axis is None:
        return torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()).float(), zero_point.reshape(()).to(torch.int32), qmin, qmax
        )
    return torch.fake_quantize_per_channel_affine(
        x, scale.reshape(-1).float(), zero_point.reshape(-1).to(torch.int32), ch_axis, qmin, qmax
    )


def _bcast(x: torch.Tensor, t: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    # a per-tensor (0-d / 1-element) or per-channel qparam shaped to broadcast against x
    if ch_axis is None:
        return t.reshape(())
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return t.reshape(shape)


def round_ste(x: torch.Tensor, rounding: str = "half_even") -> torch.Tensor:
    """``round(x)`` (half-way points by ``rounding``) in the forward pass, identity in the backward pass
    (straight-through estimator)."""
    return x + (round_float(x, rounding) - x).detach()


def quantize_to_int(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, ch_axis: int | None = None,
    rounding: str = "half_even",
) -> torch.Tensor:
    """The integer codes ``clamp(round(x * (1/s)) + z, qmin, qmax)`` (float tensor holding integers), exactly the
    codes behind :func:`fake_quantize` with the same ``rounding``."""
    s, z = _bcast(x, scale.float(), ch_axis), _bcast(x, zero_point, ch_axis)
    return torch.clamp(round_float(x * s.reciprocal(), rounding) + z, qmin, qmax)
