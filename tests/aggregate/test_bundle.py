"""records.jsonl.gz: one line per record of cells.csv with its config, curve, quantizer summary and deployment checks,
read from the run folders (missing or corrupt files give None parts), deterministic bytes, written by the CLI."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate import aggregate
from bench.aggregate.bundle import (
    BUNDLE_NAME,
    CURVE_ROWS,
    downsample,
    read_bundle,
    rounded,
    summarize_qparams,
    write_bundle,
)
from bench.cli import aggregate as cli

PER_CHANNEL = {"kind": "weight", "spec": "int4 sym per-channel", "signed": True, "qmin": -8, "qmax": 7,
               "scale": [0.5, 0.25, 0.125], "zero_point": [0, 0, 0], "learned": {"s": [0.5, 0.25, 0.125]},
               "algo_quantizer": "LSQQuantizer"}
PER_TENSOR = {"kind": "act", "spec": "uint4 asym per-tensor", "signed": False, "qmin": 0, "qmax": 15,
              "scale": [0.1], "zero_point": [3], "learned": {"s": [0.1], "beta": [-0.3]}}


def _steps(n: int) -> list[dict]:
    """``n`` training rows, a test row after every 100th."""
    rows = []
    for i in range(n):
        rows.append({"phase": "qat", "epoch": 1 + i // 100, "step": i % 100 + 1, "lr": 0.01 / (i + 1),
                     "train_loss": 2.0 - i / 1000, "train_top1": 10 + i / 20})
        if i % 100 == 99:
            rows.append({"phase": "qat", "epoch": 1 + i // 100, "step": 100, "test_top1": 50 + i / 100,
                         "test_loss": 1.0})
    return rows


@pytest.mark.parametrize("n", [0, 1, 199, 200, 201, 333, 5000])
def test_downsample_keeps_first_last_and_at_most_the_limit(n: int) -> None:
    rows = [{"i": i} for i in range(n)]
    out = downsample(rows)
    assert len(out) == min(n, CURVE_ROWS)
    if n:
        assert out[0] == rows[0] and out[-1] == rows[-1]
    idx = [r["i"] for r in out]
    assert idx == sorted(set(idx))  # in order, no row twice
    if n > CURVE_ROWS:  # evenly spread: no gap much wider than the mean
        gaps = [b - a for a, b in zip(idx, idx[1:], strict=False)]
        assert max(gaps) <= math.ceil((n - 1) / (CURVE_ROWS - 1)) + 1


def test_downsample_keeps_the_test_rows() -> None:
    rows = _steps(3000)  # 3030 rows, 30 of them test rows
    out = downsample(rows)
    assert len(out) == CURVE_ROWS and out[0] is rows[0] and out[-1] is rows[-1]
    assert [r for r in out if "test_top1" in r] == [r for r in rows if "test_top1" in r]


def test_summary_is_the_min_and_max_of_each_quantizer() -> None:
    s = summarize_qparams({"conv.weight_fq": PER_CHANNEL, "act_fq": PER_TENSOR, "junk": 3})
    assert set(s) == {"conv.weight_fq", "act_fq"}
    w, a = s["conv.weight_fq"], s["act_fq"]
    assert {k: w[k] for k in ("kind", "spec", "signed", "qmin", "qmax", "channels")} == {
        "kind": "weight", "spec": "int4 sym per-channel", "signed": True, "qmin": -8, "qmax": 7, "channels": 3}
    assert w["scale"] == {"min": min(PER_CHANNEL["scale"]), "max": max(PER_CHANNEL["scale"])}
    assert w["zero_point"] == {"min": 0, "max": 0} and "scale_value" not in w
    assert w["learned"] == {"s": {"min": 0.125, "max": 0.5}}
    assert w["range"] == {"min": min(s_ * -8 for s_ in PER_CHANNEL["scale"]),
                          "max": max(s_ * 7 for s_ in PER_CHANNEL["scale"])}
    assert a["channels"] == 1 and a["scale_value"] == 0.1 and a["zero_point_value"] == 3
    assert a["scale"] == {"min": 0.1, "max": 0.1} and a["zero_point"] == {"min": 3, "max": 3}
    assert a["range"] == {"min": 0.1 * (0 - 3), "max": 0.1 * (15 - 3)}
    assert a["learned"] == {"s": {"min": 0.1, "max": 0.1}, "beta": {"min": -0.3, "max": -0.3}}
    assert (w["index"], a["index"]) == (0, 1)  # the file's order, which sorted keys lose
    assert "algo_quantizer" not in w  # only the summary, nothing per channel
    assert summarize_qparams(None) is None and summarize_qparams([1, 2]) is None


def _runs(write_rec) -> list[Path]:
    """Three records: a full run folder (long curve, per-channel qparams, deploy and onnx checks), one without
    metrics and qparams, one whose metrics and qparams are corrupt."""
    full = write_rec("a_full", algo="lsq", hw="tensorrt", metrics=_steps(700),
                     extra={"qparams_json": "qparams.json",
                            "deploy": {"status": "ok", "int_top1": 87.91234567, "rounding": "half_up"},
                            "onnx": {"status": "ok", "ort_top1": 88.0, "ort_variant": {"ort_top1": 87.5}}})
    (full.parent / "qparams.json").write_text(json.dumps({"conv.weight_fq": PER_CHANNEL, "act_fq": PER_TENSOR}))
    bare = write_rec("b_bare", algo="ptq", hw="tvm", w=8, a=8)
    broken = write_rec("c_broken", algo="pact", hw="snpe", metrics=[])
    (broken.parent / "metrics.jsonl").write_text("not json\n{oops\n")
    (broken.parent / "qparams.json").write_text("{not json")
    return [full, bare, broken]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_aggregate_writes_one_line_per_record_of_cells_csv(tmp_path: Path, write_rec) -> None:
    full, bare, broken = _runs(write_rec)
    out = tmp_path / "out"
    aggregate(tmp_path / "runs", out=out, plots=False, ref_dir=None, log=lambda s: None)
    lines = _lines(out / BUNDLE_NAME)
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert [e["config_hash"] for e in lines] == [c["config_hash"] for c in cells]
    assert BUNDLE_NAME in (out / "index.md").read_text()
    by_path = {c["path"]: e for c, e in zip(cells, lines, strict=True)}
    e = by_path[str(full)]
    rec = json.loads(full.read_text())
    assert e["config"] == rec["config"]
    curve = _steps(700)
    assert len(e["curve"]) == CURVE_ROWS and e["curve"][0] == curve[0] and e["curve"][-1]["test_top1"] == 56.99
    summary = summarize_qparams({"conv.weight_fq": PER_CHANNEL, "act_fq": PER_TENSOR})
    assert e["quantizers"] == json.loads(json.dumps(rounded(summary)))
    assert e["quantizers"]["act_fq"]["range"] == {"min": -0.3, "max": 1.2}  # rounded to 6 significant digits
    assert e["deploy"] == {"status": "ok", "int_top1": 87.9123, "rounding": "half_up"}  # 6 significant digits
    assert e["onnx"]["ort_variant"] == {"ort_top1": 87.5}
    # the whole record but its config, not rounded: the committed results can give it back (bench restore)
    assert e["record"] == {k: v for k, v in rec.items() if k != "config"}
    assert e["record"]["extra"]["deploy"]["int_top1"] == 87.91234567 and e["restored"] is None
    for name, p in (("bare", bare), ("broken", broken)):
        e = by_path[str(p)]
        assert e["config"] == json.loads(p.read_text())["config"], name
        assert e["curve"] is None and e["quantizers"] is None and e["deploy"] is None and e["onnx"] is None, name


def test_missing_or_corrupt_result_json_gives_none_parts(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("{")
    recs = pd.DataFrame({"config_hash": ["a", "b", "c"],
                         "path": [str(tmp_path / "gone" / "result.json"), str(tmp_path / "bad" / "result.json"),
                                  math.nan]})
    lines = _lines(write_bundle(recs, tmp_path / "out"))
    assert [e["config_hash"] for e in lines] == ["a", "b", "c"]
    for e in lines:
        assert {k: v for k, v in e.items() if k != "config_hash"} == {
            "config": None, "curve": None, "quantizers": None, "deploy": None, "onnx": None, "record": None,
            "overrides": None, "restored": None}


def test_identical_bytes_on_two_writes(tmp_path: Path, write_rec) -> None:
    _runs(write_rec)
    a, b = tmp_path / "a", tmp_path / "b"
    aggregate(tmp_path / "runs", out=a, plots=False, ref_dir=None, log=lambda s: None)
    first = (a / BUNDLE_NAME).read_bytes()
    aggregate(tmp_path / "runs", out=a, plots=False, ref_dir=None, log=lambda s: None)
    aggregate(tmp_path / "runs", out=b, plots=False, ref_dir=None, log=lambda s: None)
    assert (a / BUNDLE_NAME).read_bytes() == first == (b / BUNDLE_NAME).read_bytes()
    assert first[4:8] == b"\0\0\0\0"  # gzip header: no timestamp
    text = gzip.decompress(first).decode()
    assert text.endswith("\n") and ", " not in text and ": " not in text  # compact separators
    assert list(json.loads(text.splitlines()[0])) == sorted(json.loads(text.splitlines()[0]))


def test_read_bundle(tmp_path: Path, write_rec) -> None:
    _runs(write_rec)
    aggregate(tmp_path / "runs", out=tmp_path / "o", plots=False, ref_dir=None, log=lambda s: None)
    read = read_bundle(tmp_path / "o" / BUNDLE_NAME)
    assert len(read) == 3 and all(k == v["config_hash"] for k, v in read.items())
    (tmp_path / "junk.gz").write_bytes(b"not gzip")
    assert read_bundle(tmp_path / "junk.gz") == {} and read_bundle(tmp_path / "none.gz") == {}


def test_cli_writes_the_bundle(tmp_path: Path, write_rec, capsys: pytest.CaptureFixture[str]) -> None:
    _runs(write_rec)
    out = tmp_path / "agg"
    assert cli.main([f"runs={tmp_path / 'runs'}", f"out={out}", "plots=false"]) == 0
    assert f"wrote records bundle: {out / BUNDLE_NAME}" in capsys.readouterr().out
    assert len(_lines(out / BUNDLE_NAME)) == 3
    assert cli.main(["--help"]) == 0 and BUNDLE_NAME in capsys.readouterr().out
