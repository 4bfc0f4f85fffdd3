"""Put the committed records of a results folder back into a runs folder (``python -m bench restore``).

A regeneration of the whole leaderboard takes longer than one machine may live. The committed results hold every
record: ``cells.csv`` and ``records.jsonl.gz``, whose lines carry the whole ``result.json`` (``record``), its config,
its training curve, its quantizer summary and its launch overrides. Restored into ``runs_dir``, they count as done:
the runner skips a cell whose ``config_hash`` is recorded there, so the regeneration resumes on the new machine
instead of re-running them, and the aggregator turns them into the same tables and the same bundle lines again.

Each record goes to ``<runs_dir>/<track>/restored/<config_hash>_<run folder name>/`` with ``result.json``,
``metrics.jsonl`` (the committed curve), ``.hydra/overrides.yaml`` and ``restored.json`` (where it came from, which
fields the committed results did not hold, the quantizer summary). Nothing is overwritten: a record whose cell is
already recorded under ``runs_dir`` is left out.

Results aggregated before the bundle carried ``record`` give a record rebuilt from the row of ``cells.csv`` and the
line's config: the table fields, accuracies and wall time (to the 4 decimals of cells.csv), times, commit, thread
count and deployment checks as committed, the status as the tables gave it (a QAT run trained to chance is ``nc``),
``kind`` / ``num_classes`` / ``labels`` / ``order`` from today's registries and the profile's config as the runner
writes them; ``versions``, ``data_fingerprint``, ``baseline`` and the rest of ``extra`` (the advanced-PTQ table's
cost columns among them) are not in those results and are left empty (``restored.json`` names them).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench.aggregate.bundle import BUNDLE_NAME, RESTORED_NAME, read_bundle
from bench.errors import BenchError
from bench.results import (
    FINAL,
    RECORD_NAME,
    SCHEMA_VERSION,
    STATUSES,
    ResultRecord,
    config_hash,
    git_sha,
    iter_records,
    write_atomic,
    write_json_atomic,
    write_record_once,
)

RESTORED_DIR = "restored"
# what a record rebuilt from cells.csv lacks (results aggregated before the bundle carried the whole record)
LEGACY_MISSING = (
    "versions", "data_fingerprint", "baseline",
    "extra (but launch.torch_threads, deploy, onnx): e.g. recon_s, bitsplit_s, ioso_* and recon.preset, the cost "
    "columns of the advanced-PTQ table",
    "digits: top1, top5, init_top1, fp32_top1 and wall_s as cells.csv writes them (4 decimals), deploy and onnx "
    "to 6 significant digits",
)


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` did: the run folders written, the records already there, the records left out (why)."""

    written: list[Path]
    present: list[str]
    skipped: list[tuple[str, str]]


