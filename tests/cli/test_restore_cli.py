"""``python -m bench restore`` end to end on real (tiny, synthetic-data) cells: the committed records come back into a
fresh runs folder, the sweep skips them, and the aggregator gives back the same rows, tables and bundle; results
aggregated before the bundle carried the whole record restore too; bad arguments are one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

SWEEP = ("run", "-m", "algo=ptq,lsq", "data=synthetic", "arch=tiny", "debug=smoke", "progress=false")


def _lines(results: Path) -> dict[str, dict]:
    text = gzip.decompress((results / "records.jsonl.gz").read_bytes()).decode()
    return {e["config_hash"]: e for e in map(json.loads, text.splitlines())}


def _tables(results: Path) -> dict[str, bytes]:
    """Every table the aggregator wrote (cells.csv and the bundle aside: they name the run folders)."""
    return {p.name: p.read_bytes() for p in sorted(results.iterdir())
            if p.suffix in (".csv", ".md") and p.name != "cells.csv"}


def _same_rows(a: Path, b: Path) -> None:
    ca = pd.read_csv(a / "cells.csv", dtype=str, keep_default_na=False).drop(columns="path")
    cb = pd.read_csv(b / "cells.csv", dtype=str, keep_default_na=False).drop(columns="path")
    pd.testing.assert_frame_equal(ca.sort_values("config_hash").reset_index(drop=True),
                                  cb.sort_values("config_hash").reset_index(drop=True))


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A sweep of two real cells (PTQ and QAT) and its aggregated results: (runs, results)."""
    import shutil

    tmp = tmp_path_factory.mktemp("committed")
    runs, results = tmp / "runs", tmp / "results"
    import importlib.util

    # the root conftest's runner (the run_bench fixture is function-scoped); by path: several conftest.py exist
    spec = importlib.util.spec_from_file_location("root_conftest", Path(__file__).parents[1] / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    p = conftest._run_bench(*SWEEP, f"runs_dir={runs}", tmp_path=tmp)
    assert p.returncode == 0, p.stderr[-2000:]
    assert conftest._run_bench("aggregate", f"runs={runs}", f"out={results}", tmp_path=tmp).returncode == 0
    shutil.rmtree(results.with_name("plots"), ignore_errors=True)
    return runs, results


def test_restored_records_are_skipped_and_aggregate_the_same(tmp_path: Path, run_bench, committed) -> None:
    runs, results = committed
    originals = {json.loads(f.read_text())["config_hash"]: json.loads(f.read_text()) for f in runs.rglob("result.json")}
    assert len(originals) == 2

    fresh = tmp_path / "fresh"
    p = run_bench("restore", f"results={results}", f"runs={fresh}", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "restore: 2 records written" in p.stdout
    restored = {json.loads(f.read_text())["config_hash"]: json.loads(f.read_text()) for f in fresh.rglob("result.json")}
    assert restored == originals  # the whole record, exactly (not rounded)
    lsq = next(f for f in fresh.rglob("result.json") if json.loads(f.read_text())["algo"] == "lsq")
    first = next(f for f in runs.rglob("result.json") if json.loads(f.read_text())["config_hash"]
                 == json.loads(lsq.read_text())["config_hash"])
    rows = [json.loads(x) for x in (lsq.parent / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows == [json.loads(x) for x in (first.parent / "metrics.jsonl").read_text().splitlines()]
    meta = json.loads((lsq.parent / "restored.json").read_text())
    assert meta["source"] == "record" and meta["missing"] == [] and meta["quantizers"]

    # the same sweep on the restored folder runs nothing: every cell is already recorded
    p = run_bench(*SWEEP, f"runs_dir={fresh}", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("skipped: identical cell already recorded") == 2
    assert len(list(fresh.rglob("result.json"))) == 2

    again = tmp_path / "again"
    assert run_bench("aggregate", f"runs={fresh}", f"out={again}", tmp_path=tmp_path).returncode == 0
    _same_rows(results, again)
    assert _tables(again) == _tables(results)
    a, b = _lines(results), _lines(again)
    assert a.keys() == b.keys()
    for h in a:  # the same line, and where it came from
        assert {k: v for k, v in b[h].items() if k != "restored"} == {k: v for k, v in a[h].items() if k != "restored"}
        assert a[h]["restored"] is None and b[h]["restored"]["source"] == "record"

    # restoring twice writes nothing new
    p = run_bench("restore", f"results={results}", f"runs={fresh}", tmp_path=tmp_path)
    assert p.returncode == 0 and "restore: 0 records written" in p.stdout and "2 already there" in p.stdout


def test_results_without_whole_records_restore_from_cells_csv(tmp_path: Path, run_bench, committed) -> None:
    """Results aggregated before the bundle carried ``record``: rebuilt from cells.csv (its floats as written there),
    same rows and tables."""
    import shutil

    runs = committed[0]
    results = tmp_path / "results"
    shutil.copytree(committed[1], results)
    old = [{k: v for k, v in e.items() if k not in ("record", "overrides", "restored")}
           for e in _lines(results).values()]
    (results / "records.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in old).encode()))

    fresh = tmp_path / "fresh"
    p = run_bench("restore", f"results={results}", f"runs={fresh}", tmp_path=tmp_path)
    assert p.returncode == 0 and "restore: 2 records written" in p.stdout, p.stderr[-2000:]
    originals = {json.loads(f.read_text())["config_hash"]: json.loads(f.read_text()) for f in runs.rglob("result.json")}
    cells = pd.read_csv(results / "cells.csv", dtype=str)
    status = dict(zip(cells["config_hash"], cells["status"], strict=True))
    for f in fresh.rglob("result.json"):
        rec = json.loads(f.read_text())
        orig = originals[rec["config_hash"]]
        kept = ("track", "algo", "calib_weight", "calib_act", "hw", "graph", "bn_fold", "arch", "data", "w_bits",
                "a_bits", "seed", "train_epochs", "git_sha", "started_at", "finished_at", "kind",
                "num_classes", "labels", "order", "config", "error")
        assert {k: rec[k] for k in kept} == {k: orig[k] for k in kept}
        # the status the tables gave it (a QAT run trained to chance is "nc" there): the same rows come back
        assert rec["status"] == status[rec["config_hash"]] and orig["status"] in ("ok", rec["status"])
        for k in ("fp32_top1", "top1", "top5", "init_top1", "wall_s"):  # cells.csv keeps 4 decimals
            assert rec[k] == pytest.approx(orig[k], abs=5e-5), k
        assert rec["extra"]["launch"]["torch_threads"] == orig["extra"]["launch"]["torch_threads"]
        meta = json.loads((f.parent / "restored.json").read_text())
        assert meta["source"] == "cells.csv" and "versions" in meta["missing"]
    again = tmp_path / "again"
    assert run_bench("aggregate", f"runs={fresh}", f"out={again}", tmp_path=tmp_path).returncode == 0
    _same_rows(results, again)
    assert _tables(again) == _tables(results)
    # restored once more from those results, a rebuilt record still says so
    third = tmp_path / "third"
    assert run_bench("restore", f"results={again}", f"runs={third}", tmp_path=tmp_path).returncode == 0
    metas = [json.loads(f.read_text()) for f in third.rglob("restored.json")]
    assert len(metas) == 2 and all(m["source"] == "cells.csv" and "versions" in m["missing"] for m in metas)
    assert {m["original_path"] for m in metas} == set(pd.read_csv(results / "cells.csv")["path"])


def test_restore_bad_arguments(tmp_path: Path, run_bench) -> None:
    (tmp_path / "empty").mkdir()
    for args, msg in (([f"runs={tmp_path / 'r'}", "results=nope"], "results=nope is not a directory"),
                      ([f"runs={tmp_path / 'r'}", f"results={tmp_path / 'empty'}"], "has no cells.csv"),
                      (["results=x"], "runs=DIR is required"),
                      ([f"runs={tmp_path / 'r'}", "bogus=1"], "unknown argument 'bogus=1'")):
        p = run_bench("restore", *args, tmp_path=tmp_path)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()  # nothing written


def _write_lines(results: Path, lines: list[dict]) -> None:
    (results / "records.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in lines).encode()))


def test_records_that_cannot_come_back_are_left_out_whole(tmp_path: Path, committed) -> None:
    """Checked before anything is written: a record left out leaves no folder; a bad bundle is a one-line error."""
    import shutil

    from bench.errors import BenchError
    from bench.restore import restore

    results = tmp_path / "results"
    shutil.copytree(committed[1], results)
    lines = list(_lines(results).values())
    lines[0]["config"]["seed"] = 99  # no longer the config its config_hash was computed from
    lines[1]["record"]["top1"] = float("nan")  # not writable as strict JSON
    _write_lines(results, lines)
    done = restore(results, tmp_path / "runs")
    assert done.written == [] and len(done.skipped) == 2
    reasons = dict(done.skipped)
    assert reasons[lines[0]["config_hash"]] == "its config does not hash to its config_hash"
    assert "cannot be written back" in reasons[lines[1]["config_hash"]]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))

    (results / "records.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(BenchError, match="unreadable or empty while cells.csv lists 2 records"):
        restore(results, tmp_path / "runs")
