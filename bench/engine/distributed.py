"""Multi-process training of one cell with torch.distributed (DDP); a single process makes every part a no-op.

A cell runs on several processes when it is started by ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) or
as one Slurm step of several tasks (``hydra.launcher.tasks_per_node=8``: submitit starts one task per GPU, the
rendezvous comes from the Slurm variables). Otherwise -- the default, and always on a CPU machine unless you launch
several processes yourself -- :func:`setup` returns the single-process context and nothing else changes.

Semantics, chosen so a cell gives the same number whatever the number of processes:

- the **global batch** stays the configured one: every rank takes its contiguous slice of the same seeded batch
  (:meth:`DistContext.shard`), so the averaged DDP gradient is the full-batch gradient and the learning rate needs
  no rescaling. The configured batch must be divisible by the world size; a last partial batch is dropped.
- BatchNorm statistics are per rank (as torchvision's reference without ``--sync-bn``); DDP broadcasts rank 0's
  buffers (BN running statistics, quantizer observers) before every forward.
- rank 0 writes everything (metrics, checkpoints, the record); every rank evaluates on its slice of the test set
  and the counts are summed.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from bench.data.base import split_bounds
from bench.errors import BenchError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a multi-process launch (read from the environment)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun" or "slurm"


@dataclass
class DistContext:
    """The process's rank, the world size and the device; ``world_size == 1`` is the no-op context."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    find_unused_parameters: bool = True

    @property
    def enabled(self) -> bool:
        """True when several processes train this cell together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes metrics, checkpoints and the record."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call in the training step: ``model`` itself, or a DDP wrapper sharing its parameters."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=self.find_unused_parameters
        )

    def shard(self, loader: Any, *, drop_last: bool) -> Any:
        """This rank's part of ``loader`` (every batch sliced, see the module docstring); ``loader`` itself on one
        process. ``drop_last`` drops a last partial batch (training: every rank must take the same number of steps)."""
        if not self.enabled:
            return loader
        if drop_last and loader.batch_size % self.world_size:
            raise BenchError(
                f"batch size {loader.batch_size} is not divisible by the world size {self.world_size}; "
                "set train.batch_size to a multiple of it"
            )
        if hasattr(loader, "shard"):  # loaders that read from disk load only their slice (no decoding per rank)
            return loader.shard(self.rank, self.world_size, drop_last=drop_last)
        return ShardedLoader(loader, self.rank, self.world_size, drop_last=drop_last)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (``values`` itself on one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t.tolist()

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank (so all ranks take the same branch, e.g. on divergence)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return bool(t.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BN running statistics, observer state); no-op on one process."""
        if self.enabled:
            for b in model.buffers():
                tdist.broadcast(b.data, src=0)

    def barrier(self) -> None:
        """Wait for every rank (no-op on one process)."""
        if self.enabled:
            tdist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """Record fields: world size, device and backend."""
        return {"world_size": self.world_size, "device": str(self.device), "dist_backend": self.backend}


class ShardedLoader:
    """Rank ``rank``'s contiguous slice of every batch of an in-memory Loader (global batch and order unchanged)."""

    def __init__(self, loader: Any, rank: int, world_size: int, *, drop_last: bool) -> None:
        self.loader, self.rank, self.world_size, self.drop_last = loader, rank, world_size, drop_last
        self.batch_size = loader.batch_size // world_size if drop_last else loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped loader (all ranks must use the same epoch)."""
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.loader)
        partial = self.loader.num_samples % self.loader.batch_size
        if self.drop_last and partial and not getattr(self.loader, "drop_last", False):
            n -= 1
        return n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, (x, y) in enumerate(self.loader):
            if i >= len(self):
                break
            lo, hi = split_bounds(x.shape[0], self.rank, self.world_size)
            if hi > lo:  # a last evaluation batch smaller than the world leaves some ranks without a slice
                yield x[lo:hi], y[lo:hi]


_CURRENT = DistContext()


