"""``run(cfg)``: the one pipeline every grid cell goes through, whoever launches it (CLI, tests, Slurm)."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from bench import baselines
from bench.algos import ALGOS, CellContext
from bench.algos.quantized import first_last_bits
from bench.config import LATER_DEFAULTS, NON_RESULT_KEYS, num_workers, to_container
from bench.data import DATASETS, build_data
from bench.engine import allocator, distributed
from bench.engine.eval_cache import evaluate_cached
from bench.engine.metrics import MetricsWriter
from bench.errors import BenchError
from bench.models import ARCHS
from bench.quant import fused_lsq
from bench.quant.observers import OBSERVERS
from bench.quant.profiles import resolve_profile
from bench.registry import UNORDERED
from bench.results import (
    DUPLICATE_NAME,
    ResultRecord,
    config_hash,
    find_record,
    git_sha,
    launch_info,
    now_iso,
    read_record,
    versions,
    write_record,
    write_record_once,
)
from bench.validate import validate

log = logging.getLogger(__name__)


# Version of the numerics every cell runs through, part of config_hash: raise it with a change that moves results
# without changing any config value, so stale records are never skipped into new tables. 2: LSQ's paper gradients,
# fake quantization rounding like the target with integer biases and pooled sums, one quantizer per concatenation.
# 3: PACT's lower clip on signed grids is the grid's end (qmin * s), where the target's clamp is.
NUMERICS_VERSION = 3
# Version of the integer executor's arithmetic, part of the config_hash of cells that run it (deploy.check): raise it
# with a change that moves their integer top-1 / agreement. 2: a float layer (graph 1) applies pending clamps (ReLU6)
# to the dequantized value, not to the codes of the accumulator.
EXECUTOR_VERSION = 2


def hashed_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus output paths and other fields that do not change the result, plus the numerics
    version and, for published FP32 weights, their sha256 in place of the baseline recipe."""
    data = to_container(cfg)
    data["numerics"] = NUMERICS_VERSION
    algo = ALGOS.get(cfg.algo.name) if cfg.algo.name in ALGOS.names() else None
    if algo is None or not algo.uses_recon:
        data.pop("recon", None)  # only reconstruction methods read it
    if algo is None or algo.kind != "qat":
        data.get("algo", {}).pop("init", None)  # only QAT algorithms read it
    elif cfg.algo.init == "paper":
        data.pop("calib", None)  # the paper's initialisation replaces calib.*
    if not (cfg.deploy.check or cfg.deploy.onnx):  # the checks' own settings only matter to a cell that runs one
        data.pop("deploy", None)
    elif cfg.deploy.check:
        data["deploy"]["executor"] = EXECUTOR_VERSION
    # hw.deploy (the target's rounding and requantization) always counts: fake quantization rounds like the target
    identity = baselines.weights_identity(cfg)
    if identity is not None:  # published weights: their sha256 is what the cell starts from, not the recipe
        data["baseline"] = identity
    for dotted in NON_RESULT_KEYS:
        _pop(data, dotted)
    for dotted, value in LATER_DEFAULTS.items():
        _pop(data, dotted, value)
    return data


def _pop(data: dict[str, Any], dotted: str, only: Any = None) -> None:
    """Remove the nested key ``dotted`` from ``data`` (only where its value is ``only``, when given)."""
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.get(p, {})
        if not isinstance(node, dict):
            return
    if leaf in node and (only is None or node[leaf] == only):
        del node[leaf]


def describe(cfg: DictConfig, num_classes: int | None = None) -> dict[str, Any]:
    """The record fields that describe a cell to readers that do not import the code (the aggregator): the
    algorithm's ``kind``, the dataset's ``num_classes`` (the registry's when not given) and the display ``labels``
    and table ``order`` of its algo, hw, arch and calibration methods, from the registries and the hw config."""
    labels: dict[str, str] = {}
    order: dict[str, int] = {}
    calib_weight, calib_act = record_calib(cfg)
    for axis, reg, value in (("algo", ALGOS, cfg.algo.name), ("arch", ARCHS, cfg.arch.name),
                             ("calib_weight", OBSERVERS, calib_weight), ("calib_act", OBSERVERS, calib_act)):
        entry = reg.entry(str(value)) if str(value) in reg else None
        labels[axis] = entry.label if entry else str(value)
        order[axis] = entry.order if entry else UNORDERED
    labels["hw"] = str(cfg.hw.get("label") or cfg.hw.name)
    order["hw"] = int(cfg.hw.get("order", UNORDERED))
    kind = ALGOS.entry(cfg.algo.name).meta["kind"] if cfg.algo.name in ALGOS else ""
    if num_classes is None and cfg.data.name in DATASETS:
        num_classes = DATASETS.entry(cfg.data.name).meta.get("num_classes")
    return {"kind": kind, "num_classes": num_classes, "labels": labels, "order": order}


