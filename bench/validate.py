"""Validation of a composed config against the registries (algorithms, archs, datasets, calibration methods) and
the value ranges: one line on the first bad value, before any work starts. It sits above the registries it reads
(called by the runner and the CLI), so the schemas in :mod:`bench.config` stay at the bottom."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from bench.algos import ALGOS
from bench.baselines import cache_root
from bench.config import (
    BIAS_CORRECTION,
    QAT_INITS,
    QUANT_ONLY,
    SUPPORTED_BITS,
    BenchConfig,
    ConfigError,
    check_keys,
    group_options,
)
from bench.data import DATASETS
from bench.engine.distributed import BACKENDS, DEVICES
from bench.models import ARCHS
from bench.quant.observers import calib_names
from bench.quant.profiles import BN_FOLDS, GRAPHS
from bench.quant.spec import POT_SNAPS


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: DictConfig | BenchConfig) -> None:
    """Check every value of a composed config; raise :class:`ConfigError` with one line on the first bad one."""
    c = cfg
    check_keys(cfg)
    ALGOS.get(c.algo.name)
    _need(c.algo.init in QAT_INITS, f"unknown algo.init {c.algo.init!r}; accepted: {', '.join(QAT_INITS)}")
    ARCHS.get(c.arch.name)
    DATASETS.get(c.data.name)
    hw_names = group_options("hw")
    _need(c.hw.name in hw_names, f"unknown hw {c.hw.name!r}; accepted: {', '.join(hw_names)}")
    for kind in ("w", "a"):
        b = c.bits[kind]
        _need(b in SUPPORTED_BITS, f"bits.{kind}={b} out of range; accepted: 2..8 (16/32 bypass quantization)")
    for kind in ("weight", "act"):
        names = calib_names(kind)
        _need(c.calib[kind] in names, f"unknown calib.{kind} {c.calib[kind]!r}; accepted: {', '.join(names)}")
    _need(
        c.ptq.bias_correction in BIAS_CORRECTION,
        f"unknown ptq.bias_correction {c.ptq.bias_correction!r}; accepted: {', '.join(BIAS_CORRECTION)}",
    )
    if c.quant.graph is not None:
        _need(c.quant.graph in GRAPHS, f"quant.graph={c.quant.graph} invalid; accepted: {', '.join(map(str, GRAPHS))}")
    if c.quant.pot_snap is not None:
        _need(c.quant.pot_snap in POT_SNAPS, f"unknown quant.pot_snap {c.quant.pot_snap!r}; accepted: "
              f"{', '.join(POT_SNAPS)}, null")
    if c.quant.bn_fold is not None:
        _need(c.quant.bn_fold in BN_FOLDS,
              f"quant.bn_fold={c.quant.bn_fold} invalid; accepted: {', '.join(map(str, BN_FOLDS))}")
    _need(c.quant.only in QUANT_ONLY, f"unknown quant.only {c.quant.only!r}; accepted: {', '.join(QUANT_ONLY)}")
    for key, v in (("quant.first_last_bits", c.quant.first_last_bits), ("hw.first_last_bits", c.hw.first_last_bits)):
        _need(v is None or v in SUPPORTED_BITS, f"{key}={v} out of range; accepted: 2..8 (16/32 bypass), null")
    _need(c.dist.device in DEVICES, f"unknown dist.device {c.dist.device!r}; accepted: {', '.join(DEVICES)}")
    _need(c.dist.backend in BACKENDS, f"unknown dist.backend {c.dist.backend!r}; accepted: {', '.join(BACKENDS)}")
    _need(c.deploy.max_batches is None or c.deploy.max_batches > 0,
          f"deploy.max_batches={c.deploy.max_batches} must be > 0 or null")
    _need(c.dist.timeout_min > 0, f"dist.timeout_min={c.dist.timeout_min} must be > 0")
    _need(c.ptq.calib_batch_size > 0, f"ptq.calib_batch_size={c.ptq.calib_batch_size} must be > 0")
    _need(c.arch.lr > 0, f"arch.lr={c.arch.lr} must be > 0")
    _need(c.arch.weight_decay >= 0, f"arch.weight_decay={c.arch.weight_decay} must be >= 0")
    _need(c.arch.batch_size > 0, f"arch.batch_size={c.arch.batch_size} must be > 0")
    if c.arch.checkpoint is not None:
        _need(Path(c.arch.checkpoint).is_file(), f"arch.checkpoint={c.arch.checkpoint!r} does not exist")
    if c.arch.pretrained_file is not None:
        _need(Path(c.arch.pretrained_file).expanduser().is_file(),
              f"arch.pretrained_file={c.arch.pretrained_file!r} does not exist")
    for name in ("train", "baseline"):
        t = c[name]
        _need(t.epochs >= 0, f"{name}.epochs={t.epochs} must be >= 0")
        _need(t.steps_per_epoch is None or t.steps_per_epoch > 0,
              f"{name}.steps_per_epoch={t.steps_per_epoch} must be > 0 (or null for a full pass)")
        _need(t.log_every >= 0, f"{name}.log_every={t.log_every} must be >= 0")
        _need(t.lr is None or t.lr > 0, f"{name}.lr={t.lr} must be > 0")
        _need(t.weight_decay is None or t.weight_decay >= 0, f"{name}.weight_decay={t.weight_decay} must be >= 0")
        _need(t.batch_size is None or t.batch_size > 0, f"{name}.batch_size={t.batch_size} must be > 0")
        _need(0 <= t.momentum < 1, f"{name}.momentum={t.momentum} must be in [0, 1)")
        _need(t.warmup_epochs >= 0, f"{name}.warmup_epochs={t.warmup_epochs} must be >= 0")
        _need(0 <= t.label_smoothing < 1, f"{name}.label_smoothing={t.label_smoothing} must be in [0, 1)")
    r = c.recon
    _need(r.iters > 0, f"recon.iters={r.iters} must be > 0")
    _need(r.batch_size > 0, f"recon.batch_size={r.batch_size} must be > 0")
    _need(r.lr > 0 and r.act_lr > 0, f"recon.lr={r.lr} and recon.act_lr={r.act_lr} must be > 0")
    _need(r.reg_weight >= 0, f"recon.reg_weight={r.reg_weight} must be >= 0")
    _need(0 <= r.warmup < 1, f"recon.warmup={r.warmup} must be in [0, 1)")
    _need(r.beta_start >= r.beta_end > 0, f"recon.beta_start={r.beta_start} >= recon.beta_end={r.beta_end} > 0 needed")
    d = c.data
    _need(d.eval_batch_size > 0, f"data.eval_batch_size={d.eval_batch_size} must be > 0")
    _need(d.num_workers is None or d.num_workers >= 0, f"data.num_workers={d.num_workers} must be >= 0 or null")
    _need(d.calib_size > 0, f"data.calib_size={d.calib_size} must be > 0")
    if d.root is not None:
        _need(Path(d.root).is_dir(), f"data.root={d.root!r} does not exist or is not a directory")
    for key in ("max_train_batches", "max_eval_batches"):
        v = c.debug[key]
        _need(v is None or v > 0, f"debug.{key}={v} must be > 0")
    _need(c.threads is None or c.threads > 0, f"threads={c.threads} must be > 0")
    _need(c.seed >= 0, f"seed={c.seed} must be >= 0 (the RNG seed of the cell)")
    check_output_dirs(c)


def check_output_dirs(cfg: DictConfig) -> None:
    """``runs_dir`` and the baseline cache must be directories this process can create files in (one line, before
    any work; nothing is left behind by the check)."""
    for key, value in (("runs_dir", Path(str(cfg.runs_dir))), ("cache_dir", cache_root(cfg))):
        problem = unwritable(value)
        if problem:
            raise ConfigError(f"{key}={str(value)!r} {problem}")


def unwritable(path: Path) -> str | None:
    """Why files cannot be created under ``path`` (created if missing), or None: its nearest existing ancestor
    must be a directory where a probe directory can be made."""
    p = path.expanduser()
    existing = next((a for a in (p, *p.parents) if a.exists()), None)
    if existing is None or not existing.is_dir():
        return f"is not a directory ({existing} is a file)" if existing else "cannot be created"
    try:
        with tempfile.TemporaryDirectory(prefix=".bench-probe-", dir=existing):
            pass
    except OSError as e:
        return f"is not writable ({e.strerror or e})"
    return None
