"""Loading result records, rejecting corrupt ones, dedup of re-runs, grouping seeds into cells, table filters."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench.aggregate import legacy
from bench.aggregate.axes import AXES, META_COLUMNS, label_column, order_column
from bench.aggregate.stats import finite, mean_or_nan, summarize
from bench.results import STATUSES, cpu_of, record_paths

# Fields a record needs to be placed in a table; a record without one of them is rejected as corrupt.
REQUIRED = (
    "track", "algo", "calib_weight", "calib_act", "hw", "arch", "data", "w_bits", "a_bits", "seed", "status",
    "top1", "config_hash",
)
# Columns of cells.csv (one row per deduplicated record), in this order.
RECORD_COLUMNS = [
    "track", "algo", "kind", "arch", "hw", "w_bits", "a_bits", "calib_act", "calib_weight", "graph", "bn_fold",
    "seed", "status", "fp32_top1", "top1", "top5", "init_top1", "train_epochs", "config_hash", "cell_id",
    "quant_graph", "quant_bn_fold", "quant_only", "quant_bypass", "first_last_bits", "bn_recalib", "cle",
    "bias_correction", "per_channel", "smoke", "calib_size", "data", "git_sha", "wall_s", "started_at",
    "finished_at", "error", "path", "overrides", "torch_threads", "cpu",
]
# the default initialisation of QAT cells (algo.init=paper, records say "paper"), then bench/conf/config.yaml's default
# calibration: what the hardware tables prefer, in this order, when a slot has several cells
PAPER_INIT = ("paper", "paper")
DEFAULT_CALIB = ("minmax", "minmax")


@dataclass(frozen=True)
class Reject:
    """A ``result.json`` that could not be used, and why."""

    path: str
    reason: str


def algo_kind(rec: Mapping[str, Any]) -> str:
    """``qat``, ``ptq`` or ``fp32``: what the record says (schema 2), else the legacy map; ``unknown`` if neither."""
    kind = rec.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return legacy.KINDS.get(str(rec.get("algo")), "unknown")


def num_classes(rec: Mapping[str, Any]) -> int | None:
    """Classes of the record's dataset: what the record says (schema 2), else the legacy map; None if neither."""
    n = rec.get("num_classes")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    return legacy.NUM_CLASSES.get(str(rec.get("data")))


def _meta_reason(rec: Mapping[str, Any]) -> str | None:
    """Why the self-description fields of a (schema-2) record are malformed, or None; absent fields are fine."""
    if "kind" in rec and not isinstance(rec["kind"], str):
        return f"kind is not a string ({rec['kind']!r})"
    n = rec.get("num_classes")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        return f"num_classes is not a positive integer ({n!r})"
    for key in ("labels", "order"):
        if key in rec and not isinstance(rec[key], dict):
            return f"{key} is not an object"
    return None


def _validate(rec: Any) -> str | None:
    """The reason ``rec`` is unusable, or None."""
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if rec["status"] not in STATUSES:
        return f"unknown status {rec['status']!r} (accepted: {', '.join(STATUSES)})"
    if not isinstance(rec.get("config", {}), dict):
        return "config is not an object"
    for k in ("w_bits", "a_bits", "seed"):
        if not isinstance(rec[k], int) or isinstance(rec[k], bool):
            return f"{k} is not an integer ({rec[k]!r})"
    if rec["top1"] is not None and not isinstance(rec["top1"], int | float):
        return f"top1 is not a number ({rec['top1']!r})"
    return _meta_reason(rec)


def load_records(runs_dir: str | Path, warn: TextIO | None = None) -> tuple[list[tuple[Path, dict]], list[Reject]]:
    """Every ``result.json`` under ``runs_dir``: (path, record) pairs and the rejected files.

    A file that is not valid JSON, lacks a required field or has an unknown status is rejected with one warning
    line on ``warn`` (stderr by default) naming its path and the reason. Temp files of atomic writes are not
    records (their names are not ``result.json``).
    """
    warn = sys.stderr if warn is None else warn
    good, bad = [], []
    for p in record_paths(runs_dir):
        if not p.is_file():
            continue
        try:
            rec = json.loads(p.read_text())
            reason = _validate(rec)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            reason = str(e)
        if reason is None:
            good.append((p, rec))
        else:
            bad.append(Reject(str(p), reason))
            print(f"warning: skipped corrupt record {p}: {reason}", file=warn)
    return good, bad