def record_calib(cfg: DictConfig) -> tuple[str, str]:
    """The record's ``calib_weight`` / ``calib_act``: ``calib.*``, or ``paper`` for a QAT cell initialised as its
    algorithm's paper says (``algo.init=paper``: calib.* is not used)."""
    algo = ALGOS.get(cfg.algo.name) if cfg.algo.name in ALGOS.names() else None
    if algo is not None and algo.kind == "qat" and cfg.algo.init == "paper":
        return "paper", "paper"
    return str(cfg.calib.weight), str(cfg.calib.act)


def cell_hash(cfg: DictConfig) -> str:
    """``config_hash`` of a cell: equal for two configs that compute the same thing."""
    return config_hash(hashed_config(cfg))


def check_cell(cfg: DictConfig) -> Any:
    """Everything known before any work: values, the algorithm x profile combination, and whether the requested
    deployment checks can run on this cell. Raises a one-line BenchError; returns the algorithm."""
    validate(cfg)
    algo = ALGOS.get(cfg.algo.name)
    algo.check(cfg)
    asked = {"deploy.check=true (check-real)": cfg.deploy.check, "deploy.onnx=true (export)": cfg.deploy.onnx}
    for what in (w for w, on in asked.items() if on):
        if not algo.quantizes:
            raise BenchError(f"{what} runs a quantized model; algo={cfg.algo.name} quantizes nothing "
                             f"(accepted: {', '.join(n for n in ALGOS.names() if ALGOS.get(n).quantizes)})")
        if algo.not_deployable:
            ok = [n for n in ALGOS.names() if ALGOS.get(n).quantizes and not ALGOS.get(n).not_deployable]
            raise BenchError(f"{what}: algo={cfg.algo.name} cannot be deployed: {algo.not_deployable}; accepted: "
                             f"algo={', '.join(ok)}")
    if cfg.deploy.onnx:
        from bench.deploy.onnx_export import export_refusal

        profile = resolve_profile(cfg)
        reason = export_refusal(profile.bn_fold, {"w": int(cfg.bits.w), "a": int(cfg.bits.a),
                                                  "first_last": first_last_bits(cfg, profile)})
        if reason:
            raise BenchError(f"deploy.onnx=true (export): cannot export hw={cfg.hw.name} bits=w{cfg.bits.w}"
                             f"a{cfg.bits.a}: {reason}")
    return algo


