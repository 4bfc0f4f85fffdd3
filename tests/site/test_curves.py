"""Training-curve PNGs: drawn in worker processes when there are many, the same files as drawn one by one."""

from __future__ import annotations

from pathlib import Path

from bench.site.plots import curve_png, has_curve, render_curves


def _rows(k: int) -> list[dict]:
    rows = [{"phase": "qat", "epoch": 1, "step": s, "train_loss": 1.0 / (s + k), "train_top1": 50.0 + s % 7}
            for s in range(10, 110, 10)]
    return rows + [{"phase": "qat", "epoch": 1, "step": 100, "test_top1": 80.0 + k % 5, "test_loss": 0.4}]


def test_parallel_curves_are_the_files_drawn_one_by_one(tmp_path: Path) -> None:
    jobs = [(_rows(k), tmp_path / "pool" / f"{k}.png", f"cell {k}") for k in range(32)]
    render_curves(jobs, workers=2)  # 32 jobs: two workers (one per 16 jobs at most)
    for rows, path, title in jobs:
        one = curve_png(rows, tmp_path / "one" / path.name, title)
        assert one is not None and path.read_bytes() == one.read_bytes() and path.read_bytes()[:4] == b"\x89PNG"
    assert has_curve(_rows(0)) and not has_curve([{"phase": "qat", "epoch": 1}])
    assert curve_png([{"phase": "qat"}], tmp_path / "none.png", "none") is None
