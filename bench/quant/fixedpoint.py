"""Integer requantization: a real multiplier ``M`` applied to int32 accumulators the way integer targets do it.

Three ways, named in each hardware profile's ``deploy.requant`` (``bench/conf/hw/*.yaml``):

- ``fixed_point``: ``M = m * 2^-shift`` with a 31-bit integer mantissa ``m`` in ``[2^30, 2^31)`` (gemmlowp / ACL /
  Hexagon style); ``acc * m`` is formed exactly in 64 bits and divided by ``2^shift`` with the profile's rounding.
- ``shift``: ``M`` must be a power of two (TVM's power-of-two scales): an arithmetic shift with rounding.
- ``float32``: ``round(float32(acc) * float32(M))`` in single precision (TensorRT, FBGEMM requantize in fp32).

Roundings (``deploy.rounding``): ``half_even`` (IEEE default), ``half_up`` (towards +inf, TVM's ``UPWARD``),
``half_away`` (away from zero, gemmlowp's rounding divide). Everything works element-wise on int64 tensors holding
integer values, with ``M`` per tensor (scalar) or per channel (broadcast by the caller).
"""

from __future__ import annotations

import torch

from bench.errors import BenchError

REQUANT_MODES = ("fixed_point", "shift", "float32")
ROUNDINGS = ("half_even", "half_up", "half_away")
MANTISSA_BITS = 31
MAX_SHIFT = 62  # |acc| < 2^31 and m < 2^31: the product fits in int64; larger shifts round to 0 anyway


def quantize_multiplier(multiplier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, shift)`` int64 tensors with ``multiplier ~= m * 2^-shift``, ``2^30 <= |m| < 2^31`` (``m = 0`` for 0).

    The mantissa is the multiplier rounded to 31 significant bits; the sign is kept in ``m``.
    """
    mult = multiplier.to(torch.float64)
    mant, exp = torch.frexp(mult.abs())  # |M| = mant * 2^exp, mant in [0.5, 1)
    m = torch.round(mant * 2.0**MANTISSA_BITS).to(torch.int64)
    carry = m == 2**MANTISSA_BITS  # rounding overflowed the mantissa: 2^31 * 2^-(31 - exp) = 2^30 * 2^-(30 - exp)
    m = torch.where(carry, torch.full_like(m, 2 ** (MANTISSA_BITS - 1)), m)
    shift = MANTISSA_BITS - exp.to(torch.int64) - carry.to(torch.int64)
    m = torch.where(mult < 0, -m, m)
    zero = mult == 0
    return torch.where(zero, torch.zeros_like(m), m), torch.where(zero, torch.zeros_like(shift), shift)


def rounding_shift(num: torch.Tensor, shift: torch.Tensor, rounding: str) -> torch.Tensor:
    """``num / 2^shift`` rounded to an integer with ``rounding`` (int64 in, int64 out; ``shift >= 0``)."""
    if rounding not in ROUNDINGS:
        raise BenchError(f"unknown deploy.rounding {rounding!r}; accepted: {', '.join(ROUNDINGS)}")
    shift = torch.broadcast_to(shift.to(torch.int64), num.shape)
    if bool((shift < 0).any()):  # a multiplier >= 2^31: only a left shift, exact
        left = (-shift).clamp_min(0)
        num = num * torch.pow(2, left)
        shift = shift.clamp_min(0)
    big = shift > MAX_SHIFT
    s = shift.clamp_max(MAX_SHIFT)
    floor = torch.bitwise_right_shift(num, s)  # arithmetic: floor division by 2^s
    rem = num - torch.bitwise_left_shift(floor, s)  # in [0, 2^s)
    half = torch.where(s > 0, torch.bitwise_left_shift(torch.ones_like(s), (s - 1).clamp_min(0)), torch.zeros_like(s))
    above = rem > half
    tie = (rem == half) & (s > 0)
    if rounding == "half_up":
        up = above | tie
    elif rounding == "half_away":
        up = above | (tie & (num >= 0))
    else:
        up = above | (tie & (floor % 2 == 1))
    out = floor + up.to(torch.int64)
    return torch.where(big, torch.zeros_like(out), out)  # |num| < 2^62 < 2^(shift-1): rounds to 0


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, mode: str, rounding: str) -> torch.Tensor:
    """``round(acc * multiplier)`` as the integer target computes it (see the module docstring); int64 result.

    ``acc`` holds integers (any integer or float dtype holding exact integers); ``multiplier`` broadcasts to it.
    """
    if mode not in REQUANT_MODES:
        raise BenchError(f"unknown deploy.requant {mode!r}; accepted: {', '.join(REQUANT_MODES)}")
    if rounding not in ROUNDINGS:
        raise BenchError(f"unknown deploy.rounding {rounding!r}; accepted: {', '.join(ROUNDINGS)}")
    acc = acc.to(torch.int64)
    if mode == "float32":
        y = acc.to(torch.float32) * multiplier.to(torch.float32)
        return round_float(y, rounding).to(torch.int64)
    if mode == "shift":
        m, shift = quantize_multiplier(multiplier)
        if bool(((m.abs() != 2 ** (MANTISSA_BITS - 1)) & (m != 0)).any()):
            raise BenchError("deploy.requant=shift needs power-of-two multipliers (pot_scale profiles); "
                             f"got {multiplier.flatten()[:3].tolist()}; accepted modes: {', '.join(REQUANT_MODES)}")
        # M = +-2^-k: a pure (rounding) shift of +-acc
        sign = torch.where(m < 0, -1, 1).to(torch.int64)
        return rounding_shift(acc * sign, shift - (MANTISSA_BITS - 1), rounding) * torch.where(m == 0, 0, 1)
    m, shift = quantize_multiplier(multiplier)
    return rounding_shift(acc * m, shift, rounding)


def round_float(y: torch.Tensor, rounding: str) -> torch.Tensor:
    """``y`` rounded to integers (same dtype) with ``rounding``: ``half_even``, ``half_up`` or ``half_away``."""
    if rounding == "half_even":
        return torch.round(y)
    if rounding == "half_up":
        return torch.floor(y + 0.5)
    return torch.sign(y) * torch.floor(y.abs() + 0.5)
