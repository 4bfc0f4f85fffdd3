"""Figures: files exist, are PNGs and are not trivial (no pixel tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.aggregate import plots as P
from bench.aggregate import tables as T

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path | None) -> bool:
    return path is not None and path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def _grid(rec, metrics_dir: Path | None = None) -> list[dict]:
    out = []
    for arch, base in (("resnet18", 70.0), ("mobilenetv2", 60.0)):
        for algo, d in (("lsq", 0.0), ("pact", -1.0), ("dsq", -2.0)):
            for i, hw in enumerate(["academic", "tensorrt", "tvm"]):
                out.append(rec(algo=algo, arch=arch, hw=hw, top1=base + d - i,
                               status="nc" if (algo, hw) == ("pact", "tvm") else "ok"))
    return out


def test_fig5_and_fig6(tmp_path: Path, cells_of, rec) -> None:
    cells = cells_of(_grid(rec))
    fig5 = P.fig5_heatmap(T.algo_std(cells), tmp_path / "fig5.png")
    fig6 = P.fig6_robustness(T.hw_robustness(cells), T.arch_robustness(cells), tmp_path / "fig6.png")
    assert _is_png(fig5) and _is_png(fig6)
    assert P.fig5_heatmap(pd.DataFrame(), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_training_curves_by_step_and_by_epoch(tmp_path: Path, write_rec) -> None:
    steps = [{"phase": "qat", "epoch": 1, "step": s, "lr": 0.01, "train_loss": 1.0, "train_top1": 50 + s / 10}
             for s in (25, 50, 75, 100)] + [{"phase": "qat", "epoch": 1, "step": 100, "test_top1": 60.0}]
    epochs = [{"phase": "qat", "epoch": e, "step": 100, "train_top1": 70.0, "test_top1": 60.0 + e}
              for e in (1, 2, 3)]
    write_rec("a", algo="lsq", hw="tvm", metrics=steps)
    write_rec("b", algo="pact", hw="tvm", metrics=steps)
    write_rec("c", algo="lsq", hw="snpe", metrics=epochs, epochs=3)
    write_rec("d", algo="pact", hw="snpe", metrics=epochs, epochs=3)
    write_rec("e", algo="lsq", hw="acl")  # no metrics.jsonl: skipped
    from bench.aggregate import records as R

    cells = R.group_seeds(R.dedup(R.records_frame(R.load_records(tmp_path / "runs")[0])))
    written = P.training_curves(cells, tmp_path / "out", "w4a4")
    assert sorted(p.name for p in written) == ["resnet18_snpe_w4a4.png", "resnet18_tvm_w4a4.png"]
    assert all(_is_png(p) for p in written)
    assert P.curve(steps, by_epoch=False) == ([25.0, 50.0, 75.0, 100.0], [52.5, 55.0, 57.5, 60.0])
    assert P.curve(epochs, by_epoch=True) == ([1.0, 2.0, 3.0], [61.0, 62.0, 63.0])
    assert P.n_epochs(steps) == 1 and P.n_epochs(epochs) == 3


def test_read_metrics_skips_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"epoch": 1, "test_top1": 5}\nnot json\n[1]\n')
    assert P.read_metrics(f) == [{"epoch": 1, "test_top1": 5}]
    assert P.read_metrics(tmp_path / "missing.jsonl") == []