def current() -> DistContext:
    """The context :func:`setup` made for this process (the single-process one before / without it)."""
    return _CURRENT


def detect(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The multi-process launch this process belongs to, or None for a single process.

    ``torchrun`` sets ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``. A Slurm step
    of several tasks (srun, or submitit with ``tasks_per_node > 1``) sets ``SLURM_STEP_NUM_TASKS`` / ``SLURM_PROCID``
    / ``SLURM_LOCALID``; the first host of the step's node list is the rendezvous and the port comes from the job id,
    so every task computes the same one. A Slurm *job* of several tasks outside an srun step (``sbatch -n 8`` running
    ``python`` directly) is one process and stays single.
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        return DistEnv(
            rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    world = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if world > 1 and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job = env.get("SLURM_JOB_ID", "0")
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else random.Random(job).randint(20000, 60000)
        return DistEnv(
            rank=int(env["SLURM_PROCID"]), world_size=world, local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=first_host(nodes), master_port=port, source="slurm",
        )
    return None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[003-005,9],cpu1`` -> ``gpu003``."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist.split("]")[0] + "]"
    if "[" not in head:
        return head
    prefix, rng = head.split("[", 1)
    first = rng.rstrip("]").split(",")[0].split("-")[0]
    return prefix + first


def setup(device: str = "auto", backend: str = "auto", *, find_unused_parameters: bool = True,
          timeout_min: float = 30.0, environ: Mapping[str, str] | None = None) -> DistContext:
    """Join the launch this process belongs to (if any) and pick the device; sets :func:`current`.

    One process: no process group, device ``cuda`` if asked for or if ``auto`` finds a GPU, else ``cpu``.
    Several: ``init_process_group`` with ``nccl`` on GPUs (one per local rank) or ``gloo`` on CPU.
    """
    global _CURRENT
    if device not in DEVICES:
        raise BenchError(f"unknown dist.device {device!r}; accepted: {', '.join(DEVICES)}")
    if backend not in BACKENDS:
        raise BenchError(f"unknown dist.backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("dist.device=cuda but torch sees no GPU; accepted here: auto, cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        ieee_float32()
    penv = detect(environ)
    if penv is None:
        _CURRENT = DistContext(device=torch.device("cuda" if use_cuda else "cpu"),
                               find_unused_parameters=find_unused_parameters)
        return _CURRENT
    if use_cuda:
        torch.cuda.set_device(penv.local_rank)
    dev = torch.device("cuda", penv.local_rank) if use_cuda else torch.device("cpu")
    be = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
    if be == "nccl" and not use_cuda:
        raise BenchError("dist.backend=nccl needs GPUs (dist.device=cpu or none found); accepted here: auto, gloo")
    if not tdist.is_initialized():
        tdist.init_process_group(
            be, init_method=f"tcp://{penv.master_addr}:{penv.master_port}", rank=penv.rank,
            world_size=penv.world_size, timeout=datetime.timedelta(minutes=timeout_min),
        )
    log.info("distributed: rank %d of %d (%s, %s on %s)", penv.rank, penv.world_size, penv.source, be, dev)
    _CURRENT = DistContext(penv.rank, penv.world_size, penv.local_rank, dev, be, find_unused_parameters)
    return _CURRENT


def ieee_float32() -> None:
    """Full float32 in CUDA convolutions and matmuls. cuDNN runs float32 convolutions in TF32 (10-bit mantissa) by
    default on Ampere and later: the fake-quant model then no longer computes what the integer target computes
    (codes flip at rounding boundaries). Measured on an H200, `bench check-real algo=lsq hw=fbgemm debug=smoke`:
    fake-quant vs integer predictions agree on 96.21% with TF32, 99.99% without it (100.00% on the CPU)."""
    # the flags, not torch >= 2.9's fp32_precision API: with that one set, reading allow_tf32 raises
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def teardown() -> None:
    """Leave the process group (if any) and go back to the single-process context."""
    global _CURRENT
    if _CURRENT.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
    _CURRENT = DistContext()
