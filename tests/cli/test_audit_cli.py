"""``python -m bench audit`` end to end on real (tiny, synthetic-data) PTQ cells: committed numbers come back within
tolerance; a committed number moved by hand is caught; bad arguments are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_audit_reruns_committed_cells(tmp_path: Path, run_bench) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    p = run_bench("run", "-m", "algo=ptq", "data=synthetic", "arch=tiny", "debug=smoke", "seed=0,1",
                  f"runs_dir={runs}", "progress=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    p = run_bench("aggregate", f"runs={runs}", f"out={results}", "plots=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    cells = pd.read_csv(results / "cells.csv")
    assert len(cells) == 2 and all("algo=ptq" in json.loads(o) for o in cells["overrides"])

    p = run_bench("audit", "n=2", f"results={results}", f"runs={tmp_path / 'audit'}", "kind=ptq",
                  tmp_path=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "audit: 2 of 2 records within tolerance" in p.stdout
    report = pd.read_csv(tmp_path / "audit" / "audit.csv")
    assert list(report["verdict"]) == ["within", "within"] and (report["diff"].abs() <= 1e-9).all()
    assert "python -m bench run" in (tmp_path / "audit" / "audit.md").read_text()

    # committed numbers that the code no longer gives, beyond the tolerance (the seed spread stays as it was)
    cells["top1"] += max(2 * cells["top1"].std(ddof=1), 0.5) + 0.1
    cells.to_csv(results / "cells.csv", index=False)
    p = run_bench("audit", "n=1", f"results={results}", f"runs={tmp_path / 'audit2'}", tmp_path=tmp_path)
    assert p.returncode == 1
    assert "audit: 0 of 1 records within tolerance" in p.stdout
    assert list(pd.read_csv(tmp_path / "audit2" / "audit.csv")["verdict"]) == ["outside"]


def test_audit_bad_arguments(tmp_path: Path, run_bench) -> None:
    for args, msg in ((["results=nope"], "results=nope is not a directory"), (["n=0"], "n=0 is not a positive"),
                      (["kind=cnn"], "unknown kind 'cnn'; accepted: all, qat, ptq"),
                      (["bogus=1"], "unknown argument 'bogus=1'")):
        p = run_bench("audit", *args, f"runs={tmp_path / 'r'}", tmp_path=tmp_path)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()  # nothing written
