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
