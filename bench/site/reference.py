"""The papers' numbers beside ours: MQBench's tables as committed in ``results/reference/`` (ImageNet numbers).

On the mini track an arch ``resnet18_mini`` is compared with the paper's ``resnet18``, labelled as ImageNet numbers:
the mini track is Fashion-MNIST at 32 px, so only the ranking and the gaps are comparable, not the accuracies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DEFAULT_DIRS = (Path(__file__).resolve().parents[2] / "results" / "reference",)
MINI = "_mini"


@dataclass
class Reference:
    """The reference CSVs found, by file name, and the label of their numbers."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    label: str = "ImageNet (MQBench)"

    @classmethod
    def load(cls, dirs: tuple[Path, ...] = DEFAULT_DIRS) -> Reference:
        """Every ``mqbench_*.csv`` in the first of ``dirs`` that exists (none: an empty reference)."""
        for d in dirs:
            if d.is_dir():
                frames = {}
                for p in sorted(d.glob("*.csv")):
                    try:
                        frames[p.name] = pd.read_csv(p, dtype=str, keep_default_na=False)
                    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
                        continue
                return cls(frames)
        return cls()

    def _find(self, pattern: str) -> pd.DataFrame | None:
        for name, frame in self.frames.items():
            if re.search(pattern, name):
                return frame
        return None

    def value(self, stem: str, row: dict, group: str | None) -> str | None:
        """The paper's entry for one table slot (``row``: the CSV row; ``group``: its column group), or None.

        Tables 4, 5, 6, 7 (4-bit) and 10, and the long QAT views ``qat_w4a4_hw`` / ``qat_w4a4_academic``.
        """
        arch = str(row.get("arch", ""))
        base = arch[: -len(MINI)] if arch.endswith(MINI) else arch
        algo = str(row.get("algo", ""))
        four_bit = "_w4a4" in stem  # the QAT references are MQBench's 4-bit tables
        if re.match(r"table7_hw_w4a4$", stem):
            return _pick(self._find(r"table7"), {"arch": base, "algo": algo}, group)
        if re.match(r"qat_w4a4_hw$", stem):
            return _pick(self._find(r"table7"), {"arch": base, "algo": algo}, str(row.get("hw", "")))
        if re.match(r"table4_academic_w4a4$", stem):
            return _pick(self._find(r"table4"), {"arch": base, "algo": str(group)}, "benchmark_acc")
        if re.match(r"qat_w4a4_academic$", stem):
            return _pick(self._find(r"table4"), {"arch": base, "algo": algo}, "benchmark_acc")
        if stem.startswith("table5_") and four_bit:
            return _pick(self._find(r"table5"), {"arch": base, "algo": algo}, f"strategy_{group}")
        if stem.startswith("table6_") and four_bit:
            return _pick(self._find(r"table6"), {"arch": base, "algo": algo}, f"graph_{group}")
        bits = re.match(r"table10_ptq_w(\d+)a(\d+)$", stem)
        if bits:
            keys = {"arch": base, "bits": bits.group(1), "act_calibration": str(row.get("calib_act", "")),
                    "weight_calibration": str(row.get("calib_weight", ""))}
            ref = self._find(r"table10")
            mean = _pick(ref, keys, f"{group}_acc_mean")
            std = _pick(ref, keys, f"{group}_acc_std")
            return f"{mean} ± {std}" if mean and std else mean
        return None


def _pick(ref: pd.DataFrame | None, keys: dict[str, str], column: str | None) -> str | None:
    if ref is None or not column or column not in ref.columns:
        return None
    sel = ref
    for k, v in keys.items():
        if k not in sel.columns:
            return None
        sel = sel[sel[k] == v]
    if sel.empty:
        return None
    v = str(sel.iloc[0][column]).strip()
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        return v  # "NC"
    return f"{f:g}" if math.isfinite(f) else None
