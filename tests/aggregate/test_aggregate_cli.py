"""``python -m bench aggregate``: arguments, errors, outputs per track, summary line.

(Named test_aggregate_cli.py, not test_cli.py: tests/cli/test_cli.py exists and the suite has no __init__.py
files, so two test modules with one basename would break collection.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.__main__ import VERBS
from bench.cli import aggregate as cli


def _grid(write_rec, track: str = "fmnist-mini") -> None:
    steps = [{"phase": "qat", "epoch": 1, "step": s, "train_top1": 50 + s / 10} for s in (25, 50, 75)]
    for algo, d in (("lsq", 0.0), ("pact", -0.5)):
        for i, hw in enumerate(["academic", "tensorrt", "snpe"]):
            for seed in (0, 1):
                write_rec(f"{track}/{algo}_{hw}_s{seed}", algo=algo, hw=hw, seed=seed, track=track,
                          top1=70.0 + d - i + seed * 0.2, metrics=steps)


def test_verb_is_registered() -> None:
    assert VERBS["aggregate"][0] == "bench.cli.aggregate"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(cli.USAGE) and "out=DIR" in out and "<out>/<track>/" in out
    # every table the aggregator writes is listed, the mini track's views among them
    for name in ("table7_hw_<bits>", "table11_init", "deploy_check", "ptq_<bits>", "ptq_calib_<n>bit",
                 "ptq_bn_calib_<n>bit", "qat_<bits>_hw", "qat_<bits>_academic_<e>ep", "ptq_advanced"):
        assert name in out, name


def test_unknown_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["foo=1"]) == 2
    assert capsys.readouterr().err == "error: unknown argument 'foo=1'; accepted: runs=, out=, track=, plots=\n"
    assert cli.main(["plots=maybe"]) == 2


def test_missing_runs_dir_and_no_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([f"runs={tmp_path / 'nope'}"]) == 2
    assert capsys.readouterr().err == f"error: runs={tmp_path / 'nope'} does not exist\n"
    (tmp_path / "empty").mkdir()
    assert cli.main([f"runs={tmp_path / 'empty'}", f"out={tmp_path / 'o'}"]) == 1
    assert capsys.readouterr().err.startswith("error: no result records under")


def test_single_track_into_out_dir(tmp_path: Path, write_rec, capsys: pytest.CaptureFixture[str]) -> None:
    _grid(write_rec)
    write_rec("fmnist-mini/broken", algo="dsq", hw="tvm", top1=None, status="failed", error="boom")
    bad = tmp_path / "runs" / "junk" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{")
    out = tmp_path / "agg"
    assert cli.main([f"runs={tmp_path / 'runs'}", f"out={out}"]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped corrupt record {bad}:" in captured.err
    lines = captured.out.splitlines()
    assert lines[-1] == f"aggregated 13 records (6 cells, 1 failed, 1 rejected) -> {out}/"
    assert any(line.startswith("wrote table7_hw_w4a4:") for line in lines)
    for name in ("table7_hw_w4a4.csv", "table7_hw_w4a4.md", "table4_academic_w4a4.md", "algo_std_w4a4.csv",
                 "best_algo_w4a4_counts.csv", "cells.csv", "failed.csv", "index.md", "fig5_algo_std_w4a4.png",
                 "fig6_robustness_w4a4.png", "curves/resnet18_snpe_w4a4.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "table7_hw_w4a4.csv").open()))
    lsq = next(r for r in rows if r["algo"] == "lsq")
    assert float(lsq["academic_mean"]) == pytest.approx(70.1) and lsq["academic_n"] == "2"
    assert lsq["academic_overlaps_next"] in ("True", "False") and float(lsq["academic_ci95"]) > 0
    failed = list(csv.DictReader((out / "failed.csv").open()))
    assert [f["error"] for f in failed] == ["boom"] and failed[0]["path"].endswith("broken/result.json")
    assert len(list(csv.DictReader((out / "cells.csv").open()))) == 13
    index = (out / "index.md").read_text()
    assert "- rejected (whole runs dir): 1" in index and "[table7_hw_w4a4.md](table7_hw_w4a4.md)" in index
    assert "`abc123`: 13 record(s)" in index
    assert not list(out.rglob(".*.tmp"))


def test_every_track_into_its_own_dir(tmp_path: Path, write_rec, capsys: pytest.CaptureFixture[str]) -> None:
    _grid(write_rec, "fmnist-mini")
    write_rec("imagenet/x", algo="ptq", hw="snpe", w=8, a=8, track="imagenet")
    out = tmp_path / "results"
    assert cli.main([f"runs={tmp_path / 'runs'}", f"out={out}", "plots=false"]) == 0
    assert (out / "fmnist-mini" / "table7_hw_w4a4.md").is_file()
    assert (out / "imagenet" / "table10_ptq_w8a8.md").is_file()
    assert not (out / "imagenet" / "table7_hw_w4a4.md").exists()
    assert not list(out.rglob("*.png"))
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("aggregated")]
    assert summary == [f"aggregated 12 records (6 cells, 0 failed, 0 rejected) -> {out / 'fmnist-mini'}/",
                       f"aggregated 1 records (1 cells, 0 failed, 0 rejected) -> {out / 'imagenet'}/"]
    assert cli.main([f"runs={tmp_path / 'runs'}", f"out={tmp_path / 'one'}", "track=imagenet", "plots=false"]) == 0
    assert (tmp_path / "one" / "table10_ptq_w8a8.csv").is_file()
    assert cli.main([f"runs={tmp_path / 'runs'}", "track=cifar"]) == 1
