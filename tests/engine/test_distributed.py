"""DDP of one cell (bench.engine.distributed): launch detection, batch sharding, and two gloo ranks on CPU giving the
same training as one process (the global batch is unchanged), then the whole CLI under torchrun."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.data.base import TensorLoader, split_bounds
from bench.engine import TrainRecipe, distributed, evaluate, train
from bench.engine.distributed import DistContext, ShardedLoader, detect, first_host
from bench.errors import BenchError

RECIPE = TrainRecipe(epochs=2, lr=0.2, weight_decay=1e-4, warmup_epochs=0.5)


def test_single_process_is_a_no_op():
    assert detect({}) is None
    assert detect({"WORLD_SIZE": "1", "RANK": "0"}) is None
    # a Slurm job of 4 tasks running python directly (no srun step of several tasks) is one process
    assert detect({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}) is None
    ctx = distributed.setup("cpu", "auto", environ={})
    assert not ctx.enabled and ctx.is_main and ctx.device == torch.device("cpu") and distributed.current() is ctx
    loader = TensorLoader(torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long), 4, shuffle=False, seed=0)
    assert ctx.shard(loader, drop_last=True) is loader
    assert ctx.sum([1.0, 2.0]) == [1.0, 2.0] and ctx.all_true(False) is False
    model = nn.Linear(2, 2)
    assert ctx.wrap(model) is model
    distributed.teardown()


def test_cuda_runs_full_float32(monkeypatch):
    """On a GPU, convolutions and matmuls in IEEE float32, not TF32 (the fake-quant model must compute what the
    integer target computes); the CPU leaves the flags alone. Flags only: no GPU needed."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        distributed.setup("cpu", "auto", environ={})
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        ctx = distributed.setup("cuda", "auto", environ={})
        assert ctx.device.type == "cuda"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
        distributed.teardown()