def read_results(results: str | Path) -> tuple[list[dict[str, str]], dict[str, dict]]:
    """The rows of ``cells.csv`` (strings, as written) and the bundle's lines by config_hash; BenchError when the
    folder, its cells.csv or its bundle is missing."""
    root = Path(results)
    if not root.is_dir():
        raise BenchError(f"results={results} is not a directory; accepted: a results folder written by "
                         "`python -m bench aggregate` (e.g. results/fmnist-mini)")
    for name in ("cells.csv", BUNDLE_NAME):
        if not (root / name).is_file():
            raise BenchError(f"results={results} has no {name}; accepted: a folder written by `python -m bench "
                             "aggregate`")
    with (root / "cells.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    bundle = read_bundle(root / BUNDLE_NAME)
    if rows and not bundle:
        raise BenchError(f"{root / BUNDLE_NAME} is unreadable or empty while cells.csv lists {len(rows)} records; "
                         "accepted: the bundle `python -m bench aggregate` wrote beside it")
    return rows, bundle


def restore(results: str | Path, runs_dir: str | Path) -> Restored:
    """Write the committed records of ``results`` (cells.csv + records.jsonl.gz) into ``runs_dir`` as run folders
    that the runner and the aggregator read like the originals; see the module docstring."""
    rows, bundle = read_results(results)
    runs = Path(runs_dir)
    written: list[Path] = []
    present: list[str] = []
    skipped: list[tuple[str, str]] = []
    sha = git_sha()
    recorded = {(r.get("config_hash"), r.get("status")) for _, r in iter_records(runs)}  # one scan, not one per row
    for row in rows:
        h = row.get("config_hash") or ""
        if not h or row.get("status") not in STATUSES:
            skipped.append((h, f"status {row.get('status')!r} is not one of {', '.join(STATUSES)}"))
            continue
        statuses = FINAL if row["status"] in FINAL else STATUSES
        if any((h, s) in recorded for s in statuses):
            present.append(h)
            continue
        made = _record_of(row, bundle.get(h), results)
        if isinstance(made, str):
            skipped.append((h, made))
            continue
        record, line, origin = made
        # <config_hash>_<run folder name>, without the hash a folder restored before already starts with
        name = f"{h}_{Path(row.get('path') or '').parent.name.removeprefix(h + '_')}".rstrip("_")
        folder = runs / _safe(record.track) / RESTORED_DIR / name
        _write_folder(folder, row, line, origin, results, sha)
        if write_record_once(record, folder, runs) == folder / RECORD_NAME:  # not demoted to a duplicate
            written.append(folder / RECORD_NAME)
        recorded.add((h, record.status))
    return Restored(written, present, skipped)


def _record_of(row: dict[str, str], line: dict | None, results: str | Path
               ) -> tuple[ResultRecord, dict, dict[str, Any]] | str:
    """The record of a cells.csv row, its bundle line and its origin (source, missing fields, original run folder);
    or why it cannot be restored.
    Everything is checked before anything is written: a restore never leaves a folder without its record."""
    h = row["config_hash"]
    if line is None or not isinstance(line.get("config"), dict):
        return f"no config for it in {BUNDLE_NAME}"
    # a record restored before keeps its origin (a record rebuilt from cells.csv stays one)
    prior = line.get("restored") if isinstance(line.get("restored"), dict) else {}
    origin: dict[str, Any] = {"original_path": prior.get("original_path") or row.get("path")}
    if isinstance(line.get("record"), dict):
        if config_hash(line["config"]) != h:  # the config must be the one the record was computed with
            return "its config does not hash to its config_hash"
        rec = {**line["record"], "config": line["config"]}
        origin.update(source=str(prior.get("source") or "record"), missing=[str(m) for m in prior.get("missing") or []])
    else:
        rec = record_from_row(row, line)
        origin.update(source="cells.csv", missing=list(LEGACY_MISSING))
    if rec.get("config_hash") != h:
        return f"its record says config_hash {rec.get('config_hash')!r}"
    unknown = sorted(set(rec) - {f.name for f in fields(ResultRecord)})
    if unknown:
        raise BenchError(f"record {h} of {results} has field(s) {', '.join(unknown)} that this version's "
                         "ResultRecord does not know; restore it with the commit that wrote it")
    try:
        record = ResultRecord(**rec)
        json.dumps(record.to_dict(), allow_nan=False)
        if row.get("overrides") and not isinstance(line.get("overrides"), list):
            json.loads(row["overrides"])
    except (TypeError, ValueError) as e:
        return f"its record cannot be written back ({e})"
    return record, line, origin


def _safe(part: str) -> str:
    """A track name as one folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part).strip(".") or "unknown"


def _write_folder(folder: Path, row: dict[str, str], line: dict, origin: dict[str, Any], results: str | Path,
                  sha: str) -> None:
    """The files beside a restored result.json (written before it: a record is only ever seen complete)."""
    import yaml

    if isinstance(line.get("curve"), list):
        text = "".join(json.dumps(r) + "\n" for r in line["curve"])
        _write_text(folder / "metrics.jsonl", text)
    overrides = line.get("overrides")
    if not isinstance(overrides, list) and row.get("overrides"):
        overrides = json.loads(row["overrides"])
    if isinstance(overrides, list):
        _write_text(folder / ".hydra" / "overrides.yaml", yaml.safe_dump([str(o) for o in overrides]))
    write_json_atomic(folder / RESTORED_NAME, {
        "from": str(results), "original_path": origin["original_path"], "restored_by": sha,
        "source": origin["source"], "missing": origin["missing"], "quantizers": line.get("quantizers")})


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _num(v: str | None) -> float | None:
    try:
        x = float(v) if v not in (None, "") else math.nan
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _int(v: str | None) -> int | None:
    x = _num(v)
    return int(x) if x is not None else None


def record_from_row(row: dict[str, str], line: dict) -> dict[str, Any]:
    """A result record rebuilt from a cells.csv row and its bundle line (results aggregated before the bundle carried
    the whole record): the committed fields, plus what the runner derives from the config (kind, num_classes,
    labels, order)."""
    cfg = line["config"]
    desc = describe_config(cfg)
    extra: dict[str, Any] = {}
    threads = _int(row.get("torch_threads"))
    if threads is not None:
        extra["launch"] = {"torch_threads": threads}
    if row.get("cpu"):  # cells.csv's "model; ISA" kept whole: the aggregator writes it back unchanged
        extra.setdefault("launch", {})["cpu"] = str(row["cpu"])
    for key in ("deploy", "onnx"):
        if line.get(key) is not None:
            extra[key] = line[key]
    return {
        "track": row["track"], "algo": row["algo"], "calib_weight": row["calib_weight"],
        "calib_act": row["calib_act"], "hw": row["hw"], "graph": _int(row.get("graph")),
        "bn_fold": _int(row.get("bn_fold")), "arch": row["arch"], "data": row["data"],
        "w_bits": _int(row["w_bits"]), "a_bits": _int(row["a_bits"]), "seed": _int(row["seed"]),
        "status": row["status"], "fp32_top1": _num(row.get("fp32_top1")), "top1": _num(row.get("top1")),
        "top5": _num(row.get("top5")), "init_top1": _num(row.get("init_top1")),
        "train_epochs": _int(row.get("train_epochs")) or 0, "config_hash": row["config_hash"],
        "git_sha": row.get("git_sha") or "", "versions": {}, "wall_s": _num(row.get("wall_s")) or 0.0,
        "started_at": row.get("started_at") or "", "schema_version": SCHEMA_VERSION,
        "kind": row.get("kind") or desc["kind"], "num_classes": desc["num_classes"], "labels": desc["labels"],
        "order": desc["order"], "finished_at": row.get("finished_at") or "", "data_fingerprint": "",
        "baseline": {}, "error": row.get("error") or None, "extra": extra, "config": cfg,
    }


def describe_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``runner.describe`` of a record's config: the config in a record has no display fields of its profile
    (label, order), so they are read back from the profile's config file."""
    from omegaconf import OmegaConf

    from bench.config import CONF_DIR
    from bench.runner import describe

    c = OmegaConf.create(cfg)
    hw_file = CONF_DIR / "hw" / f"{c.hw.name}.yaml"
    if hw_file.is_file():
        hw = OmegaConf.load(hw_file)
        OmegaConf.set_struct(c, False)
        for key in ("label", "order"):
            if key in hw:
                c.hw[key] = hw[key]
    return describe(c)
