"""Dataclass schemas for every config group, registered in Hydra's ConfigStore, and value validation.

The YAML files under ``bench/conf/`` fill these schemas; Hydra rejects unknown keys and wrong types, and
:func:`validate` rejects bad values (unknown names, out-of-range numbers, missing paths) with one line each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench.errors import BenchError

CONF_DIR = Path(os.environ.get("BENCH_CONF", Path(__file__).resolve().parent / "conf"))

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)  # 16/32 bypass quantization (debugging workflow)
CALIB_WEIGHT = ("minmax", "mse", "kld", "quantile", "norm", "meanstd")
CALIB_ACT = (*CALIB_WEIGHT, "bn", "batch_minmax")
BIAS_CORRECTION = ("none", "empirical", "analytic")


class ConfigError(BenchError):
    """A bad config value or combination."""


QAT_INITS = ("paper", "calib")
POT_SNAPS = ("ceil", "round", "mse")  # bench.quant.spec.POT_SNAPS (the schemas do not import the quantization core)


@dataclass
class AlgoConfig:
    """Which algorithm runs the cell (a registry name) and its own options.

    ``init`` (QAT algorithms only): ``paper`` initialises the algorithm's quantizers as its own paper does (MQBench
    App. F: LSQ's ``2 mean|x| / sqrt(Qp)``, PACT's clip 6, ...), ``calib`` from the ``calib.*`` observers (MQBench
    App. C.4, Table 11)."""

    name: str = "fp32"
    init: str = "paper"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalibConfig:
    """Calibration observers used for PTQ and to initialise QAT (MQBench App. C)."""

    weight: str = "minmax"
    act: str = "minmax"


@dataclass
class SpecConfig:
    """The format of one tensor kind on a profile (``bench.quant.spec.QuantSpec`` minus the bit-width)."""

    signed: bool | None = True  # None: adaptive signedness (academic), unsigned when the data is non-negative
    symmetric: bool = True
    per_channel: bool = False
    pot_scale: bool = False
    narrow_range: bool = False
    pot_snap: str = "ceil"  # ceil | round | mse: how a calibrated scale becomes a power of two (pot_scale grids)


@dataclass
class DeployArith:
    """How the profile's integer target requantizes (``bench.quant.fixedpoint``): read by the integer executor, and
    ``rounding`` also by fake quantization, which rounds activations as the target does."""

    requant: str = "float32"  # fixed_point | shift | float32
    rounding: str = "half_even"  # half_even | half_up | half_away


@dataclass
class HwConfig:
    """A hardware profile (MQBench Table 2, App. E), read by ``bench.quant.profiles``."""

    name: str = "academic"
    provider: str = "-"
    hardware: str = "-"
    graph: int = 1
    bn_fold: int = -1
    hardware_target: bool = False  # a real deployment target (uniform integer grids only); False = academic
    first_last_bits: int | None = 8
    weight: SpecConfig = field(default_factory=SpecConfig)
    act: SpecConfig = field(default_factory=lambda: SpecConfig(signed=None))
    description: str = ""
    deploy: DeployArith = field(default_factory=lambda: DeployArith())


@dataclass
class BitsConfig:
    """Weight and activation bit-widths."""

    w: int = 4
    a: int = 4


@dataclass
class ArchConfig:
    """An architecture and its MQBench Table 3 fine-tuning hyper-parameters."""

    name: str = "resnet18_mini"
    lr: float = 0.004
    weight_decay: float = 1e-4
    bn_weight_decay: bool = True  # Table 3 '*': no weight decay on BN parameters for the mobile family
    batch_size: int = 128
    checkpoint: str | None = None  # user FP32 weights; replaces the shipped / pretrained / recipe baseline
    # start from published FP32 weights (bench.baselines): the shipped baseline of a *_mini arch (default true), timm's
    # ImageNet weights for the ImageNet archs (default false; true in the _imagenet experiments); false: train the
    # baseline recipe (cached)
    pretrained: bool = False
    pretrained_file: str | None = None  # timm's published weights as a local file (else the Hugging Face cache)


@dataclass
class DataConfig:
    """A dataset and how it is loaded."""

    name: str = "fashion_mnist"
    track: str = "fmnist-mini"
    root: str | None = None
    eval_batch_size: int = 512
    num_workers: int | None = 0  # DataLoader workers; null = as many as the machine has cores (at most 8)
    augment: bool = True
    calib_size: int = 1024


@dataclass
class TrainConfig:
    """A training recipe for the unified loop. ``None`` takes the arch's Table 3 value."""

    epochs: int = 1
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    momentum: float = 0.9
    nesterov: bool = True
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    min_lr: float = 0.0
    seed: int = 0  # only used by the baseline recipe: every cell fine-tunes the same FP32 model
    steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (None = one pass over the training set)
    log_every: int = 50  # write the running training loss / top-1 to metrics.jsonl every this many steps (0 = off)


