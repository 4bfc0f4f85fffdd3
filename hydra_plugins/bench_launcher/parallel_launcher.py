"""``hydra/launcher=parallel``: run a sweep's cells on this machine, one process per cell, ``n_jobs`` at a time.

Every cell is a fresh process that runs it through Hydra's ``run_job``, exactly like the sequential launcher, with
``threads_per_job`` torch threads (default: cores // n_jobs), because several torch processes that each take every
core slow each other down several times over. The processes are forked from a fork server that imported torch and
bench once (``PRELOAD``; its only torch ops, decoding the default dataset, run on one thread, so no thread pool
exists to be forked), which saves every cell the seconds of those imports and the dataset's decoding; nothing else
is shared. A cell process that dies (killed, out of memory) fails that cell only; the others go on. Cell processes
die with their parent, the fork server (``PR_SET_PDEATHSIG``), which exits when the launcher does, so killing the
sweep never leaves orphan cells that would finish later and race a restart.

No ``from __future__ import annotations`` here: Hydra's plugin scan executes this module without registering it in
``sys.modules``, and dataclasses then cannot resolve string annotations.
"""


import ctypes
import logging
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

# imported once by the fork server, so that no cell process pays for them (seconds each); bench.data.preload also
# decodes the default dataset there once
PRELOAD = ["torch", "cloudpickle", "bench.runner", "bench.algos", "bench.models", "bench.data", "bench.cli.hydra_app",
           "bench.data.preload"]


@dataclass
class ParallelLauncherConf:
    """``hydra/launcher=parallel`` settings."""

    _target_: str = "hydra_plugins.bench_launcher.parallel_launcher.ParallelLauncher"
    n_jobs: int = 2  # cells running at once
    threads_per_job: int | None = None  # torch threads of each cell; None: max(1, cores // n_jobs)


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf, provider="bench")


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when the launcher dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cell(payload: bytes, threads: int, conn: Connection) -> None:
    """Body of one cell process: the steps of Hydra's BasicLauncher for one job; the JobReturn goes to ``conn``.

    ``payload`` (and the JobReturn sent back) is cloudpickled: Hydra's singletons hold OmegaConf resolvers defined as
    closures, and the config refers to this plugin's classes, which Hydra's plugin scan loaded outside sys.modules;
    the standard pickle refuses both.
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the launcher, which stops the cells
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cloudpickle
    import torch

    torch.set_num_threads(threads)
    hydra_context, config, task_function, overrides, idx, singleton_state = cloudpickle.loads(payload)
    Singleton.set_state(singleton_state)
    setup_globals()
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    ret = run_job(
        hydra_context=hydra_context, task_function=task_function, config=sweep_config,
        job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
    )
    if ret.status == JobStatus.FAILED:  # the exception object may not survive pickling: send its text
        ret.return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}")
    conn.send_bytes(cloudpickle.dumps(ret))
    conn.close()


def _died(overrides: list[str], idx: int, exitcode: int | None) -> JobReturn:
    """The JobReturn of a cell whose process ended without reporting (killed, crashed)."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = RuntimeError(f"cell #{idx} ({' '.join(overrides)}): its process died (exit code {exitcode})")
    return ret


class ParallelLauncher(Launcher):
    """Runs the jobs of a multirun as at most ``n_jobs`` concurrent processes (from a fork server), one per cell."""

    def __init__(self, n_jobs: int = 2, threads_per_job: int | None = None) -> None:
        if int(n_jobs) < 1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1")
        self.n_jobs = int(n_jobs)
        self.threads = int(threads_per_job) if threads_per_job else max(1, (os.cpu_count() or 1) // self.n_jobs)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """Run every job; a failing or dying cell does not stop the others (its JobReturn carries the error)."""
        import cloudpickle

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally, {self.n_jobs} at a time, {self.threads} thread(s) each")
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        state = Singleton.get_state()
        pending = list(enumerate(job_overrides))
        results: dict[int, JobReturn] = {}
        running: dict[Any, tuple[int, list[str], Any, Connection]] = {}  # sentinel -> (i, overrides, proc, conn)
        try:
            while pending or running:
                while pending and len(running) < self.n_jobs:
                    i, overrides = pending.pop(0)
                    idx = initial_job_idx + i
                    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                    payload = cloudpickle.dumps(
                        (self.hydra_context, self.config, self.task_function, list(overrides), idx, state)
                    )
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_cell, args=(payload, self.threads, send), name=f"cell-{idx}")
                    proc.start()
                    send.close()  # only the child holds the sending end: EOF once it is gone
                    running[proc.sentinel] = (i, list(overrides), proc, recv)
                # wait on the result pipes too, not only on the processes: a cell blocks in send() until its
                # result (larger than the pipe buffer) is read, so it would never exit before we read it
                pipes = {entry[3]: sentinel for sentinel, entry in running.items()}
                for ready in wait([*running, *pipes]):
                    sentinel = pipes.get(ready, ready)
                    if sentinel not in running:  # its pipe and its process were both ready: handled already
                        continue
                    i, overrides, proc, recv = running.pop(sentinel)
                    try:
                        results[i] = cloudpickle.loads(recv.recv_bytes())
                    except (EOFError, OSError):
                        proc.join()
                        results[i] = _died(overrides, initial_job_idx + i, proc.exitcode)
                    proc.join()
                    recv.close()
        finally:
            for _, _, proc, _ in running.values():  # interrupted: stop the cells still running
                proc.kill()
                proc.join()
        return [results[i] for i in range(len(job_overrides))]
