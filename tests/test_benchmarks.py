"""The speed benchmarks run (a few iterations; their numbers are measured by hand, never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_recon_speed_benchmark_reports_every_stage(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "recon_speed.py"), "--iters", "2", "--rounds", "1",
           "--threads", "1", "--images", "64", "--methods", "adaround,brecq", "--units", "resnet18_mini:layer2.0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line.split() for line in p.stdout.splitlines()[2:]]
    assert [r[1] for r in rows] == ["plain", "adaround:adaround", "brecq:brecq-weights", "brecq:brecq-acts"]
    assert all(r[0] == "resnet18_mini:layer2.0" for r in rows) and rows[0][-1] == "1.00"


def test_recon_speed_benchmark_bad_values_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, says in ((["--methods", "lsq"], "--methods 'lsq' is not a reconstruction method; accepted: "),
                       (["--units", "resnet18_mini:nope"], "resnet18_mini has no block 'nope'; accepted: layer1.0"),
                       (["--bits", "w4"], "--bits 'w4' invalid"), (["--iters", "1"], "--iters 1 too small")):
        p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recon_speed.py"), *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        err = p.stderr.strip()
        assert p.returncode == 1 and len(err.splitlines()) == 1 and says in err, err
