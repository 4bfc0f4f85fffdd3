"""Seed statistics against independent formulas (statistics module, printed t tables)."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.aggregate.stats import finite, intervals_overlap, mean_or_nan, population_std, summarize, t975


@pytest.mark.parametrize(("df", "t"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (10, 2.228),
                                       (20, 2.086), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)])
def test_t975_matches_printed_tables(df: int, t: float) -> None:
    assert t975(df) == pytest.approx(t, abs=1.5e-3)


def test_t975_decreases_to_the_normal_quantile() -> None:
    ts = [t975(df) for df in range(1, 400)]
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert t975(10**6) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_summarize_three_seeds() -> None:
    vals = [70.1, 70.5, 69.9]
    s = summarize(vals)
    sd = statistics.stdev(vals)
    assert s.n == 3
    assert s.mean == pytest.approx(statistics.mean(vals))
    assert s.std == pytest.approx(sd)
    assert s.ci95 == pytest.approx(4.3027 * sd / math.sqrt(3))


def test_summarize_one_and_zero_values() -> None:
    one = summarize([71.0])
    assert (one.n, one.mean) == (1, 71.0) and math.isnan(one.std) and math.isnan(one.ci95)
    none = summarize([])
    assert none.n == 0 and math.isnan(none.mean)


def test_population_std_and_mean() -> None:
    vals = [69.3, 70.2, 67.7, 69.7, 69.8]
    assert population_std(vals) == pytest.approx(statistics.pstdev(vals))
    assert math.isnan(population_std([])) and math.isnan(mean_or_nan([]))
    assert mean_or_nan(vals) == pytest.approx(statistics.mean(vals))


def test_intervals_overlap() -> None:
    assert intervals_overlap(70.0, 0.5, 70.8, 0.4)  # [69.5, 70.5] and [70.4, 71.2]
    assert not intervals_overlap(70.0, 0.2, 70.8, 0.4)
    assert intervals_overlap(70.0, 0.5, 71.0, 0.5)  # touching counts
    assert not intervals_overlap(70.0, math.nan, 70.0, 0.5)  # one seed: no interval, no claim


def test_finite_drops_none_and_nan() -> None:
    assert finite([1.0, None, math.nan, 2, math.inf]) == [1.0, 2.0]