@dataclass
class QuantConfig:
    """Overrides of the hardware profile and the debugging workflow (white paper Sec. 3.7)."""

    graph: int | None = None  # None = the profile's
    bn_fold: int | None = None  # None = the profile's
    pot_snap: str | None = None  # None = the profile's (power-of-two profiles): ceil | round | mse
    first_last_bits: int | None = None  # None = the profile's (8); set to the cell's bits to quantize them alike
    report: bool = False  # print the quantization report (it is always saved beside the record)
    bypass: bool = False  # quantizers inserted and calibrated but off: accuracy must equal FP32
    only: str = "all"  # all | weights | acts: which quantizers stay on
    sensitivity: bool = False  # per-quantizer SQNR and one-layer-at-a-time accuracy, saved as sensitivity.csv


@dataclass
class PtqConfig:
    """Post-training options (consumed by the PTQ methods)."""

    bn_recalib: bool = False  # MQBench App. C.3: re-estimate BN statistics on the calibration set after quantization
    cle: bool = False
    bias_correction: str = "none"
    calib_batch_size: int = 256


@dataclass
class ReconConfig:
    """Budget of the reconstruction-based PTQ methods (AdaRound, BRECQ, QDrop, IOSO): ``bench/conf/recon/<data>.yaml``
    (``imagenet``: the papers' values; ``fashion_mnist``: scaled for the mini track on 2 CPU cores)."""

    preset: str = "imagenet"
    iters: int = 20000  # optimisation steps per unit (layer or block) and stage
    batch_size: int = 32
    lr: float = 1e-3  # Adam, rounding variables (and IOSO's parameters)
    act_lr: float = 4e-5  # Adam, activation step sizes (cosine-decayed)
    reg_weight: float = 0.01  # lambda of the rounding regulariser
    warmup: float = 0.2  # fraction of the iterations without the regulariser
    beta_start: float = 20.0  # regulariser annealing (AdaRound): beta from start to end after the warm-up
    beta_end: float = 2.0


@dataclass
class DebugConfig:
    """``debug=smoke`` caps batches so any cell finishes in seconds."""

    smoke: bool = False
    max_train_batches: int | None = None
    max_eval_batches: int | None = None


@dataclass
class DistConfig:
    """Device and multi-process training of one cell (``bench.engine.distributed``). One process -- the default, and
    always on CPU unless several are launched with torchrun or Slurm ``tasks_per_node`` -- makes DDP a no-op."""

    device: str = "auto"  # auto (cuda:LOCAL_RANK when torch sees a GPU, else cpu) | cpu | cuda
    backend: str = "auto"  # auto (nccl on GPUs, gloo on CPU) | gloo | nccl
    find_unused_parameters: bool = False  # true if a quantizer parameter gets no gradient (DDP then says so)
    timeout_min: float = 30.0  # a rank waiting this long on the others fails instead of hanging


@dataclass
class DeployConfig:
    """Deployment checks of a quantized cell (``bench.deploy``): ``check=true`` (``python -m bench check-real``) also
    runs the model with integer-only arithmetic and records fake-quant vs integer agreement; ``onnx=true``
    (``python -m bench export``) writes the QDQ ONNX model and records its onnxruntime accuracy."""

    check: bool = False
    onnx: bool = False  # export model.onnx (QDQ) + model.qparams.json and evaluate it with onnxruntime
    max_batches: int | None = None  # cap on test batches of the checks (None: the whole test set)