def _get(d: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def cell_id(rec: Mapping[str, Any]) -> str:
    """Identity of the cell a record belongs to: its config minus ``seed`` (records differing only in seed share it).

    A record without a config falls back to its main fields minus seed.
    """
    config = rec.get("config") or {}
    if config:
        body = {k: v for k, v in config.items() if k != "seed"}
    else:
        outcome = ("seed", "status", "top1", "config_hash")
        body = {k: rec.get(k) for k in REQUIRED + ("graph", "bn_fold", "train_epochs") if k not in outcome}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# A QAT cell whose final top-1 is within CHANCE_MARGIN points of chance (100 / classes %) did not converge (MQBench's
# "NC"): it collapsed to a constant prediction.
CHANCE_MARGIN = 1.0


def at_chance(top1: float, classes: int | None) -> bool:
    """Whether ``top1`` (%) is no better than guessing among ``classes`` classes (False when that is unknown)."""
    return classes is not None and math.isfinite(top1) and top1 <= 100.0 / classes + CHANCE_MARGIN


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _schema(rec: Mapping[str, Any]) -> int:
    v = rec.get("schema_version")
    return v if isinstance(v, int) and not isinstance(v, bool) else 1  # records before the field: schema 1


def _meta(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``<axis>_order`` / ``<axis>_label`` columns of a record (None where it does not say: schema 1)."""
    labels, order = rec.get("labels") or {}, rec.get("order") or {}
    row: dict[str, Any] = {}
    for axis in AXES:
        lab, pos = labels.get(axis), order.get(axis)
        row[label_column(axis)] = lab if isinstance(lab, str) and lab else None
        row[order_column(axis)] = pos if isinstance(pos, int) and not isinstance(pos, bool) else None
    return row


def launch_overrides(path: Path) -> str | None:
    """The Hydra overrides the record's run was launched with (``.hydra/overrides.yaml`` beside its result.json), as a
    JSON list: what ``python -m bench audit`` re-runs it with. None when the run folder does not have them."""
    f = Path(path).parent / ".hydra" / "overrides.yaml"
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    import yaml

    try:
        items = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError:
        return None
    return json.dumps([str(x) for x in items]) if isinstance(items, list) else None


def flatten(path: Path, rec: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row of a record: its main fields, the config fields the table filters read, and its path."""
    cfg = rec.get("config") or {}
    top1 = _num(rec.get("top1"))
    status, kind = rec["status"], algo_kind(rec)
    if status == "ok" and not math.isfinite(top1):
        status = "nc"  # an accuracy that is not a number is a diverged run
    elif status == "ok" and kind == "qat" and at_chance(top1, num_classes(rec)):
        status = "nc"  # trained to chance level; PTQ keeps its number, as the paper prints collapsed PTQ cells
    row = {k: rec.get(k) for k in RECORD_COLUMNS if k in rec}
    row.update(
        kind=kind, status=status, top1=top1, fp32_top1=_num(rec.get("fp32_top1")),
        top5=_num(rec.get("top5")), init_top1=_num(rec.get("init_top1")), cell_id=cell_id(rec),
        num_classes=num_classes(rec), overrides=launch_overrides(path),
        torch_threads=_get(rec, "extra.launch.torch_threads"), cpu=cpu_of(rec),
        quant_graph=_get(cfg, "quant.graph"), quant_bn_fold=_get(cfg, "quant.bn_fold"),
        quant_only=_get(cfg, "quant.only", "all"), quant_bypass=bool(_get(cfg, "quant.bypass", False)),
        first_last_bits=_get(cfg, "quant.first_last_bits"), sensitivity=bool(_get(cfg, "quant.sensitivity", False)),
        bn_recalib=bool(_get(cfg, "ptq.bn_recalib", False)), cle=bool(_get(cfg, "ptq.cle", False)),
        bias_correction=str(_get(cfg, "ptq.bias_correction", "none") or "none"),
        per_channel=_get(cfg, "hw.weight.per_channel"), smoke=bool(_get(cfg, "debug.smoke", False)),
        calib_size=_get(cfg, "data.calib_size"), train_epochs=int(rec.get("train_epochs") or 0),
        finished_at=str(rec.get("finished_at") or rec.get("started_at") or ""), path=str(path),
        metrics=str(Path(path).with_name("metrics.jsonl")), schema_version=_schema(rec), **_meta(rec),
    )
    extra = rec.get("extra")
    if isinstance(extra, Mapping):  # the advanced-PTQ table's cost columns (tables.ptq_advanced)
        row.update({k: _num(extra.get(k)) for k in EXTRA_FIELDS})
        recon = extra.get("recon")
        row["recon_preset"] = recon.get("preset") if isinstance(recon, Mapping) else None
    dep = _get(rec, "extra.deploy")
    if isinstance(dep, Mapping):  # deploy.check: fake-quant vs integer execution
        row.update({f"deploy_{k}": dep.get(k) for k in DEPLOY_FIELDS})
    ort = _get(rec, "extra.onnx")
    if isinstance(ort, Mapping):  # deploy.onnx: the exported model run by onnxruntime
        row.update({f"onnx_{k}": ort.get(k) for k in ONNX_FIELDS})
    return row


# extra.deploy fields of a record with deploy.check=true (bench.deploy.check.check_real)
DEPLOY_FIELDS = ("status", "reason", "requant", "rounding", "fake_top1", "int_top1", "agreement",
                 "max_abs_logit_diff_units", "mean_abs_logit_diff_units", "int32_overflows", "n")
# extra.onnx fields of a record with deploy.onnx=true (bench.deploy.onnx_export.ort_check)
ONNX_FIELDS = ("status", "reason", "fake_top1", "ort_top1", "ort_float_top1", "agreement", "max_abs_logit_diff",
               "n", "onnxruntime")
# numeric extra fields: reconstruction time (AdaRound / BRECQ / QDrop / IOSO), Bit-Split's time, IOSO's integer ops
EXTRA_FIELDS = ("recon_s", "bitsplit_s", "ioso_int_ops", "ioso_isg_ops", "ioso_isg_ops_ratio")


def records_frame(pairs: Iterable[tuple[Path, Mapping[str, Any]]]) -> pd.DataFrame:
    """All records as one DataFrame, one row per record (see :func:`flatten`)."""
    rows = [flatten(p, r) for p, r in pairs]
    df = pd.DataFrame(rows)
    for c in RECORD_COLUMNS + ["metrics", "sensitivity", "schema_version", "recon_preset", *EXTRA_FIELDS,
                               *META_COLUMNS]:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    return df


def dedup(df: pd.DataFrame) -> pd.DataFrame:
    """One record per ``config_hash`` (re-runs of one cell and seed): ok/nc beat failed, then the latest finish."""
    if df.empty:
        return df
    rank = (df["status"] != "failed").astype(int)
    order = df.assign(_rank=rank).sort_values(["config_hash", "_rank", "finished_at", "path"])
    return order.drop_duplicates("config_hash", keep="last").drop(columns="_rank").sort_values("path").reset_index(
        drop=True)


# Columns that describe a cell (equal for all its seeds); the first seed's value is kept.
CELL_COLUMNS = [
    "track", "algo", "kind", "arch", "hw", "w_bits", "a_bits", "calib_act", "calib_weight", "graph", "bn_fold",
    "train_epochs", "quant_graph", "quant_bn_fold", "quant_only", "quant_bypass", "first_last_bits", "sensitivity",
    "bn_recalib", "cle", "bias_correction", "per_channel", "smoke", "calib_size", "data", "schema_version",
    "recon_preset", *EXTRA_FIELDS, *META_COLUMNS,
] + [f"deploy_{k}" for k in DEPLOY_FIELDS] + [f"onnx_{k}" for k in ONNX_FIELDS]


def group_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Cells from deduplicated records: one row per ``cell_id`` over its ok/nc seeds (failed records are left out).

    Columns: the cell's descriptors, ``n`` (seeds), ``seeds``, ``mean``/``std``/``ci95`` of top-1 (sample std,
    Student-t), ``status`` (``nc`` if any seed did not converge; then mean/std/ci95 are NaN), ``fp32``, ``init``,
    ``wall_s`` (means of fp32_top1 / init_top1 / wall_s), ``finished_at`` (latest), ``path`` and ``metrics`` of the
    lowest seed.
    """
    live = df[df["status"] != "failed"] if not df.empty else df
    rows = []
    for cid, g in live.groupby("cell_id", sort=False):
        g = g.sort_values("seed")
        first = g.iloc[0]
        nc = bool((g["status"] == "nc").any())
        s = summarize([] if nc else finite(g["top1"]))
        init = summarize(finite(g["init_top1"]))
        fp32 = summarize(finite(g["fp32_top1"]))
        row = {c: first.get(c) for c in CELL_COLUMNS}
        wall = mean_or_nan(finite(_num(x) for x in g["wall_s"])) if "wall_s" in g else math.nan
        row.update(cell_id=cid, n=len(g), seeds=",".join(str(int(x)) for x in g["seed"]),
                   status="nc" if nc else "ok", mean=s.mean, std=s.std, ci95=s.ci95, init=init.mean,
                   fp32=fp32.mean, wall_s=wall, finished_at=max(g["finished_at"]), path=first["path"],
                   metrics=first["metrics"])
        rows.append(row)
    cols = CELL_COLUMNS + ["cell_id", "n", "seeds", "status", "mean", "std", "ci95", "init", "fp32", "wall_s",
                           "finished_at", "path", "metrics"]
    return pd.DataFrame(rows, columns=cols)


def failed_records(df: pd.DataFrame) -> pd.DataFrame:
    """The failed records after dedup (a later ok/nc re-run of the same config replaces its failure)."""
    if df.empty:
        return df
    cols = ["track", "algo", "arch", "hw", "w_bits", "a_bits", "seed", "config_hash", "error", "path"]
    return df.loc[df["status"] == "failed", cols].reset_index(drop=True)


# ---- table filters: which cells each table takes (all are explicit, tested predicates on the cell rows) ----

def _none(s: pd.Series) -> pd.Series:
    return s.isna()


def _ptq_flags_off(c: pd.DataFrame) -> pd.Series:
    return (~c["bn_recalib"].astype(bool)) & (~c["cle"].astype(bool)) & c["bias_correction"].isin(["none", "None"])


def plain_quant(c: pd.DataFrame) -> pd.Series:
    """All nodes quantized as the profile says: no debugging overrides."""
    return ((c["quant_only"].fillna("all") == "all") & (~c["quant_bypass"].astype(bool))
            & _none(c["first_last_bits"]) & (~c["sensitivity"].fillna(False).astype(bool)))


def self_describing(c: pd.DataFrame) -> bool:
    """Whether any of the records or cells ``c`` is a schema-2 record (it carries kind, num_classes, labels, order).

    The tables of the mini track's own views (tables.ptq_profiles ...) are written only then: a runs dir of schema-1
    records aggregates into exactly the files it always gave, byte for byte.
    """
    return "schema_version" in c and bool((pd.to_numeric(c["schema_version"], errors="coerce") >= 2).any())


def is_hardware_cell(c: pd.DataFrame) -> pd.Series:
    """Tables 4 and 7, robustness, Fig. 5/6: QAT on the profile's own graph and BN folding, nothing overridden."""
    return (c["kind"] == "qat") & _none(c["quant_graph"]) & _none(c["quant_bn_fold"]) & plain_quant(c) \
        & _ptq_flags_off(c)


def is_bnfold_cell(c: pd.DataFrame) -> pd.Series:
    """Table 5: QAT with ``quant.bn_fold`` set on the profile's graph, or the profile's own folding as baseline.

    Baseline cells (no override) are only used for profiles that have at least one override (see tables.table5).
    """
    return (c["kind"] == "qat") & _none(c["quant_graph"]) & plain_quant(c) & _ptq_flags_off(c)


def is_graph_cell(c: pd.DataFrame) -> pd.Series:
    """Table 6: QAT with ``quant.graph`` set on the profile's BN folding, or the profile's own graph as baseline."""
    return (c["kind"] == "qat") & _none(c["quant_bn_fold"]) & plain_quant(c) & _ptq_flags_off(c)


def is_ptq_cell(c: pd.DataFrame) -> pd.Series:
    """Table 10: ``algo=ptq`` with no BN re-calibration, CLE or bias correction, on the profile as it is."""
    return (c["algo"] == "ptq") & _none(c["quant_graph"]) & _none(c["quant_bn_fold"]) & plain_quant(c) \
        & _ptq_flags_off(c)


def is_bn_calib_cell(c: pd.DataFrame) -> pd.Series:
    """Table 11's BN-calib column: ``algo=ptq ptq.bn_recalib=true`` without CLE or bias correction."""
    return (c["algo"] == "ptq") & c["bn_recalib"].astype(bool) & (~c["cle"].astype(bool)) \
        & c["bias_correction"].isin(["none", "None"]) & _none(c["quant_graph"]) & _none(c["quant_bn_fold"]) \
        & plain_quant(c)


def resolve_slots(cells: pd.DataFrame, keys: list[str], prefer_calib: bool = False) -> tuple[pd.DataFrame, int]:
    """One cell per table slot (``keys``): several distinct cells can land in one slot (e.g. 1- and 3-epoch runs).

    Kept: a non-smoke cell first, then (``prefer_calib``) the paper's initialisation, then the default MinMax
    calibration, then the longest training, the most seeds and the latest finish. Returns the kept cells and how many
    were set aside.
    """
    if cells.empty:
        return cells, 0
    pair = list(zip(cells["calib_act"], cells["calib_weight"], strict=True))
    calib = pd.Series([2 if p == PAPER_INIT else 1 if p == DEFAULT_CALIB else 0 for p in pair], index=cells.index)
    ranked = cells.assign(_smoke=~cells["smoke"].astype(bool), _calib=calib if prefer_calib else True)
    ranked = ranked.sort_values(["_smoke", "_calib", "train_epochs", "n", "finished_at"])
    kept = ranked.drop_duplicates(keys, keep="last").drop(columns=["_smoke", "_calib"])
    return kept.sort_index(), len(cells) - len(kept)
