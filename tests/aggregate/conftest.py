"""Fake result records for the aggregator tests: schema 1 (as every record before issue 17) and schema 2 (records that
say their algorithm's kind, their dataset's classes and their axis values' display names and table order)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.results import config_hash, write_json_atomic

# profile -> (graph, bn_fold, weights per-channel), as bench/conf/hw/*.yaml
PROFILES = {"academic": (1, -1, False), "tensorrt": (2, 4, True), "acl": (1, 4, True), "tvm": (3, 4, False),
            "snpe": (3, 4, False), "fbgemm": (3, 4, True)}


def make_record(algo: str = "lsq", hw: str = "academic", arch: str = "resnet18", w: int = 4, a: int = 4,
                seed: int = 0, top1: float | None = 70.0, status: str = "ok", track: str = "fmnist-mini",
                calib: tuple[str, str] = ("minmax", "minmax"), quant: dict | None = None, ptq: dict | None = None,
                epochs: int = 1, finished_at: str = "2026-01-01T00:00:00+00:00", fp32: float | None = 71.0,
                init: float | None = None, error: str | None = None, smoke: bool = False, wall: float = 1.0,
                extra: dict | None = None, calib_size: int = 1024, kind: str | None = None,
                num_classes: int | None = None, labels: dict | None = None,
                order: dict | None = None) -> dict[str, Any]:
    """A complete record dict shaped like the runner's (``calib`` = (act, weight)).

    Schema 1 unless ``kind`` is given: then schema 2 with ``kind`` and, where given, ``num_classes``, ``labels``
    and ``order`` (a test says them explicitly, as the runner does from the registries).
    """
    graph, fold, per_channel = PROFILES.get(hw, (1, -1, False))
    data = "imagenet" if track == "imagenet" else "fashion_mnist"
    q = {"graph": None, "bn_fold": None, "first_last_bits": None, "bypass": False, "only": "all",
         "sensitivity": False, **(quant or {})}
    p = {"bn_recalib": False, "cle": False, "bias_correction": "none", **(ptq or {})}
    config = {
        "algo": {"name": algo, "params": {}}, "calib": {"weight": calib[1], "act": calib[0]},
        "hw": {"name": hw, "graph": graph, "bn_fold": fold, "weight": {"per_channel": per_channel}},
        "bits": {"w": w, "a": a}, "arch": {"name": arch},
        "data": {"name": data, "track": track, "calib_size": calib_size},
        "train": {"epochs": epochs, "seed": 0}, "debug": {"smoke": smoke}, "quant": q, "ptq": p, "seed": seed,
    }
    rec = {
        "track": track, "algo": algo, "calib_weight": calib[1], "calib_act": calib[0], "hw": hw,
        "graph": q["graph"] if q["graph"] is not None else graph,
        "bn_fold": q["bn_fold"] if q["bn_fold"] is not None else fold, "arch": arch, "data": data,
        "w_bits": w, "a_bits": a, "seed": seed, "status": status, "fp32_top1": fp32, "top1": top1,
        "top5": None if top1 is None else 99.0, "init_top1": init, "train_epochs": epochs,
        "config_hash": config_hash(config), "git_sha": "abc123", "versions": {}, "wall_s": wall,
        "started_at": finished_at, "schema_version": 1, "finished_at": finished_at, "error": error,
        "extra": dict(extra or {}), "config": config,
    }
    if kind is not None:
        rec.update(schema_version=2, kind=kind)
        rec.update({k: v for k, v in (("num_classes", num_classes), ("labels", labels), ("order", order))
                    if v is not None})
    return rec


@pytest.fixture
def write_rec(tmp_path: Path) -> Callable[..., Path]:
    """``write_rec(subdir, **make_record kwargs)`` writes ``tmp_path/runs/<subdir>/result.json``; returns its path."""

    def _write(subdir: str, metrics: list[dict] | None = None, **kwargs: Any) -> Path:
        path = write_json_atomic(tmp_path / "runs" / subdir / "result.json", make_record(**kwargs))
        if metrics is not None:
            import json

            (path.parent / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        return path

    return _write


@pytest.fixture
def rec() -> Callable[..., dict[str, Any]]:
    """The :func:`make_record` factory."""
    return make_record


def cells_from(recs: list[dict[str, Any]]) -> Any:
    """Cells (records.group_seeds) of in-memory records, through the same records_frame + dedup path."""
    from bench.aggregate import records as R

    pairs = [(Path(f"mem/{i}/result.json"), r) for i, r in enumerate(recs)]
    return R.group_seeds(R.dedup(R.records_frame(pairs)))


@pytest.fixture
def cells_of() -> Callable[[list[dict[str, Any]]], Any]:
    """The :func:`cells_from` helper."""
    return cells_from
