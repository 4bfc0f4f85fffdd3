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
line's config: every field the aggregator reads (the table fields, accuracies, wall time, times, commit, thread
count, deployment checks) as committed, the status as the tables gave it (a QAT run trained to chance is ``nc``),
``kind`` / ``num_classes`` / ``labels`` / ``order`` from the registries and the profile's config as the runner
writes them; ``versions``, ``data_fingerprint``, ``baseline`` and the rest of ``extra`` are not in those results
and are left empty (``restored.json`` names them).
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
    SCHEMA_VERSION,
    STATUSES,
    ResultRecord,
    git_sha,
    iter_records,
    write_atomic,
    write_json_atomic,
    write_record_once,
)

RESTORED_DIR = "restored"
# what a record rebuilt from cells.csv lacks (results aggregated before the bundle carried the whole record)
LEGACY_MISSING = ("versions", "data_fingerprint", "baseline", "extra (but launch.torch_threads, deploy, onnx)")


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
    return rows, read_bundle(root / BUNDLE_NAME)


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
        line = bundle.get(h)
        if not h or row.get("status") not in STATUSES:
            skipped.append((h, f"status {row.get('status')!r} is not one of {', '.join(STATUSES)}"))
            continue
        if line is None or not isinstance(line.get("config"), dict):
            skipped.append((h, f"no config for it in {BUNDLE_NAME}"))
            continue
        statuses = FINAL if row["status"] in FINAL else STATUSES
        if any((h, s) in recorded for s in statuses):
            present.append(h)
            continue
        if isinstance(line.get("record"), dict):
            # a record restored before keeps what it lacked then (a record rebuilt from cells.csv stays one)
            prior = line.get("restored") if isinstance(line.get("restored"), dict) else {}
            rec = {**line["record"], "config": line["config"]}
            source, missing = str(prior.get("source") or "record"), [str(m) for m in prior.get("missing") or []]
        else:
            rec, source, missing = record_from_row(row, line), "cells.csv", list(LEGACY_MISSING)
        if rec.get("config_hash") != h:
            skipped.append((h, f"its record says config_hash {rec.get('config_hash')!r}"))
            continue
        known = {f.name for f in fields(ResultRecord)}
        unknown = sorted(set(rec) - known)
        if unknown:
            raise BenchError(f"record {h} of {results} has field(s) {', '.join(unknown)} that this version's "
                             "ResultRecord does not know; restore it with the commit that wrote it")
        name = f"{h}_{Path(row.get('path') or '').parent.name}".rstrip("_")
        folder = runs / str(rec.get("track") or "unknown") / RESTORED_DIR / name
        _write_folder(folder, row, line, (source, missing), results, sha)
        write_record_once(ResultRecord(**rec), folder, runs)
        written.append(folder / "result.json")
        recorded.add((h, rec["status"]))
    return Restored(written, present, skipped)


def _write_folder(folder: Path, row: dict[str, str], line: dict, origin: tuple[str, list[str]], results: str | Path,
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
    prior = line.get("restored") if isinstance(line.get("restored"), dict) else {}
    write_json_atomic(folder / RESTORED_NAME, {
        "from": str(results), "original_path": prior.get("original_path") or row.get("path"), "restored_by": sha,
        "source": origin[0], "missing": origin[1],
        "quantizers": line.get("quantizers")})


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
