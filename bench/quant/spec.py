"""``QuantSpec``: how one tensor kind (weight or activation) is quantized, and its integer range."""

from __future__ import annotations

from dataclasses import dataclass, replace

BYPASS_BITS = (16, 32)  # debugging workflow: quantizers present but pass the tensor through
ROUNDINGS = ("half_even", "half_up", "half_away")  # how a target rounds when it requantizes (bench.quant.fixedpoint)
POT_SNAPS = ("ceil", "round", "mse")  # how a calibrated scale becomes a power of two (bench.quant.fake.pot_scale)


@dataclass(frozen=True)
class QuantSpec:
    """One quantizer's format (DESIGN.md Sec. 3).

    ``signed=None`` is the academic *adaptive signedness* (MQBench App. E): the observer picks an unsigned grid when
    the calibration data has no negative value, a signed one otherwise. Symmetric quantizers have zero point 0
    (or ``2^(b-1)`` on an unsigned grid that holds signed data, which never happens with adaptive signedness).
    ``narrow_range`` drops the most negative integer of a signed grid ([-127, 127] instead of [-128, 127]).
    ``rounding`` is how values are rounded onto the grid: the target's requantization rounding for activations
    (``half_even``, ``half_up``, ``half_away``; the profile's ``deploy.rounding``), ``half_even`` for weights (quantized
    offline). ``pot_snap`` is how a calibrated scale becomes a power of two on ``pot_scale`` grids: ``ceil`` (never
    clips the calibrated range), ``round`` (nearest in the log domain, MQBench) or ``mse`` (the better of the two by
    the quantization error on the calibration data).
    """

    bits: int = 8
    signed: bool | None = True
    symmetric: bool = True
    per_channel: bool = False
    ch_axis: int = 0
    pot_scale: bool = False
    narrow_range: bool = False
    rounding: str = "half_even"
    pot_snap: str = "ceil"

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding {self.rounding!r} invalid; accepted: {', '.join(ROUNDINGS)}")
        if self.pot_snap not in POT_SNAPS:
            raise ValueError(f"pot_snap {self.pot_snap!r} invalid; accepted: {', '.join(POT_SNAPS)}")

    @property
    def bypass(self) -> bool:
        """True for 16/32 bit: the quantizer passes its input through unchanged."""
        return self.bits in BYPASS_BITS

    def qrange(self, signed: bool | None = None) -> tuple[int, int]:
        """``(qmin, qmax)`` of the integer grid; ``signed`` overrides an adaptive (None) spec."""
        s = self.signed if signed is None else signed
        if s is None:
            s = True
        if s:
            lo, hi = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
            return (lo + 1 if self.narrow_range else lo), hi
        return 0, 2**self.bits - 1 - (1 if self.narrow_range else 0)

    def with_bits(self, bits: int) -> QuantSpec:
        """The same format at another bit-width."""
        return replace(self, bits=bits)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``int4 sym per-channel(0) pot``."""
        sign = {True: "int", False: "uint", None: "(u)int"}[self.signed]
        parts = [f"{sign}{self.bits}", "sym" if self.symmetric else "asym"]
        parts.append(f"per-channel({self.ch_axis})" if self.per_channel else "per-tensor")
        parts.append("pot" if self.pot_scale else "fp32-scale")
        if self.narrow_range:
            parts.append("narrow")
        return " ".join(parts)