def run(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run one cell and write ``result.json`` into ``output_dir``; returns the record as a dict.

    Bad config values raise :class:`bench.errors.BenchError` before any work starts. If a record with the same
    ``config_hash`` already exists under ``cfg.runs_dir`` (status ok or nc), it is returned without recomputing.
    Started as several processes (torchrun, a Slurm step of several tasks) the ranks train the cell together with
    DDP and rank 0 writes the record; see :mod:`bench.engine.distributed`.
    """
    t0 = time.perf_counter()
    started = now_iso()
    algo = check_cell(cfg)
    hashed = hashed_config(cfg)
    h = config_hash(hashed)
    if cfg.skip_existing:
        existing = find_record(cfg.runs_dir, h)
        if existing is not None:
            print(f"skipped: identical cell already recorded at {existing}")  # once: not also through the log
            return read_record(existing)

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    allocator.keep_heap()  # speed only: the numbers do not depend on where memory comes from
    fused_lsq.set_enabled(bool(cfg.fused))  # speed only: bit for bit the eager kernels
    dist = distributed.setup(
        cfg.dist.device, cfg.dist.backend, find_unused_parameters=bool(cfg.dist.find_unused_parameters),
        timeout_min=float(cfg.dist.timeout_min),
    )
    try:
        if dist.is_main:
            return _run(cfg, Path(output_dir), algo, hashed, h, t0, started, dist)
        with tempfile.TemporaryDirectory(prefix=f"bench-rank{dist.rank}-") as side:  # reports of ranks > 0
            return _run(cfg, Path(side), algo, hashed, h, t0, started, dist)
    finally:
        distributed.teardown()


def _run(
    cfg: DictConfig, output_dir: Path, algo: Any, hashed: dict[str, Any], h: str, t0: float, started: str,
    dist: distributed.DistContext,
) -> dict[str, Any]:
    output_dir.mkdir(parents=True, exist_ok=True)
    train_bs = baselines.batch_size(cfg.train, cfg.arch)
    data = build_data(
        cfg.data.name, root=cfg.data.root, batch_size=train_bs, eval_batch_size=cfg.data.eval_batch_size,
        seed=int(cfg.seed), augment=bool(cfg.data.augment), num_workers=num_workers(cfg.data.num_workers),
    )
    metrics = MetricsWriter(output_dir / "metrics.jsonl" if dist.is_main else None)
    model, base = baselines.load_or_train(cfg, data, metrics)
    fp32 = evaluate_cached(model, data.test, cfg.debug.max_eval_batches, weights_sha256=base.get("sha256"),
                           context={"arch": cfg.arch.name, "data": data.fingerprint,
                                    "eval_batch_size": cfg.data.eval_batch_size},
                           cache_dir=baselines.cache_root(cfg) / "fp32_eval")
    torch.manual_seed(int(cfg.seed))
    outcome = algo.apply(CellContext(cfg, model, data, output_dir, metrics, fp32["top1"], h, resolve_profile(cfg)))
    if cfg.deploy.check:
        outcome.extra["deploy"] = _check_real(cfg, outcome, data)
    if cfg.deploy.onnx:
        outcome.extra["onnx"] = _export_onnx(cfg, outcome, data, output_dir)

    quantized = algo.quantizes
    record = ResultRecord(
        track=cfg.data.track,
        algo=cfg.algo.name,
        calib_weight=record_calib(cfg)[0],
        calib_act=record_calib(cfg)[1],
        hw=cfg.hw.name,
        graph=outcome.graph if quantized else None,
        bn_fold=outcome.bn_fold if quantized else None,
        arch=cfg.arch.name,
        data=cfg.data.name,
        w_bits=int(cfg.bits.w) if quantized else 32,
        a_bits=int(cfg.bits.a) if quantized else 32,
        seed=int(cfg.seed),
        status=outcome.status,
        fp32_top1=fp32["top1"],
        top1=outcome.top1,
        top5=outcome.top5,
        init_top1=outcome.init_top1,
        train_epochs=outcome.train_epochs,
        config_hash=h,
        git_sha=git_sha(),
        versions=versions(),
        wall_s=round(time.perf_counter() - t0, 3),
        started_at=started,
        finished_at=now_iso(),
        data_fingerprint=data.fingerprint,
        **describe(cfg, data.num_classes),
        baseline=_baseline_summary(base, fp32),
        error=outcome.error,
        extra={**outcome.extra, "launch": {**launch_info(), **dist.describe()}},
        config=hashed,
    )
    if not dist.is_main:
        return record.to_dict()
    path = write_record_once(record, output_dir, cfg.runs_dir)
    if path.parent.resolve() != output_dir.resolve():
        print(f"duplicate: this cell was finished meanwhile by {path}; this run's record is kept as "
              f"{output_dir / DUPLICATE_NAME}")
    print(f"result: {path}  status={record.status} top1={_fmt(record.top1)} fp32_top1={_fmt(record.fp32_top1)}")
    return record.to_dict()


def _baseline_summary(base: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """The record's ``baseline``: where the FP32 weights came from (shipped | pretrained | user | cached | trained),
    the sha256 of their file, the recipe key, and the FP32 accuracy measured in this cell."""
    key = base.get("key")
    out = {
        "source": base.get("source"),
        "sha256": base.get("sha256"),  # of the weights (bench.baselines.weights_sha256)
        "file": Path(str(base["path"])).name if base.get("path") else None,
        "file_sha256": base.get("file_sha256"),
        "key": config_hash(key) if isinstance(key, dict) else key,
        "top1": fp32["top1"],
        "top5": fp32.get("top5"),
        "top1_from_cache": bool(fp32.get("cached")),  # measured by an earlier cell: same weights, data, machine
        "epochs": base.get("epochs"),
    }
    if base.get("source") == "shipped":
        out["manifest_top1"] = base.get("top1")  # the accuracy the manifest states for these weights
    return out


def _check_real(cfg: DictConfig, outcome: Any, data: Any) -> dict[str, Any]:
    """``deploy.check``: the cell's quantized model run with integer arithmetic next to its fake-quant form."""
    from bench.deploy.check import check_real, format_check

    if outcome.model is None or outcome.status != "ok":
        return {"status": "skipped", "reason": "no quantized model" if outcome.model is None else outcome.status}
    res = check_real(outcome.model, resolve_profile(cfg), data.test, cfg.deploy.max_batches)
    print(format_check(res))
    return res


def _export_onnx(cfg: DictConfig, outcome: Any, data: Any, output_dir: Path) -> dict[str, Any]:
    """``deploy.onnx``: write model.onnx + model.qparams.json and evaluate the ONNX model with onnxruntime; the same
    for model.ort.onnx, its exact rewrite for onnxruntime's x86 integer kernels."""
    from bench.deploy.onnx_export import ExportError, export_onnx, ort_check, ort_variant

    if outcome.model is None or outcome.status != "ok":
        return {"status": "skipped", "reason": "no quantized model" if outcome.model is None else outcome.status}
    x, _ = next(iter(data.test))
    try:
        info = export_onnx(outcome.model, x[:1], output_dir / "model.onnx")
    except ExportError as e:
        print(f"onnx export: not exportable: {e}")
        return {"status": "not_exportable", "reason": str(e)}
    res = {**ort_check(outcome.model, output_dir / "model.onnx", data.test, cfg.deploy.max_batches,
                       threads=torch.get_num_threads()), "ops": info["ops"], "file": "model.onnx",
           "qparams_json": "model.qparams.json"}
    variant = ort_variant(output_dir / "model.onnx")
    fast = ort_check(outcome.model, variant, data.test, cfg.deploy.max_batches, threads=torch.get_num_threads())
    res["ort_variant"] = {"file": variant.name, **{k: fast[k] for k in ("ort_top1", "agreement", "max_abs_logit_diff")}}
    print(f"onnx export: {output_dir / 'model.onnx'}  onnxruntime top-1 {res['ort_top1']:.2f} (fake-quant "
          f"{res['fake_top1']:.2f}, agreement {res['agreement']:.2f}%); {variant.name} (integer kernels on x86) "
          f"top-1 {fast['ort_top1']:.2f}, agreement {fast['agreement']:.2f}%")
    return res


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def write_failed(cfg: DictConfig, output_dir: str | Path, error: str) -> Path:
    """Record a cell that could not run (bad combination, missing data, ...) so a sweep goes on and tables show it."""
    try:
        h = cell_hash(cfg)
        hashed = hashed_config(cfg)
    except Exception:  # an unresolvable config still gets a record
        h, hashed = "", {}
    record = ResultRecord(
        track=cfg.data.track, algo=cfg.algo.name, calib_weight=record_calib(cfg)[0], calib_act=record_calib(cfg)[1],
        hw=cfg.hw.name, graph=None, bn_fold=None, arch=cfg.arch.name, data=cfg.data.name,
        w_bits=int(cfg.bits.w), a_bits=int(cfg.bits.a), seed=int(cfg.seed), status="failed",
        fp32_top1=None, top1=None, top5=None, init_top1=None, train_epochs=0, config_hash=h,
        git_sha=git_sha(), versions=versions(), wall_s=0.0, started_at=now_iso(), finished_at=now_iso(),
        error=error, config=hashed, **describe(cfg),
    )
    return write_record(record, output_dir)
