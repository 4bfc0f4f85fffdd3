"""Table order and display names of the grid axes' values, read from the records (one source: the registries).

A schema-2 record carries ``order`` and ``labels`` for its algo, hw, arch and calibration values (the registries'
metadata when the cell ran); :func:`bench.aggregate.records.flatten` puts them into the ``<axis>_order`` /
``<axis>_label`` columns. :class:`Axes` answers from those columns; a value no record describes falls back to
:mod:`bench.aggregate.legacy` (schema-1 records), and a value neither knows sorts after every known one, by name, and
is shown by its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.aggregate import legacy

AXES = ("algo", "hw", "arch", "calib_weight", "calib_act")
UNKNOWN = math.inf  # position of a value nobody describes: after every known one


def order_column(axis: str) -> str:
    """The records-frame column holding ``axis``'s table order."""
    return f"{axis}_order"


def label_column(axis: str) -> str:
    """The records-frame column holding ``axis``'s display name."""
    return f"{axis}_label"


META_COLUMNS = [c for a in AXES for c in (order_column(a), label_column(a))]


@dataclass(frozen=True)
class Axes:
    """Order and display name per axis and value, as the records say; the legacy maps for what they do not say.

    ``Axes()`` (no record metadata) is the legacy behaviour.
    """

    orders: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, frame: pd.DataFrame | None) -> Axes:
        """The metadata in a records or cells frame (its ``<axis>_order`` / ``<axis>_label`` columns).

        Where records disagree about a value (the registry changed between runs), the latest finished one wins.
        """
        if frame is None or frame.empty:
            return cls()
        if "finished_at" in frame.columns:
            frame = frame.sort_values("finished_at", kind="stable", na_position="first")
        orders: dict[str, dict[str, int]] = {}
        labels: dict[str, dict[str, str]] = {}
        for axis in AXES:
            if axis not in frame.columns:
                continue
            values = [str(v) for v in frame[axis]]
            if order_column(axis) in frame.columns:
                orders[axis] = {v: int(o) for v, o in zip(values, frame[order_column(axis)], strict=True)
                                if _is_int(o)}
            if label_column(axis) in frame.columns:
                labels[axis] = {v: lab for v, lab in zip(values, frame[label_column(axis)], strict=True)
                                if isinstance(lab, str) and lab}
        return cls(orders, labels)

    def position(self, axis: str, value: object) -> float:
        """Table position of ``value`` on ``axis`` (lower first); :data:`UNKNOWN` when nobody describes it."""
        name = str(value)
        pos = self.orders.get(axis, {}).get(name)
        if pos is None:
            pos = legacy.order(axis, name)
        return float(pos) if pos is not None else UNKNOWN

    def rank(self, axis: str, value: object) -> tuple[float, str]:
        """Sort key of ``value`` on ``axis``: its position, then its name (ties and unknown values by name)."""
        return self.position(axis, value), str(value)

    def ordered(self, axis: str, values: Iterable[Any]) -> list:
        """Distinct ``values`` in table order."""
        return sorted(set(values), key=lambda v: self.rank(axis, v))

    def label(self, axis: str, value: object) -> str:
        """Display name of ``value`` on ``axis``: the records', else the legacy one, else the value itself."""
        name = str(value)
        return self.labels.get(axis, {}).get(name) or legacy.label(axis, name) or name


def _is_int(x: object) -> bool:
    if isinstance(x, bool) or x is None:
        return False
    try:
        f = float(x)  # a column with missing values holds floats
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f.is_integer()
