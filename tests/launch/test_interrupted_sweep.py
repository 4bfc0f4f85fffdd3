"""A sweep killed at random points (kill -9 of single cells and of the launcher) and restarted loses no finished
record, duplicates none, and ends with the same tables as an uninterrupted run. ``slow`` (about 3 minutes)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

# eight real (non-smoke) cells on the synthetic set: PTQ and short QAT on four profiles, each a few seconds
CELLS = ["data=synthetic", "arch=tiny", "train.steps_per_epoch=15", "progress=false", "algo=ptq,lsq",
         "hw=academic,tvm,tensorrt,fbgemm"]
N_CELLS = 8


def _sweep(runs: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "-m", "hydra/launcher=parallel", *CELLS, f"runs_dir={runs}"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _cells(pid: int) -> list[int]:
    """The launcher's cell processes: the children of its fork server (not the server itself, nor multiprocessing's
    resource tracker)."""
    servers = [c for c in _children(pid) if b"forkserver" in _cmdline(c)]
    return [c for s in servers for c in _children(s)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _records(runs: Path) -> list[Path]:
    return sorted(runs.rglob("result.json"))


def _wait_records(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(_records(runs)) < n and proc.poll() is None:
        assert time.time() < deadline, f"fewer than {n} records after {timeout} s"
        time.sleep(0.2)


def _tables(run_bench, runs: Path, out: Path, tmp_path: Path) -> dict[str, str]:
    p = run_bench("aggregate", f"runs={runs}", f"out={out}", "plots=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    # everything but the per-record listings (paths, wall times), the index page and the timing columns (wall_s,
    # recon_s, ...: seconds measured in this run, not results)
    tables = {}
    for f in sorted(out.glob("*.csv")):
        if f.name in ("cells.csv", "failed.csv"):
            continue
        df = pd.read_csv(f)
        tables[f.name] = df.drop(columns=[c for c in df.columns if c.endswith("_s")]).to_csv(index=False)
    return tables


def _kill_a_fresh_cell(sweep: subprocess.Popen, rng: random.Random, max_delay: float) -> bool:
    """kill -9 a cell that started after the first record, after a random delay; False when the sweep ended first."""
    deadline = time.time() + 120
    while True:  # one that finished before the kill: take the next
        finishing = set(_cells(sweep.pid))  # may still be exiting after writing their records
        while not (fresh := [c for c in _cells(sweep.pid) if c not in finishing]):
            if sweep.poll() is not None:
                return False
            assert time.time() < deadline, "no new cell started"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, max(0.1, max_delay)))
        if not _alive(fresh[0]):
            continue
        try:
            os.kill(fresh[0], signal.SIGKILL)
            return True
        except ProcessLookupError:
            continue


def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path, bench_env, run_bench):
    rng = random.Random(0)
    env = bench_env(tmp_path)
    assert run_bench("pretrain", "data=synthetic", "arch=tiny", "progress=false", tmp_path=tmp_path).returncode == 0

    # the reference: the same sweep, uninterrupted
    ref = tmp_path / "ref"
    p = subprocess.run(_sweep(ref), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(_records(ref)) == N_CELLS

    # a kill lands mid-run when it comes within the fastest cell's time (a cell forked from the preloaded server can
    # take under a second on an idle machine)
    fastest = min(json.loads(p.read_text())["wall_s"] for p in _records(ref))
    # 1) kill -9 one running cell after a random delay: that cell fails, the others finish. If every cell finished
    # before a kill could land (an idle, fast machine), the sweep is run again in a fresh folder.
    for attempt in range(3):
        runs = tmp_path / f"runs{attempt}"
        sweep = subprocess.Popen(_sweep(runs), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        _wait_records(runs, 1, sweep)
        if _kill_a_fresh_cell(sweep, rng, 0.5 * fastest):
            break
        sweep.communicate(timeout=900)
    else:
        raise AssertionError("three sweeps finished before a running cell could be killed")
    _, err = sweep.communicate(timeout=900)
    assert sweep.returncode != 0 and b"its process died" in err  # reported, not silently lost
    first = len(_records(runs))
    assert first < N_CELLS

    # 2) restart, then kill -9 the launcher itself at a random point: its cells die with it (no orphans)
    sweep = subprocess.Popen(_sweep(runs), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _wait_records(runs, first + 1, sweep)
    time.sleep(rng.uniform(0.0, 2.0))
    cells = _cells(sweep.pid)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 20
    while any(_alive(c) for c in cells) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(c) for c in cells), "cell processes outlived the killed launcher"
    before = {p: p.read_bytes() for p in _records(runs)}

    # 3) restart to the end: finished cells are skipped, the rest run
    p = subprocess.run(_sweep(runs), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = _records(runs)
    assert all(path.read_bytes() == data for path, data in before.items())  # no finished record lost or rewritten
    hashes = [json.loads(path.read_text())["config_hash"] for path in recs]
    assert len(recs) == N_CELLS and len(set(hashes)) == N_CELLS  # nothing duplicated
    assert not list(runs.rglob("result.duplicate.json"))
    assert p.stdout.count("skipped: identical cell") == len(before)

    # the same tables as the uninterrupted run
    interrupted = _tables(run_bench, runs, tmp_path / "t_runs", tmp_path)
    assert interrupted == _tables(run_bench, ref, tmp_path / "t_ref", tmp_path)