def test_detects_torchrun_and_slurm_steps():
    env = detect({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert env is not None and (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (
        3, 4, 1, "n1", 1234) and env.source == "torchrun"
    slurm = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "42",
             "SLURM_STEP_NODELIST": "gpu[003-006]"}
    a, b = detect(slurm), detect({**slurm, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert a is not None and b is not None and a.source == "slurm"
    assert (a.rank, a.world_size, a.local_rank, a.master_addr) == (5, 8, 1, "gpu003")
    assert a.master_port == b.master_port and 20000 <= a.master_port <= 60000  # every task derives the same port


@pytest.mark.parametrize("nodes, first", [
    ("node7", "node7"), ("a1,b2", "a1"), ("gpu[003-005,9]", "gpu003"), ("gpu[12,14],cpu1", "gpu12"),
    ("rack1-n[2-3]", "rack1-n2"),
])
def test_first_host_of_a_nodelist(nodes, first):
    assert first_host(nodes) == first


def test_bad_device_and_backend_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown dist.device 'tpu'; accepted: auto, cpu, cuda"):
        distributed.setup("tpu", "auto", environ={})
    with pytest.raises(BenchError, match="unknown dist.backend 'mpi'; accepted: auto, gloo, nccl"):
        distributed.setup("cpu", "mpi", environ={})
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="dist.device=cuda but torch sees no GPU"):
            distributed.setup("cuda", "auto", environ={})


@pytest.mark.parametrize("n, world", [(8, 2), (7, 2), (5, 4), (3, 4), (1, 3), (0, 2)])
def test_split_bounds_matches_tensor_split(n, world):
    ref = torch.tensor_split(torch.arange(n), world)
    got = [split_bounds(n, r, world) for r in range(world)]
    assert [hi - lo for lo, hi in got] == [len(t) for t in ref]
    assert [list(range(lo, hi)) for lo, hi in got] == [t.tolist() for t in ref]


def _loader(n: int, bs: int, shuffle: bool = True) -> TensorLoader:
    g = torch.Generator().manual_seed(n)
    return TensorLoader(torch.randn(n, 1, 4, 4, generator=g), torch.arange(n), bs, shuffle=shuffle, seed=3)


@pytest.mark.parametrize("n, drop_last, steps", [(40, True, 5), (44, True, 5), (44, False, 6)])
def test_ranks_share_each_global_batch(n, drop_last, steps):
    full = _loader(n, 8)
    full.set_epoch(2)
    ref = list(full)
    parts = []
    for rank in range(2):
        s = ShardedLoader(_loader(n, 8), rank, 2, drop_last=drop_last)
        s.set_epoch(2)
        parts.append(list(s))
        assert len(s) == steps == len(parts[-1])
    for i in range(steps):  # rank 0 then rank 1 is the single-process batch, in order
        x = torch.cat([parts[0][i][0], parts[1][i][0]])
        y = torch.cat([parts[0][i][1], parts[1][i][1]])
        assert torch.equal(x, ref[i][0]) and torch.equal(y, ref[i][1])


def test_training_batch_must_split_evenly():
    ctx = DistContext(rank=0, world_size=3)
    with pytest.raises(BenchError, match="batch size 8 is not divisible by the world size 3"):
        ctx.shard(_loader(16, 8), drop_last=True)
    assert len(list(ctx.shard(_loader(16, 8), drop_last=False))) == 2  # evaluation takes uneven slices


def _problem() -> tuple[nn.Module, TensorLoader, TensorLoader]:
    # no BatchNorm: DDP keeps BN statistics per rank, everything else must match one process exactly
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))
    g = torch.Generator().manual_seed(1)
    x, xt = torch.randn(40, 1, 4, 4, generator=g), torch.randn(21, 1, 4, 4, generator=g)
    w = torch.randn(16, 5, generator=g)
    y, yt = (x.flatten(1) @ w).argmax(1), (xt.flatten(1) @ w).argmax(1)
    return (model, TensorLoader(x, y, 8, shuffle=True, seed=0),
            TensorLoader(xt, yt, 8, shuffle=False, seed=0))  # 21 test images: the last batch splits 3 / 2


def _train_and_save(path: Path) -> None:
    model, tr, te = _problem()
    res = train(model, tr, te, RECIPE, progress=False)
    torch.save({"state": model.state_dict(), "ev": evaluate(model, te), "history": res.history}, path)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    env = {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    ctx = distributed.setup("cpu", "auto", environ=env, timeout_min=2)
    assert ctx.enabled and ctx.backend == "gloo" and ctx.rank == rank
    try:
        _train_and_save(Path(out) / f"rank{rank}.pt")
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_like_one_process(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    _train_and_save(tmp_path / "single.pt")
    r0, r1, one = (torch.load(tmp_path / f, weights_only=False) for f in ("rank0.pt", "rank1.pt", "single.pt"))
    for k, v in one["state"].items():
        assert torch.equal(r0["state"][k], r1["state"][k])  # DDP keeps the ranks identical
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)  # averaged gradients = full batch
    assert r0["ev"]["n"] == one["ev"]["n"] == 21  # every test image once, the uneven last batch included
    assert r0["ev"]["top1"] == r1["ev"]["top1"] == one["ev"]["top1"]
    assert r0["ev"]["loss"] == pytest.approx(one["ev"]["loss"], rel=1e-5)
    for a, b in zip(r0["history"], one["history"], strict=True):  # epoch statistics summed over the ranks
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_top1"] == b["train_top1"] and a["test_top1"] == b["test_top1"] and a["step"] == b["step"]
    assert one["history"][-1]["test_top1"] > one["history"][0]["test_top1"] - 1e-9  # it did learn something


def test_torchrun_cell_writes_one_record(tmp_path, bench_env):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "bench", "run", "algo=lsq", "data=synthetic", "arch=tiny", "debug=smoke", "threads=1",
           "progress=false", f"runs_dir={runs}"]
    p = subprocess.run(cmd, cwd=tmp_path, env=bench_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    records = list(runs.rglob("result.json"))
    assert len(records) == 1  # rank 0 writes it; rank 1's run dir is removed
    assert len([d for d in (runs / "test").iterdir() if d.is_dir()]) == 1
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "ok" and rec["top1"] is not None
    assert rec["extra"]["launch"]["world_size"] == 2 and rec["extra"]["launch"]["dist_backend"] == "gloo"
