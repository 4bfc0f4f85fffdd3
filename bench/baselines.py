"""FP32 baselines: where a cell's FP32 weights come from, verified, and how a baseline is (re)trained.

Every quantized cell starts from the same FP32 model (MQBench Sec. 4: "each model is initialized by the same
pre-trained model"). Float arithmetic differs between CPUs, so "the same recipe" is not "the same model": the
weights are part of the benchmark. Sources, in order (the record's ``baseline.source``):

- ``user``: ``arch.checkpoint=PATH``, a state dict of the user's;
- ``shipped`` (``arch.pretrained=true``, the default of the ``*_mini`` archs): the weights-only files in
  ``bench/shipped/`` (package data) listed in ``manifest.json`` with their sha256, recipe, data fingerprint and
  top-1 / top-5. The file's sha256 is checked before use; a mismatch is an error, never a silent retraining;
- ``pretrained`` (``arch.pretrained=true`` on the ImageNet archs): timm's published ImageNet weights, from
  ``arch.pretrained_file`` or the Hugging Face cache (downloaded there where a network exists);
- ``cached`` / ``trained`` (``arch.pretrained=false``): the baseline recipe (``baseline=<data>``) trained once and
  cached under ``cache_dir`` keyed by arch, data fingerprint and recipe (``python -m bench pretrain`` reproduces a
  shipped baseline this way).

Every record names the sha256 of the FP32 weights it started from (``baseline.sha256``: of the tensors, whatever
file held them, :func:`weights_sha256`) and of that file (``baseline.file_sha256``). Checkpoints are
loaded with ``torch.load(weights_only=True)``; a corrupt or mismatched file is an error, never silently used or
overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from bench.config import num_workers
from bench.engine import TrainRecipe, distributed, evaluate, train
from bench.engine.metrics import MetricsWriter
from bench.errors import BenchError
from bench.models import build_model
from bench.results import config_hash, now_iso, versions, write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
MANIFEST_NAME = "manifest.json"


class CheckpointError(BenchError):
    """A checkpoint that cannot be read or does not match what it should hold."""


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict's tensors, independent of the file they came in: every key in sorted order with
    its dtype, shape and raw bytes. Two checkpoints with equal weights have the same one."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def shipped_dir() -> Path:
    """Where the shipped baselines live: ``$BENCH_SHIPPED`` (tests) or the package's ``bench/shipped``."""
    return Path(os.environ.get("BENCH_SHIPPED") or SHIPPED_DIR)


