"""bench.data.preload: the fork server decodes the default dataset once; failures are left to the cells."""

from __future__ import annotations

import os

import pytest
import torch

import bench.data.fashion_mnist as fm
from bench.data.preload import warm


@pytest.mark.skipif(not os.path.isdir(fm.DEFAULT_ROOT), reason="dataset-fashion-mnist not installed")
def test_warm_fills_the_cache_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    assert warm() is True
    assert torch.get_num_threads() == threads
    hits = fm.load_tensors.cache_info().hits
    fm.load_tensors(os.path.abspath(fm.DEFAULT_ROOT))
    assert fm.load_tensors.cache_info().hits == hits + 1


def test_a_missing_dataset_is_not_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(fm, "DEFAULT_ROOT", str(tmp_path / "nope"))
    assert warm() is False
