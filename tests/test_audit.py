"""bench.audit: the draw, the re-run command, the tolerance rule and the verdicts (no process is started here; the
end-to-end audit of real cells is tests/cli/test_audit_cli.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench import audit as A
from bench.errors import BenchError


def _cells(n: int = 6) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows.append({"config_hash": f"h{i:02d}", "cell_id": f"c{i // 2}", "seed": i % 2, "status": "ok",
                     "top1": 80.0 + i, "kind": "ptq" if i < 4 else "qat", "wall_s": 5.0 + 10 * i, "torch_threads": 1,
                     "overrides": json.dumps([f"algo=a{i}", "runs_dir=/x", "progress=False", "hydra.launcher.n_jobs=2",
                                              f"seed={i % 2}"])})
    return pd.DataFrame(rows)


def test_tolerance_is_two_seed_std_with_a_floor() -> None:
    assert A.tolerance(1.0) == 2.0
    assert A.tolerance(0.1) == 0.5
    assert A.tolerance(math.nan) == 0.5  # one seed: the floor


def test_spread_is_the_sample_std_of_each_cells_seeds() -> None:
    s = A.spread_of(_cells())
    assert s["c0"] == pytest.approx(math.sqrt(((80 - 80.5) ** 2 + (81 - 80.5) ** 2) / 1))


def test_command_drops_where_it_ran_and_adds_its_threads() -> None:
    row = _cells().iloc[3]
    assert A.command(row) == ["algo=a3", "seed=1", "threads=1"]


def test_candidates_and_draw() -> None:
    cells = _cells()
    assert list(A.candidates(cells, "ptq")["config_hash"]) == ["h00", "h01", "h02", "h03"]
    assert list(A.candidates(cells, "all", max_wall=20)["config_hash"]) == ["h00", "h01"]
    cells.loc[0, "status"] = "failed"
    cells.loc[1, "overrides"] = None
    assert "h00" not in set(A.candidates(cells)["config_hash"]) and "h01" not in set(A.candidates(cells)["config_hash"])
    pool = A.candidates(_cells())
    a, b = A.draw(pool, 3, seed=7), A.draw(pool, 3, seed=7)
    assert list(a["config_hash"]) == list(b["config_hash"]) and len(set(a["config_hash"])) == 3
    assert len(A.draw(pool, 50, seed=0)) == len(pool)


def _outcome(committed: float = 80.0, tol: float = 0.5) -> A.Outcome:
    return A.Outcome("h00", "python -m bench run algo=a0", committed, tol, math.nan, 1)


def test_compare_verdicts() -> None:
    rec = {"status": "ok", "config_hash": "h00", "top1": 80.4}
    assert A.compare(_outcome(), rec, "").verdict == "within"
    assert A.compare(_outcome(), {**rec, "top1": 80.6}, "").verdict == "outside"
    assert A.compare(_outcome(tol=1.0), {**rec, "top1": 80.6}, "").verdict == "within"
    changed = A.compare(_outcome(), {**rec, "config_hash": "zz"}, "")
    assert changed.verdict == "config changed" and "h00 -> zz" in changed.detail
    failed = A.compare(_outcome(), {"status": "failed", "error": "boom"}, "")
    assert failed.verdict == "failed" and failed.detail == "boom"
    assert A.compare(_outcome(), None, "last line").detail == "last line"


def test_read_cells_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="is not a directory"):
        A.read_cells(tmp_path / "nope")
    with pytest.raises(BenchError, match="has no cells.csv"):
        A.read_cells(tmp_path)
    _cells().drop(columns=["overrides"]).to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(BenchError, match="lacks the column"):
        A.read_cells(tmp_path)


def test_report_names_the_cells_outside() -> None:
    good = A.compare(_outcome(), {"status": "ok", "config_hash": "h00", "top1": 80.1}, "")
    bad = A.compare(A.Outcome("h01", "python -m bench run algo=a1", 70.0, 0.5, 0.1, 3),
                    {"status": "ok", "config_hash": "h01", "top1": 72.0}, "")
    md = A.markdown([good, bad], {"commit": "abc"})
    assert "**1 of 2 within tolerance**" in md and "`h01` outside" in md and "- commit: abc" in md
    f = A.frame([good, bad])
    assert list(f["verdict"]) == ["within", "outside"] and f["diff"].iloc[1] == pytest.approx(2.0)


def test_a_moved_number_names_the_cpus() -> None:
    rec = {"status": "ok", "config_hash": "h00", "top1": 70.0,
           "extra": {"launch": {"cpu": "AMD EPYC (family 25, model 1)", "cpu_capability": "AVX2"}}}
    here = "AMD EPYC (family 25, model 1); AVX2"
    other = A.compare(A.Outcome("h00", "c", 80.0, 0.5, math.nan, 1, committed_cpu="AMD EPYC (family 25, model 17); "
                                "AVX512"), rec, "")
    assert other.verdict == "outside" and other.new_cpu == here
    assert "family 25, model 17" in other.detail and "re-run on " + here in other.detail
    same = A.compare(A.Outcome("h00", "c", 80.0, 0.5, math.nan, 1, committed_cpu=here), rec, "")
    assert same.detail.startswith("same CPU")
    unknown = A.compare(_outcome(), rec, "")
    assert "does not say its CPU" in unknown.detail
    assert A.compare(_outcome(70.2), rec, "").detail == ""  # within: nothing to explain
    row = A.frame([other]).iloc[0]
    assert row["committed_cpu"].endswith("AVX512") and row["rerun_cpu"] == here
