"""``FrozenWeightQuantizer``: a weight quantizer whose integer codes were chosen by a PTQ method (Bit-Split,
AdaRound-style rounding, IOSO), not by rounding to nearest.

The deployed weight is ``(q - z) * scale`` with integer codes ``q`` on the profile's grid; the forward pass returns it
whatever float weight comes in (the codes were optimised for that weight, which PTQ keeps fixed). ``scale`` /
``zero_point`` are the usual buffers, so reports, export and integer execution read it like any other quantizer.
"""

from __future__ import annotations

import torch

from bench.quant.quantizer import FakeQuantize


class FrozenWeightQuantizer(FakeQuantize):
    """Fixed integer weight codes ``int_repr`` (weight-shaped) with per-tensor or per-channel ``scale`` and
    ``zero_point``; forward returns ``(int_repr - z) * scale`` shaped like the weight, times ``in_scale`` when given
    (IOSO's per-input-channel group factors, broadcastable to the weight: the integer codes stay on the grid and the
    factor is applied per group of input channels by shift-and-add at deployment)."""

    def __init__(self, source: FakeQuantize, int_repr: torch.Tensor, scale: torch.Tensor,
                 zero_point: torch.Tensor | None = None, in_scale: torch.Tensor | None = None) -> None:
        super().__init__(source.spec, source.kind, None)
        self.to(scale.device)  # the buffers of a new module are on the CPU; the model may be on CUDA
        self.signed = source.signed
        zp = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else zero_point
        self.set_qparams(scale, zp)
        qmin, qmax = self.qrange
        codes = int_repr.detach().round()
        if bool((codes < qmin).any()) or bool((codes > qmax).any()):
            raise ValueError(f"integer weight codes outside the grid [{qmin}, {qmax}]")
        self.register_buffer("int_repr", codes.to(torch.int32))
        # IOSO's input channel-wise scale groups (factors like 1 +- 2^-4), broadcastable to the weight; None = 1
        self.register_buffer("in_scale", None if in_scale is None else in_scale.detach().float().clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in ("int_repr", "in_scale"):
            key = prefix + name
            cur = getattr(self, name)
            if key in state_dict and (cur is None or state_dict[key].shape != cur.shape):
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dequantized(self) -> torch.Tensor:
        """The deployed float weight ``(int_repr - z) * scale``."""
        axis = self.ch_axis
        shape = [1] * self.int_repr.dim()
        if axis is not None:
            shape[axis] = -1
        s = self.scale.reshape(shape)
        z = self.zero_point.reshape(shape).float()
        w = (self.int_repr.float() - z) * s
        return w if self.in_scale is None else w * self.in_scale

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantized().to(x.dtype)

    def compute_qparams(self) -> None:
        """Nothing to calibrate: the codes and scales are the method's result (re-calibration keeps them)."""
        self.calibrated = True
