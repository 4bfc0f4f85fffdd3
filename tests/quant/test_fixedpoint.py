"""Requantization against Python's exact integer / rational arithmetic."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from bench.errors import BenchError
from bench.quant.fixedpoint import quantize_multiplier, requantize, rounding_shift


def ref_round(x: Fraction, rounding: str) -> int:
    fl = math.floor(x)
    frac = x - fl
    if frac > Fraction(1, 2):
        return fl + 1
    if frac < Fraction(1, 2):
        return fl
    if rounding == "half_up":
        return fl + 1
    if rounding == "half_away":
        return fl + 1 if x > 0 else fl
    return fl if fl % 2 == 0 else fl + 1


MULTS = [1.0, 0.5, 0.75, 1e-3, 3.3e-5, 0.999999999, 2.0**-20, 1.7, 12.5, -0.37, 0.0, 7.62939453125e-06]


@pytest.mark.parametrize("mult", MULTS)
def test_multiplier_mantissa_and_exponent(mult):
    m, shift = (int(t) for t in quantize_multiplier(torch.tensor([mult], dtype=torch.float64)))
    if mult == 0:
        assert m == 0
        return
    assert 2**30 <= abs(m) < 2**31
    approx = Fraction(m, 1) / Fraction(2) ** shift
    assert abs(approx - Fraction(mult)) <= abs(Fraction(mult)) * Fraction(1, 2**30)  # 31 significant bits


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
def test_fixed_point_requantize_is_exact_rounding_of_the_fixed_point_product(rounding):
    rng = random.Random(0)
    accs = [rng.randint(-2**31 + 1, 2**31 - 1) for _ in range(300)] + [rng.randint(-5000, 5000) for _ in range(300)]
    for mult in MULTS:
        m, shift = (int(t) for t in quantize_multiplier(torch.tensor([mult], dtype=torch.float64)))
        got = requantize(torch.tensor(accs), torch.tensor(mult, dtype=torch.float64), "fixed_point", rounding)
        want = [ref_round(Fraction(a * m) / Fraction(2) ** shift, rounding) for a in accs]
        assert got.tolist() == want, mult


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
def test_ties_follow_the_rounding(rounding):
    acc = torch.tensor([-7, -5, -3, -1, 1, 3, 5, 7, 6, -6])
    got = requantize(acc, torch.tensor(0.5, dtype=torch.float64), "shift", rounding).tolist()
    want = [ref_round(Fraction(int(a), 2), rounding) for a in acc]
    assert got == want
    assert requantize(acc, torch.tensor(0.5, dtype=torch.float64), "fixed_point", rounding).tolist() == want


def test_shift_mode_needs_powers_of_two_and_is_exact():
    acc = torch.arange(-300, 300)
    for k in range(0, 12):
        got = requantize(acc, torch.tensor(2.0**-k, dtype=torch.float64), "shift", "half_up")
        assert got.tolist() == [ref_round(Fraction(int(a), 2**k), "half_up") for a in acc]
    with pytest.raises(BenchError, match="power-of-two multipliers"):
        requantize(acc, torch.tensor(0.3, dtype=torch.float64), "shift", "half_up")


def test_float32_mode_is_single_precision_rounding():
    acc = torch.tensor([123456789, -98765, 3, 2**30])
    mult = torch.tensor(1.2345e-4, dtype=torch.float64)
    got = requantize(acc, mult, "float32", "half_even")
    want = torch.round(acc.float() * mult.float()).long()
    assert torch.equal(got, want)


def test_per_channel_multipliers_broadcast():
    acc = torch.tensor([[100, 200], [-300, 401]])
    mult = torch.tensor([0.25, 0.1], dtype=torch.float64)
    got = requantize(acc, mult, "fixed_point", "half_even")
    assert got.tolist() == [[25, 20], [-75, 40]]


def test_large_shifts_round_to_zero():
    num = torch.tensor([2**40, -(2**40), 5])
    assert rounding_shift(num, torch.tensor(70), "half_up").tolist() == [0, 0, 0]


def test_bad_mode_and_rounding_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown deploy.requant 'magic'; accepted: fixed_point, shift, float32"):
        requantize(torch.tensor([1]), torch.tensor(0.5), "magic", "half_up")
    with pytest.raises(BenchError, match="unknown deploy.rounding 'down'"):
        requantize(torch.tensor([1]), torch.tensor(0.5), "fixed_point", "down")