@dataclass
class BenchConfig:
    """The whole config of one grid cell."""

    algo: AlgoConfig = MISSING
    calib: CalibConfig = MISSING
    hw: HwConfig = MISSING
    bits: BitsConfig = MISSING
    arch: ArchConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = MISSING
    baseline: TrainConfig = MISSING
    debug: DebugConfig = MISSING
    recon: ReconConfig = MISSING
    quant: QuantConfig = field(default_factory=QuantConfig)
    ptq: PtqConfig = field(default_factory=PtqConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None = all cores
    progress: bool = True
    runs_dir: str = "runs"
    cache_dir: str | None = None  # FP32 baselines; None = $BENCH_CACHE or ~/.cache/bench
    skip_existing: bool = True


# Fields that do not change what a cell computes: left out of config_hash.
NON_RESULT_KEYS = (
    "runs_dir", "cache_dir", "progress", "threads", "skip_existing", "data.num_workers", "quant.report",
    "arch.pretrained_file",  # its content's sha256 is hashed instead (bench.baselines.weights_identity)
    "ptq.calib_batch_size", "dist",
)
QUANT_ONLY = ("all", "weights", "acts")

GROUPS = ("algo", "calib", "hw", "bits", "arch", "data", "train", "baseline", "recon", "debug", "experiment")


def register_configs() -> None:
    """Register the schemas so YAML files are type-checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="bench_schema", node=BenchConfig)


def group_options(group: str) -> list[str]:
    """Names of the YAML files of a config group under ``bench/conf/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Reject ``group=value`` overrides naming an option that does not exist, in one line.

    Hydra's own message is several lines; users mostly mistype an arch or profile name.
    """
    for ov in overrides:
        if "=" not in ov or ov.startswith(("+", "~", "hydra")):
            continue
        key, value = ov.split("=", 1)
        key = key.removeprefix("++")
        if key not in GROUPS or value in ("null", ""):
            continue
        options = group_options(key)
        for v in value.split(","):  # multirun sweeps: a,b,c
            if v not in options:
                raise ConfigError(f"unknown {key} {v!r}; accepted: {', '.join(options)}")


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: DictConfig | BenchConfig) -> None:
    """Check every value of a composed config; raise :class:`ConfigError` with one line on the first bad one."""
    from bench.algos import ALGOS
    from bench.data import DATASETS
    from bench.models import ARCHS

    c = cfg
    _check_keys(cfg)
    ALGOS.get(c.algo.name)
    _need(c.algo.init in QAT_INITS, f"unknown algo.init {c.algo.init!r}; accepted: {', '.join(QAT_INITS)}")
    ARCHS.get(c.arch.name)
    DATASETS.get(c.data.name)
    hw_names = group_options("hw")
    _need(c.hw.name in hw_names, f"unknown hw {c.hw.name!r}; accepted: {', '.join(hw_names)}")
    for kind in ("w", "a"):
        b = c.bits[kind]
        _need(b in SUPPORTED_BITS, f"bits.{kind}={b} out of range; accepted: 2..8 (16/32 bypass quantization)")
    _need(
        c.calib.weight in CALIB_WEIGHT, f"unknown calib.weight {c.calib.weight!r}; accepted: {', '.join(CALIB_WEIGHT)}"
    )
    _need(c.calib.act in CALIB_ACT, f"unknown calib.act {c.calib.act!r}; accepted: {', '.join(CALIB_ACT)}")
    _need(
        c.ptq.bias_correction in BIAS_CORRECTION,
        f"unknown ptq.bias_correction {c.ptq.bias_correction!r}; accepted: {', '.join(BIAS_CORRECTION)}",
    )
    if c.quant.graph is not None:
        _need(c.quant.graph in (1, 2, 3), f"quant.graph={c.quant.graph} invalid; accepted: 1, 2, 3")
    if c.quant.pot_snap is not None:
        _need(c.quant.pot_snap in POT_SNAPS, f"unknown quant.pot_snap {c.quant.pot_snap!r}; accepted: "
              f"{', '.join(POT_SNAPS)}, null")
    if c.quant.bn_fold is not None:
        _need(c.quant.bn_fold in range(-1, 5), f"quant.bn_fold={c.quant.bn_fold} invalid; accepted: -1, 0, 1, 2, 3, 4")
    _need(c.quant.only in QUANT_ONLY, f"unknown quant.only {c.quant.only!r}; accepted: {', '.join(QUANT_ONLY)}")
    for key, v in (("quant.first_last_bits", c.quant.first_last_bits), ("hw.first_last_bits", c.hw.first_last_bits)):
        _need(v is None or v in SUPPORTED_BITS, f"{key}={v} out of range; accepted: 2..8 (16/32 bypass), null")
    from bench.engine.distributed import BACKENDS, DEVICES

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


def _check_keys(cfg: Any) -> None:
    # `+key=value` overrides bypass the schema; a typo there must not be silently ignored
    from dataclasses import fields, is_dataclass

    schema = BenchConfig
    for name in cfg.keys():
        if name == "hydra":
            continue
        top = {f.name: f for f in fields(schema)}
        if name not in top:
            raise ConfigError(f"unknown config key {name!r}; accepted: {', '.join(top)}")
        sub = top[name]
        sub_type = sub.type if not isinstance(sub.type, str) else globals().get(sub.type)
        if sub_type is not None and is_dataclass(sub_type):
            allowed = [f.name for f in fields(sub_type)]
            for key in cfg[name].keys():
                if key not in allowed:
                    raise ConfigError(f"unknown config key {name}.{key}; accepted: {', '.join(allowed)}")


def num_workers(value: int | None) -> int:
    """``data.num_workers``: the value, or for null the machine's usable cores (at most 8)."""
    if value is not None:
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers (no Hydra node)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data
