"""Shared fixtures: composing configs the way the CLI does, with outputs and caches in tmp dirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bench.config import CONF_DIR, register_configs


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The composed config for ``overrides`` (no Hydra run dir, nothing written)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config whose runs and cache live under ``tmp_path`` (progress bars off)."""

    def _make(*overrides: str) -> DictConfig:
        base = [f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", "progress=false"]
        return compose_cfg(base + list(overrides))

    return _make


ROOT = Path(__file__).resolve().parent.parent


def _bench_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``python -m bench`` subprocess: FP32 cache under ``tmp_path``, this checkout importable."""
    import os

    return {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **extra}


def _run_bench(*args: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``python -m bench ARGS`` in ``tmp_path``; returns the CompletedProcess. On timeout the whole process group
    is killed (cells a launcher started hold the output pipes and would keep the test waiting)."""
    import os
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bench", *args]
    with subprocess.Popen(cmd, cwd=tmp_path, env=env or _bench_env(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"timed out after {timeout} s: {' '.join(args)}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


# test modules cannot import from conftest (several conftest.py exist): the helpers are handed out as fixtures
@pytest.fixture
def bench_env() -> Callable[..., dict[str, str]]:
    """``bench_env(tmp_path, **extra)``: the environment of a ``python -m bench`` subprocess."""
    return _bench_env


@pytest.fixture
def run_bench() -> Callable[..., object]:
    """``run_bench(*args, tmp_path=..., env=None)``: run ``python -m bench`` in ``tmp_path``."""
    return _run_bench
