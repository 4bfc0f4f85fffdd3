"""Dataclass schemas for every config group, registered in Hydra's ConfigStore; the config directory.

The YAML files under ``bench/conf/`` fill these schemas; Hydra rejects unknown keys and wrong types, and
:func:`bench.validate.validate` (above the registries it checks names against) rejects bad values with one line each.
This module is the bottom layer: it imports nothing of bench but its errors.
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
BIAS_CORRECTION = ("none", "empirical", "analytic")


class ConfigError(BenchError):
    """A bad config value or combination."""


QAT_INITS = ("paper", "calib")


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
    label: str = ""  # display name in tables (default: the name)
    order: int = 1000  # column order in tables (lower first)
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
    fused: bool = False  # fused CPU kernels (bench.quant.fused_*): the same numbers, a faster step
    progress: bool = True
    runs_dir: str = "runs"
    cache_dir: str | None = None  # FP32 baselines; None = $BENCH_CACHE or ~/.cache/bench
    skip_existing: bool = True


# Fields that do not change what a cell computes: left out of config_hash.
NON_RESULT_KEYS = (
    "runs_dir", "cache_dir", "progress", "threads", "fused", "skip_existing", "data.num_workers", "quant.report",
    "arch.pretrained_file",  # its content's sha256 is hashed instead (bench.baselines.weights_identity)
    "ptq.calib_batch_size", "dist",
    "hw.label", "hw.order",  # how tables show a profile
)
# Keys added after records were computed, at the value those records used: left out of config_hash at that value
# (the same computation, the same hash), hashed at any other.
LATER_DEFAULTS = {"algo.params.mask_rng": "torch"}
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
        if "=" not in ov or ov.startswith(("~", "hydra")):
            continue
        key, value = ov.split("=", 1)
        key = key.lstrip("+")  # +experiment/ptq_method=... appends a group option: checked the same way
        if value in ("null", "") or (key not in GROUPS and not (CONF_DIR / key).is_dir()):
            continue
        options = group_options(key)
        for v in value.split(","):  # multirun sweeps: a,b,c
            if v not in options:
                raise ConfigError(f"unknown {key} {v!r}; accepted: {', '.join(options)}")


def check_keys(cfg: Any) -> None:
    """Reject config keys the schemas do not have (``+key=value`` overrides bypass the schema; a typo there must not
    be silently ignored), with one line naming the key and the accepted ones."""
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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def num_workers(value: int | None) -> int:
    """``data.num_workers``: the value, or for null the machine's usable cores (at most 8)."""
    if value is not None:
        return int(value)
    return min(8, usable_cores())


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers (no Hydra node)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data
