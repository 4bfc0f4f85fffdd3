"""A real one-node Slurm cluster (scripts/slurm/start.sh): a sweep through ``hydra/launcher=slurm`` writes every
record; a cell requeued mid-run resumes from its checkpoint and ends with one record. ``slow``: CI runs these after
the fast suite (``make test-cluster``); they need root and Debian's slurm-wlm + munge (scripts/slurm/install.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

SMOKE = ["data=synthetic", "arch=tiny", "debug=smoke", "progress=false", "threads=1"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20"]


def _have_slurm() -> str | None:
    missing = [b for b in ("slurmctld", "slurmd", "munged") if not (shutil.which(b) or Path(f"/usr/sbin/{b}").exists())]
    if missing:
        return f"not installed: {', '.join(missing)} (bash scripts/slurm/install.sh)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Environment variables of a running cluster: the user's (SLURM_CONF set and answering) or one started here."""
    reason = _have_slurm()
    if reason:
        if os.environ.get("BENCH_REQUIRE_SLURM"):  # CI: a missing cluster is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    if os.environ.get("SLURM_CONF") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield {}
        return
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(ROOT / "scripts/slurm/start.sh"), str(state), "4"], capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    env = {"SLURM_CONF": str(state / "slurm.conf"), "PATH": f"{state / 'bin'}:{os.environ['PATH']}"}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/slurm/stop.sh"), str(state)], capture_output=True, timeout=60)


def _records(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs.rglob("result.json"))]


def test_sweep_on_slurm_writes_every_record(cluster, tmp_path, bench_env, run_bench):
    runs = tmp_path / "runs"
    env = bench_env(tmp_path, **cluster)
    p = run_bench("run", "-m", *SLURM, *SMOKE, "algo=ptq,lsq", "hw=academic,tvm,tensorrt", f"runs_dir={runs}",
                  tmp_path=tmp_path, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    recs = _records(runs)
    assert sorted((r["algo"], r["hw"]) for r in recs) == sorted(
        (a, h) for a in ("ptq", "lsq") for h in ("academic", "tvm", "tensorrt"))
    assert all(r["status"] == "ok" and r["top1"] is not None for r in recs)
    jobs = {r["extra"]["launch"]["slurm_job_id"] for r in recs}
    assert len(jobs) == 6 and len({j.split("_")[0] for j in jobs}) == 1  # one job array, one task per cell
    # the sweep again: every cell is skipped by config_hash, no new record
    p = run_bench("run", "-m", *SLURM, *SMOKE, "algo=ptq,lsq", "hw=academic,tvm,tensorrt", f"runs_dir={runs}",
                  tmp_path=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(_records(runs)) == 6


def test_one_cell_on_two_tasks_trains_with_ddp(cluster, tmp_path, bench_env, run_bench):
    """``tasks_per_node=2``: Slurm starts the cell twice in one step; the tasks join one gloo process group (DDP on
    CPU) and rank 0 writes the only record."""
    runs = tmp_path / "runs"
    p = run_bench("run", "-m", *SLURM, "hydra.launcher.tasks_per_node=2", *SMOKE, "algo=lsq", "hw=tvm",
                  f"runs_dir={runs}", tmp_path=tmp_path, env=bench_env(tmp_path, **cluster))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    recs = _records(runs)
    assert len(recs) == 1 and recs[0]["status"] == "ok" and recs[0]["top1"] is not None
    launch = recs[0]["extra"]["launch"]
    assert launch["world_size"] == 2 and launch["dist_backend"] == "gloo" and "slurm_job_id" in launch


def _squeue(env: dict[str, str]) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True, env=env).stdout
    return [tuple(line.split("|")) for line in out.split()]


def test_requeued_cell_resumes_from_its_checkpoint(cluster, tmp_path, bench_env, run_bench):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    env = bench_env(tmp_path, **cluster)
    # the FP32 baseline first, so that the QAT cell's epochs are what runs on the cluster
    assert run_bench("pretrain", *SMOKE, tmp_path=tmp_path, env=env).returncode == 0
    epochs = 30
    cmd = [sys.executable, "-m", "bench", "run", "-m", *SLURM, *SMOKE, "algo=lsq", f"train.epochs={epochs}",
           "debug.max_train_batches=6", f"runs_dir={runs}"]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not list((cache / "qat_partial").glob("*.pt")):  # a finished epoch is checkpointed
            assert time.time() < deadline and sweep.poll() is None, "the cell never checkpointed"
            time.sleep(0.2)
        running = [j for j, state in _squeue(env) if state == "RUNNING"]
        assert len(running) == 1
        subprocess.run(["scontrol", "requeue", running[0]], check=True, env=env)
        out, _ = sweep.communicate(timeout=400)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    recs = _records(runs)
    assert len(recs) == 1 and not list(runs.rglob("result.duplicate.json"))
    rec = recs[0]
    assert rec["status"] == "ok" and rec["train_epochs"] == epochs
    assert rec["extra"]["launch"]["slurm_restart_count"] >= 1  # it really was requeued
    assert 1 <= rec["extra"]["resumed_from_epoch"] < epochs  # and went on from its checkpoint, not from scratch
    metrics = [json.loads(line) for line in (Path(rec_path(runs)) / "metrics.jsonl").read_text().splitlines()]
    done = sorted(m["epoch"] for m in metrics if m.get("phase") == "qat" and "test_top1" in m)
    assert set(done) == set(range(1, epochs + 1))  # no epoch lost


def rec_path(runs: Path) -> Path:
    return next(runs.rglob("result.json")).parent
