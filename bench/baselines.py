"""FP32 baselines: trained once per (arch, dataset, recipe), cached on disk, loaded safely.

Every quantized cell starts from the same cached FP32 model (MQBench Sec. 2.1: one pre-trained model per arch).
Checkpoints are loaded with ``torch.load(weights_only=True)``; a corrupt or mismatched file is an error, never
silently used or overwritten.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from bench.engine import TrainRecipe, distributed, evaluate, train
from bench.engine.metrics import MetricsWriter
from bench.errors import BenchError
from bench.models import build_model
from bench.results import config_hash, now_iso, versions

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class CheckpointError(BenchError):
    """A checkpoint that cannot be read or does not match what it should hold."""


def cache_root(cfg: DictConfig) -> Path:
    """``cache_dir`` from the config, else ``$BENCH_CACHE``, else ``~/.cache/bench``."""
    root = cfg.cache_dir or os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench"
    return Path(root).expanduser()


def resolve_recipe(t: DictConfig, arch: DictConfig) -> TrainRecipe:
    """Fill a train config's ``None`` values from the arch's Table 3 hyper-parameters."""
    return TrainRecipe(
        epochs=int(t.epochs),
        lr=float(t.lr if t.lr is not None else arch.lr),
        weight_decay=float(t.weight_decay if t.weight_decay is not None else arch.weight_decay),
        momentum=float(t.momentum),
        nesterov=bool(t.nesterov),
        warmup_epochs=float(t.warmup_epochs),
        label_smoothing=float(t.label_smoothing),
        min_lr=float(t.min_lr),
        bn_weight_decay=bool(arch.bn_weight_decay),
    )


def batch_size(t: DictConfig, arch: DictConfig) -> int:
    """The phase's batch size (the arch's Table 3 value when the recipe leaves it ``None``)."""
    return int(t.batch_size if t.batch_size is not None else arch.batch_size)


def max_batches(t: DictConfig, debug: DictConfig) -> int | None:
    """Optimizer steps per epoch of a phase: ``steps_per_epoch`` and ``debug.max_train_batches``, the smaller."""
    caps = [int(v) for v in (t.steps_per_epoch, debug.max_train_batches) if v is not None]
    return min(caps) if caps else None


def baseline_key(cfg: DictConfig, fingerprint: str) -> dict[str, Any]:
    """Everything the FP32 weights depend on; its hash names the cache file."""
    recipe = resolve_recipe(cfg.baseline, cfg.arch)
    key = {
        "format": CHECKPOINT_FORMAT,
        "arch": cfg.arch.name,
        "data": cfg.data.name,
        "data_fingerprint": fingerprint,
        "augment": bool(cfg.data.augment),
        "recipe": recipe.__dict__,
        "batch_size": batch_size(cfg.baseline, cfg.arch),
        "seed": int(cfg.baseline.seed),
        "max_train_batches": cfg.debug.max_train_batches,
        "max_eval_batches": cfg.debug.max_eval_batches,
    }
    if cfg.baseline.steps_per_epoch is not None:  # only in the key when set, so existing caches stay valid
        key["steps_per_epoch"] = int(cfg.baseline.steps_per_epoch)
    return key


def baseline_path(cfg: DictConfig, key: dict[str, Any]) -> Path:
    """Cache file of a baseline key."""
    return cache_root(cfg) / "baselines" / f"{key['arch']}__{key['data']}__{config_hash(key)}.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a one-line error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt zips and unpickling
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        reason = next((ln for ln in lines if "Unsupported global" in ln), lines[0])
        raise CheckpointError(f"corrupt checkpoint {str(path)!r}: {reason[:200]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def _state_dict_of(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    # accept a bare state dict or the common wrappers
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Load a state dict strictly; a mismatch is a one-line error naming the first differences."""
    sd = _state_dict_of(state)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and hasattr(sd[k], "shape") and sd[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shape:
            parts.append(f"{len(shape)} shape mismatches (e.g. {shape[0]})")
        raise CheckpointError(f"checkpoint {str(path)!r} does not match the model: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def save_checkpoint_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file, then rename: an interrupted save never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_train(cfg: DictConfig, data: Any, metrics: MetricsWriter | None = None) -> tuple[nn.Module, dict]:
    """The FP32 model of the cell's arch and dataset, from ``arch.checkpoint``, the cache, or trained now.

    Returns the model (eval mode) and a summary dict (``key``, ``source``, ``path``, ``top1``, ``epochs``, ...).
    """
    torch.manual_seed(int(cfg.baseline.seed))
    model = build_model(cfg.arch.name, num_classes=data.num_classes, in_chans=data.in_chans)
    model.to(distributed.current().device)
    if cfg.arch.checkpoint:
        load_weights(model, load_checkpoint(cfg.arch.checkpoint), cfg.arch.checkpoint)
        model.eval()
        return model, {"source": "user", "path": str(cfg.arch.checkpoint), "key": None}

    key = baseline_key(cfg, data.fingerprint)
    path = baseline_path(cfg, key)
    if path.exists():
        obj = load_checkpoint(path)
        meta = obj.get("meta")
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise CheckpointError(f"checkpoint {str(path)!r} was not made for this arch/data/recipe; delete it")
        load_weights(model, obj, path)
        model.eval()
        log.info("FP32 baseline loaded from %s (top-1 %.2f%%)", path, meta["top1"])
        return model, {**meta, "source": "cache", "path": str(path)}
    return _train_baseline(cfg, data, model, key, path, metrics)


def _train_baseline(
    cfg: DictConfig, data: Any, model: nn.Module, key: dict, path: Path, metrics: MetricsWriter | None
) -> tuple[nn.Module, dict]:
    from bench.data import build_data

    recipe = resolve_recipe(cfg.baseline, cfg.arch)
    bs = batch_size(cfg.baseline, cfg.arch)
    train_data = build_data(
        cfg.data.name, root=cfg.data.root, batch_size=bs, eval_batch_size=cfg.data.eval_batch_size,
        seed=int(cfg.baseline.seed), augment=bool(cfg.data.augment), num_workers=int(cfg.data.num_workers),
    )
    partial = path.with_suffix(".partial.pt")
    resume = None
    if partial.exists():
        resume = load_checkpoint(partial)
        if resume.get("key") != key:
            raise CheckpointError(f"partial checkpoint {str(partial)!r} belongs to another baseline; delete it")
        log.info("resuming FP32 baseline from %s", partial)
    log.info("training FP32 baseline %s on %s: %s", cfg.arch.name, cfg.data.name, recipe)

    def save_state(state: dict[str, Any]) -> None:
        save_checkpoint_atomic({**state, "key": key, "elapsed_s": elapsed()}, partial)

    t0 = time.perf_counter()
    prior = float(resume.get("elapsed_s", 0.0)) if resume else 0.0

    def elapsed() -> float:
        return prior + time.perf_counter() - t0

    result = train(
        model, train_data.train, train_data.test, recipe,
        metrics=metrics, phase="fp32_baseline",
        max_train_batches=max_batches(cfg.baseline, cfg.debug), max_eval_batches=cfg.debug.max_eval_batches,
        progress=bool(cfg.progress), resume=resume, save_state=save_state, log_every=int(cfg.baseline.log_every),
    )
    if result.status != "ok":
        raise BenchError(
            f"FP32 baseline {cfg.arch.name} diverged ({result.reason}); lower baseline.lr={recipe.lr}"
        )
    ev = evaluate(model, train_data.test, cfg.debug.max_eval_batches)
    meta = {
        "key": key,
        "top1": ev["top1"],
        "top5": ev["top5"],
        "epochs": recipe.epochs,
        "train_s": elapsed(),
        "history": result.history,
        "created_at": now_iso(),
        "versions": versions(),
    }
    if distributed.current().is_main:  # the ranks hold the same weights; one writes them
        save_checkpoint_atomic({"state_dict": model.state_dict(), "meta": meta}, path)
        partial.unlink(missing_ok=True)
    model.eval()
    log.info("FP32 baseline %s: top-1 %.2f%% in %.0f s, cached at %s", cfg.arch.name, ev["top1"], meta["train_s"], path)
    return model, {**meta, "source": "trained", "path": str(path)}
