"""``FakeQuantize``: the quantizer module the graph pass inserts (one per quantized tensor).

It has three modes, switched by the calibration and debugging code:
- ``observing``: feed the input to its observer and pass it through unquantized (calibration);
- ``enabled``: fake-quantize with the stored scale / zero point (the normal state after calibration);
- disabled (``enabled=False``, or a 16/32-bit spec): pass through (``quant.bypass``, ``quant.only``).
QAT algorithms subclass it and make scale / zero point learnable.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bench.quant.fake import fake_quantize
from bench.quant.spec import QuantSpec


class FakeQuantize(nn.Module):
    """Fake quantizer of one tensor with fixed (calibrated) scale and zero point.

    ``kind`` is ``"weight"`` or ``"act"``; ``observer`` (see ``bench.quant.observers``) computes the qparams from
    what it saw. Per-channel specs keep one scale per channel along ``spec.ch_axis``; the buffers are sized on the
    first calibration.
    """

    uniform = True  # values on a uniform grid s * (q - z) (False: non-uniform levels, e.g. APoT)

    def __init__(self, spec: QuantSpec, kind: str, observer: Any | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.kind = kind
        self.observer = observer
        self._pristine = copy.deepcopy(observer)  # reset_observer() starts statistics afresh from this
        self.observing = False
        self.enabled = True
        self.calibrated = False
        self.signed: bool = spec.signed if spec.signed is not None else True
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))

    @property
    def qrange(self) -> tuple[int, int]:
        """``(qmin, qmax)`` of the grid in use (resolved signedness)."""
        return self.spec.qrange(self.signed)

    @property
    def ch_axis(self) -> int | None:
        """Channel axis of a per-channel quantizer, else None."""
        return self.spec.ch_axis if self.spec.per_channel else None

    @property
    def active(self) -> bool:
        """Whether the forward pass quantizes."""
        return self.enabled and not self.spec.bypass and not self.observing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and self.observer is not None:
            self.observer.update(x.detach())
            return x
        if not self.active:
            return x
        if not self.calibrated:
            raise RuntimeError(f"{self.kind} quantizer used before calibration")
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (calibrated, active quantizer): the stored grid; QAT subclasses override it."""
        qmin, qmax = self.qrange
        return fake_quantize(x, self.scale, self.zero_point, qmin, qmax, self.ch_axis, self.spec.rounding)

    def grid(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` of the grid the quantized values lie on (``x``: the tensor, for quantizers whose
        grid follows it). The integer bias of a layer is rounded onto ``s_x * s_w`` with these scales."""
        return self.scale, self.zero_point

    def configure_observer(self, fn: Any) -> None:
        """Apply ``fn(observer)`` to the observer and to the template a reset restores (e.g. ``set_bn``)."""
        for obs in (self.observer, self._pristine):
            if obs is not None:
                fn(obs)

    def reset_observer(self) -> None:
        """Forget the statistics seen so far (before a new calibration)."""
        self.observer = copy.deepcopy(self._pristine)

    @torch.no_grad()
    def compute_qparams(self) -> None:
        """Set scale / zero point (and adaptive signedness) from the observer's statistics."""
        if self.spec.bypass:
            self.calibrated = True
            return
        if self.observer is None:
            raise RuntimeError("quantizer has no observer to compute its parameters from")
        scale, zero_point = self.observer.compute()
        self.set_qparams(scale, zero_point, self.observer.signed)

    @torch.no_grad()
    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor, signed: bool | None = None) -> None:
        """Store given parameters (resizing the buffers for per-channel quantizers)."""
        self.scale = scale.detach().reshape(-1).float().clone().to(self.scale.device)
        self.zero_point = zero_point.detach().reshape(-1).to(torch.int32).clone().to(self.scale.device)
        if signed is not None:
            self.signed = bool(signed)
        self.calibrated = True

    def get_extra_state(self) -> dict[str, bool]:
        """Saved with the buffers: the resolved signedness (adaptive specs) is part of the quantizer's grid."""
        return {"signed": bool(self.signed), "calibrated": bool(self.calibrated)}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.signed = bool(state["signed"])
        self.calibrated = bool(state["calibrated"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # per-channel buffers change size at calibration: adopt the stored shapes before loading
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key]))
        self.calibrated = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.kind}: {self.spec.describe()}, enabled={self.enabled}"
