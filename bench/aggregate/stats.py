"""Seed statistics: mean, sample std, Student-t 95% confidence interval, interval overlap, population std."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (standard tables; scipy is not a dependency).
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
Z975 = 1.959964


def t975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, a Cornish-Fisher expansion around the normal quantile above."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    # Hill's expansion: error < 1e-4 for df > 30, and no jump from 2.04 to 1.96 at df = 31
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    """Seed statistics of one cell: n values, mean, sample std (ddof=1) and the 95% CI half-width (NaN for n < 2)."""

    n: int
    mean: float
    std: float
    ci95: float


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are real numbers (None and NaN dropped)."""
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std and Student-t 95% CI half-width ``t_{0.975,n-1} * std / sqrt(n)`` of ``values``."""
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(1, mean, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, t975(n - 1) * std / math.sqrt(n))


def population_std(values: Sequence[float]) -> float:
    """Standard deviation with ddof=0 (the paper's Avg. HW and Fig. 5 use it); NaN for no values."""
    if not values:
        return math.nan
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def mean_or_nan(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    return math.fsum(values) / len(values) if values else math.nan


def intervals_overlap(mean_a: float, half_a: float, mean_b: float, half_b: float) -> bool:
    """Whether ``[mean_a - half_a, mean_a + half_a]`` and ``[mean_b - half_b, mean_b + half_b]`` intersect.

    False when any number is NaN: without two intervals there is nothing to compare.
    """
    nums = (mean_a, half_a, mean_b, half_b)
    if any(x is None or not math.isfinite(float(x)) for x in nums):
        return False
    return abs(mean_a - mean_b) <= half_a + half_b
