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


def bench_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``python -m bench`` subprocess: FP32 cache under ``tmp_path``, this checkout importable."""
    import os

    return {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **extra}


def run_bench(*args: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``python -m bench ARGS`` in ``tmp_path``; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp_path, env=env or bench_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)