@lru_cache(maxsize=4)
def _manifest(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {"baselines": []}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"shipped baseline manifest {str(p)!r} is unreadable: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("baselines"), list):
        raise CheckpointError(f"shipped baseline manifest {str(p)!r} has no 'baselines' list")
    return data


def shipped_manifest() -> dict[str, Any]:
    """The manifest of the shipped baselines (``{"baselines": [entry, ...]}``; empty when none are shipped)."""
    return _manifest(str(shipped_dir() / MANIFEST_NAME))


def shipped_entry(arch: str, data: str) -> dict[str, Any] | None:
    """The manifest entry of the shipped baseline of ``arch`` on dataset ``data``, or None."""
    for e in shipped_manifest()["baselines"]:
        if e.get("arch") == arch and e.get("data") == data:
            return e
    return None


def shipped_names(data: str | None = None) -> list[str]:
    """``arch`` (or ``arch/data``) of every shipped baseline."""
    return [e["arch"] if data else f"{e['arch']}/{e['data']}" for e in shipped_manifest()["baselines"]
            if data is None or e.get("data") == data]


def weights_identity(cfg: DictConfig) -> dict[str, Any] | None:
    """What identifies the FP32 weights of a cell whose weights are published (shipped or pretrained), for its
    ``config_hash`` in place of the baseline recipe (which then does not matter); None when the recipe trains them."""
    if cfg.arch.checkpoint:
        return {"user": file_sha256(cfg.arch.checkpoint)} if Path(cfg.arch.checkpoint).is_file() else None
    if not cfg.arch.pretrained:
        return None
    from bench.models import ARCH_INFO

    if "timm_name" in ARCH_INFO.get(cfg.arch.name, {}):
        f = cfg.arch.pretrained_file
        return {"pretrained": ARCH_INFO[cfg.arch.name]["timm_name"],
                "sha256": file_sha256(f) if f and Path(f).is_file() else None}
    entry = shipped_entry(cfg.arch.name, cfg.data.name)
    return {"shipped": entry.get("weights_sha256") or entry["sha256"]} if entry else None


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
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_or_train(cfg: DictConfig, data: Any, metrics: MetricsWriter | None = None,
                  train_recipe: bool = False) -> tuple[nn.Module, dict]:
    """The FP32 model of the cell's arch and dataset: ``arch.checkpoint``, the shipped or published weights
    (``arch.pretrained``), or the recipe's baseline from the cache or trained now (``train_recipe=True`` forces this
    last route: ``python -m bench pretrain``).

    Returns the model (eval mode) and a summary dict (``source``, ``path``, ``sha256``, ``key``, ``top1``, ...).
    """
    torch.manual_seed(int(cfg.baseline.seed))
    if cfg.arch.checkpoint:
        model = _build(cfg, data)
        load_weights(model, load_checkpoint(cfg.arch.checkpoint), cfg.arch.checkpoint)
        model.eval()
        return model, {"source": "user", "path": str(cfg.arch.checkpoint), "key": None,
                       "file_sha256": file_sha256(cfg.arch.checkpoint), "sha256": weights_sha256(model.state_dict())}
    if cfg.arch.pretrained and not train_recipe:
        return _load_published(cfg, data)

    model = _build(cfg, data)
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
        return model, {**meta, "source": "cached", "path": str(path), "file_sha256": file_sha256(path),
                       "sha256": weights_sha256(model.state_dict())}
    return _train_baseline(cfg, data, model, key, path, metrics)


def _build(cfg: DictConfig, data: Any) -> nn.Module:
    model = build_model(cfg.arch.name, num_classes=data.num_classes, in_chans=data.in_chans)
    return model.to(distributed.current().device)


def _load_published(cfg: DictConfig, data: Any) -> tuple[nn.Module, dict]:
    """``arch.pretrained=true``: timm's ImageNet weights for the ImageNet archs, the shipped baseline otherwise."""
    from bench.models import ARCH_INFO

    if "timm_name" in ARCH_INFO.get(cfg.arch.name, {}):
        from bench.models.imagenet import build_pretrained, resolve_pretrained_file

        path = resolve_pretrained_file(cfg.arch.name, cfg.arch.pretrained_file)
        model = build_pretrained(cfg.arch.name, path, num_classes=data.num_classes, in_chans=data.in_chans)
        model.to(distributed.current().device).eval()
        log.info("FP32 weights: timm's published %s from %s", ARCH_INFO[cfg.arch.name]["timm_name"], path)
        return model, {"source": "pretrained", "path": str(path), "key": None, "file_sha256": file_sha256(path),
                       "sha256": weights_sha256(model.state_dict())}
    return load_shipped(cfg.arch.name, data, _build(cfg, data))


def load_shipped(arch: str, data: Any, model: nn.Module) -> tuple[nn.Module, dict]:
    """Load the shipped baseline of ``arch`` on ``data`` into ``model`` after checking its sha256 (and that ``data``
    is the dataset it was trained on); any mismatch is a one-line error naming the file."""
    entry = shipped_entry(arch, data.name)
    if entry is None:
        shipped = ", ".join(shipped_names(data.name)) or "none"
        raise CheckpointError(f"no shipped FP32 baseline of arch={arch} on data={data.name} (shipped: {shipped}); "
                              "set arch.pretrained=false to train one from the baseline recipe")
    path = shipped_dir() / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"shipped baseline {str(path)!r} is missing (manifest: {MANIFEST_NAME}); restore it "
                              "(git checkout bench/shipped)")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"shipped baseline {str(path)!r} has sha256 {digest[:16]}..., the manifest says "
                              f"{entry['sha256'][:16]}...: corrupt or changed; restore it (git checkout bench/shipped)")
    if entry.get("data_fingerprint") and entry["data_fingerprint"] != data.fingerprint:
        raise CheckpointError(f"shipped baseline {str(path)!r} was trained on {data.name} with fingerprint "
                              f"{entry['data_fingerprint'][:16]}..., this dataset's is {data.fingerprint[:16]}...; "
                              "use the same dataset files or set arch.pretrained=false")
    load_weights(model, load_checkpoint(path), path)
    model.eval()
    log.info("FP32 baseline: shipped %s (sha256 %s..., top-1 %.2f%%)", path, digest[:12], entry["top1"])
    return model, {"source": "shipped", "path": str(path), "file_sha256": digest,
                   "sha256": weights_sha256(model.state_dict()), "key": entry.get("key_hash"),
                   "top1": entry["top1"], "top5": entry.get("top5"), "epochs": entry.get("epochs")}


def _train_baseline(
    cfg: DictConfig, data: Any, model: nn.Module, key: dict, path: Path, metrics: MetricsWriter | None
) -> tuple[nn.Module, dict]:
    from bench.data import build_data

    recipe = resolve_recipe(cfg.baseline, cfg.arch)
    bs = batch_size(cfg.baseline, cfg.arch)
    train_data = build_data(
        cfg.data.name, root=cfg.data.root, batch_size=bs, eval_batch_size=cfg.data.eval_batch_size,
        seed=int(cfg.baseline.seed), augment=bool(cfg.data.augment), num_workers=num_workers(cfg.data.num_workers),
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
    digest = file_sha256(path) if path.is_file() else None
    return model, {**meta, "source": "trained", "path": str(path), "file_sha256": digest,
                   "sha256": weights_sha256(model.state_dict())}
