"""The records behind the tables: one :class:`Cell` per row of ``cells.csv`` (one record, one seed), its run folder
when ``runs=`` has it (else its line of the results' ``records.jsonl.gz``), the command that re-runs it, its neighbours
in the grid, and which cell a table slot shows."""

from __future__ import annotations

import io
import json
import math
import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aggregate.bundle import BUNDLE_NAME, RESTORED_NAME, read_bundle, read_jsonl, summarize_qparams
from bench.aggregate.records import load_records
from bench.aggregate.stats import Summary, finite, summarize

# columns that place a record in the grid: two records equal on all of them but one are neighbours along that one
GRID_COLUMNS = ("track", "kind", "algo", "arch", "hw", "w_bits", "a_bits", "calib_act", "calib_weight", "quant_graph",
                "quant_bn_fold", "quant_only", "quant_bypass", "first_last_bits", "bn_recalib", "cle",
                "bias_correction", "train_epochs", "smoke", "data", "seed")
# the axes a cell page links along: name -> the grid columns that vary
NEIGHBOUR_AXES = {"hw": ("hw",), "algo": ("algo", "kind"), "arch": ("arch",), "bits": ("w_bits", "a_bits"),
                  "seed": ("seed",)}
# columns a table row can name that are grid columns too
MATCH_COLUMNS = ("arch", "algo", "hw", "w_bits", "a_bits", "calib_act", "calib_weight", "seed")
VALUE_TOLERANCE = 0.006  # table CSVs round to 4 decimals; seed means of the cells are recomputed here


def norm(value: Any) -> str:
    """A grid value as text, equal for the same value read from a CSV or a record (``4``, ``4.0``, ``"4"``; NaN and
    None are ``""``; booleans ``true`` / ``false``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    s = str(value).strip()
    if s.lower() in ("true", "false"):
        return s.lower()
    if s.lower() in ("nan", "none"):
        return ""
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if math.isfinite(f) and f.is_integer() else s


def _num(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f


@dataclass
class Cell:
    """One record: its ``cells.csv`` row and, when the runs folder has it, the record and its run folder; its line of
    the results' ``records.jsonl.gz`` when there is one."""

    config_hash: str
    row: dict[str, Any]
    record: dict[str, Any] | None = None
    run_dir: Path | None = None
    bundled: dict[str, Any] | None = None

    @property
    def page(self) -> str:
        """The cell page, relative to the site root."""
        return f"cells/{self.config_hash}.html"

    @property
    def cell_id(self) -> str:
        """The cell its seeds share (config minus seed)."""
        return norm(self.row.get("cell_id")) or _key(self.row, exclude=("seed",))

    @property
    def top1(self) -> float:
        """Top-1 of this record (NaN if none)."""
        return _num(self.row.get("top1"))

    @property
    def status(self) -> str:
        """ok | nc | failed."""
        return norm(self.row.get("status"))

    def title(self, labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
        """``LSQ · TVM · resnet18_mini · W4A4 · seed 0``."""
        labels = labels or {}
        r = self.row

        def lab(axis: str) -> str:
            v = norm(r.get(axis))
            return labels.get(axis, {}).get(v, v)

        bits = f"W{norm(r.get('w_bits'))}A{norm(r.get('a_bits'))}"
        parts = [lab("algo"), lab("hw"), lab("arch"), bits, f"seed {norm(r.get('seed'))}"]
        return " · ".join(p for p in parts if p)

    def file(self, name: str) -> Path | None:
        """A file of the run folder, if the folder and the file exist."""
        if self.run_dir is None:
            return None
        p = self.run_dir / name
        return p if p.is_file() else None


def _key(row: Mapping[str, Any], exclude: Iterable[str] = ()) -> str:
    skip = set(exclude)
    return "|".join(f"{c}={norm(row.get(c))}" for c in GRID_COLUMNS if c not in skip)


@dataclass
class CellIndex:
    """Every record of the results folder, by ``config_hash``, with lookups for seeds, neighbours and table slots."""

    cells: dict[str, Cell] = field(default_factory=dict)
    folders: dict[str, list[str]] = field(default_factory=dict)  # results sub-folder -> its config hashes
    runs: Path | None = None
    _cache: dict[tuple[str, ...], dict[str, list[Cell]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, frame: pd.DataFrame, runs: Path | None = None,
              bundles: Mapping[str, Path] | None = None) -> CellIndex:
        """Cells from the ``cells.csv`` rows (``folder`` column: the sub-folder each came from), joined with the
        records under ``runs`` by ``config_hash`` (ok/nc before failed, then the latest finish), and with the lines
        of ``bundles`` (folder -> its ``records.jsonl.gz``; a cell's own folder first)."""
        index = cls(runs=runs)
        for _, r in frame.iterrows():
            row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            h = norm(row.get("config_hash"))
            if not h or h in index.cells:
                continue
            index.cells[h] = Cell(h, row)
            index.folders.setdefault(norm(row.get("folder")), []).append(h)
        lines = {folder: read_bundle(path) for folder, path in (bundles or {}).items()}
        for cell in index.cells.values():
            own = norm(cell.row.get("folder"))
            for folder in sorted(lines, key=lambda f: f != own):
                if cell.config_hash in lines[folder]:
                    cell.bundled = lines[folder][cell.config_hash]
                    break
        if runs is not None:
            best: dict[str, tuple[tuple, Path, dict]] = {}
            pairs, _ = load_records(runs, warn=io.StringIO())
            for path, rec in pairs:
                h = str(rec.get("config_hash"))
                if h not in index.cells:
                    continue
                rank = (rec.get("status") != "failed", str(rec.get("finished_at") or ""))
                if h not in best or rank > best[h][0]:
                    best[h] = (rank, path, rec)
            for h, (_, path, rec) in best.items():
                index.cells[h].record = rec
                index.cells[h].run_dir = path.parent
        return index

    def __iter__(self):
        return iter(self.cells.values())

    def __len__(self) -> int:
        return len(self.cells)

    def get(self, config_hash: str) -> Cell | None:
        """The cell of a config hash."""
        return self.cells.get(config_hash)

    def _groups(self, exclude: tuple[str, ...]) -> dict[str, list[Cell]]:
        """Cells grouped by their grid key without ``exclude`` (cached)."""
        cache = self._cache.setdefault(exclude, {})
        if not cache:
            for c in self.cells.values():
                k = c.cell_id if exclude == ("cell_id",) else _key(c.row, exclude=exclude)
                cache.setdefault(k, []).append(c)
        return cache

    def seeds(self, cell: Cell) -> list[Cell]:
        """Every record of ``cell``'s cell (itself included), by seed."""
        same = self._groups(("cell_id",)).get(cell.cell_id, [cell])
        return sorted(same, key=lambda c: _num(c.row.get("seed")))

    def neighbours(self, cell: Cell) -> dict[str, list[Cell]]:
        """Per axis (hw, algo, arch, bits, seed) the records equal to ``cell`` in every other grid column."""
        out: dict[str, list[Cell]] = {}
        for axis, cols in NEIGHBOUR_AXES.items():
            near = [c for c in self._groups(cols).get(_key(cell.row, exclude=cols), []) if c is not cell]
            out[axis] = sorted(near, key=lambda c: tuple(norm(c.row.get(x)) for x in cols))
        return out

    def match(self, folder: str, filters: Mapping[str, Any], value: float | None = None,
              status: str | None = None, strict: bool = False) -> Cell | None:
        """The cell a table slot shows: records of ``folder`` equal to ``filters`` (grid columns), grouped into cells;
        where several cells fit, the one whose seed mean is the slot's ``value`` (or whose status is the slot's
        ``status``), then a non-smoke one with the most seeds, finished last. Returns its lowest seed.

        ``strict``: None unless exactly one cell fits (the filters do not name every grid column of the table).
        """
        hashes = self.folders.get(folder, [])
        want = {k: norm(v) for k, v in filters.items()}
        groups: dict[str, list[Cell]] = defaultdict(list)
        for h in hashes:
            c = self.cells[h]
            if c.status == "failed":
                continue
            if all(norm(c.row.get(k)) == v for k, v in want.items() if k in c.row):
                groups[c.cell_id].append(c)
        if not groups:
            return None
        cands = list(groups.values())
        if value is not None and math.isfinite(value):
            close = [g for g in cands if abs(seed_summary(g).mean - value) <= VALUE_TOLERANCE]
            cands = close if close or strict else cands
        elif status == "nc":
            cands = [g for g in cands if any(c.status == "nc" for c in g)] or cands
        if strict and len(cands) != 1:
            return None

        def rank(g: list[Cell]) -> tuple:
            return (norm(g[0].row.get("smoke")) != "true", len(g), max(str(c.row.get("finished_at") or "") for c in g))

        best = max(cands, key=rank)
        return min(best, key=lambda c: _num(c.row.get("seed")))


def seed_summary(cells: Iterable[Cell]) -> Summary:
    """Mean, sample std and 95% CI of the converged seeds' top-1 (NaN where a seed did not converge)."""
    cells = list(cells)
    if any(c.status == "nc" for c in cells):
        return Summary(len(cells), math.nan, math.nan, math.nan)
    return summarize(finite(c.top1 for c in cells if c.status == "ok"))


# ---- the command that re-runs a cell ----

def read_overrides(cell: Cell) -> list[str] | None:
    """The Hydra overrides the record's run was launched with (``.hydra/overrides.yaml``), or None."""
    path = cell.file(".hydra/overrides.yaml")
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return [str(x) for x in data] if isinstance(data, list) else None


def _dropped(override: str) -> bool:
    """Overrides that do not change the result (output paths, progress bars, launchers): left out of the command.
    ``threads`` stays: it is not in ``config_hash``, but low-bit QAT numbers depend on it."""
    from bench.config import NON_RESULT_KEYS

    key = override.split("=", 1)[0].lstrip("+~")
    return (key in NON_RESULT_KEYS and key != "threads") or key.startswith(("hydra/", "hydra.")) or key == "seeds"


def command_from_overrides(overrides: list[str], threads: int | None = None) -> str:
    """``python -m bench run <overrides>``: the record's overrides minus those that do not change ``config_hash``,
    plus ``threads=N`` (the torch threads it ran with) when the overrides do not say."""
    kept = [o for o in overrides if not _dropped(o)]
    if threads and not any(o.split("=", 1)[0].lstrip("+~") == "threads" for o in kept):
        kept.append(f"threads={threads}")
    return " ".join(["python -m bench run", *(shlex.quote(o) for o in kept)])


def row_overrides(row: Mapping[str, Any]) -> list[str] | None:
    """The launch overrides ``cells.csv`` keeps for a record (its ``overrides`` column: a JSON list), or None."""
    text = row.get("overrides")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return [str(x) for x in data] if isinstance(data, list) else None


def torch_threads(cell: Cell) -> int | None:
    """The torch threads the record ran with (its launch info, or cells.csv's ``torch_threads``), if known."""
    rec = cell.record or {}
    launch = rec.get("extra", {}).get("launch") if isinstance(rec.get("extra"), dict) else None
    for v in ((launch or {}).get("torch_threads"), cell.row.get("torch_threads")):
        n = _num(v)
        if math.isfinite(n) and n >= 1:
            return int(n)
    return None


def command_from_row(row: Mapping[str, Any]) -> str:
    """A command rebuilt from a ``cells.csv`` row (no run folder): the axes and the overrides the row records."""
    r = {k: norm(v) for k, v in row.items()}
    parts = [f"algo={r.get('algo')}", f"hw={r.get('hw')}", f"arch={r.get('arch')}"]
    parts += [f"bits=w{r.get('w_bits')}a{r.get('a_bits')}"]
    data = r.get("data", "")
    if data and data != "fashion_mnist":
        parts.append(f"data={data}")
    calib = (r.get("calib_act", ""), r.get("calib_weight", ""))
    if r.get("kind") == "qat" and calib != ("paper", "paper") and all(calib):
        parts += ["algo.init=calib", f"calib.act={calib[0]}", f"calib.weight={calib[1]}"]
    elif r.get("kind") == "ptq" and all(calib):
        parts += [f"calib.act={calib[0]}", f"calib.weight={calib[1]}"]
    for col, key in (("quant_graph", "quant.graph"), ("quant_bn_fold", "quant.bn_fold"),
                     ("first_last_bits", "quant.first_last_bits")):
        if r.get(col):
            parts.append(f"{key}={r[col]}")
    if r.get("quant_only") not in ("", "all", None):
        parts.append(f"quant.only={r['quant_only']}")
    for col, key in (("bn_recalib", "ptq.bn_recalib"), ("cle", "ptq.cle"), ("quant_bypass", "quant.bypass")):
        if r.get(col) == "true":
            parts.append(f"{key}=true")
    if r.get("bias_correction") not in ("", "none", None):
        parts.append(f"ptq.bias_correction={r['bias_correction']}")
    if r.get("kind") == "qat" and r.get("train_epochs") not in ("", "0", "1"):
        parts.append(f"train.epochs={r['train_epochs']}")
    if r.get("smoke") == "true":
        parts.append("debug=smoke")
    parts.append(f"seed={r.get('seed')}")
    return " ".join(["python -m bench run", *(shlex.quote(p) for p in parts)])


def rerun_command(cell: Cell) -> tuple[str, str]:
    """(command, source): from the run folder's ``.hydra/overrides.yaml`` (``run folder``), else from the overrides
    ``cells.csv`` keeps (``cells.csv``): both give back the record's ``config_hash``; else rebuilt from the record's
    row (``row``)."""
    threads = torch_threads(cell)
    overrides = read_overrides(cell)
    if overrides is not None:
        return command_from_overrides(overrides, threads), "run folder"
    overrides = row_overrides(cell.row)
    if overrides is not None:
        return command_from_overrides(overrides, threads), "cells.csv"
    return command_from_row(cell.row), "row"


# ---- what a run folder holds (or the results' records.jsonl.gz keeps of it) ----

def read_json(path: Path | None) -> Any:
    """A JSON file's content, or None."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


RUN_FOLDER, BUNDLE = "run folder", "bundle"  # where a page's details come from


@dataclass
class Details:
    """What a record page shows beyond its row: config, training curve rows, quantizer summary
    (:func:`bench.aggregate.bundle.summarize_qparams`), deployment and ONNX checks; None where not known.
    ``source``: :data:`RUN_FOLDER` or :data:`BUNDLE` (the results' ``records.jsonl.gz``, curve at most 200 rows)."""

    source: str
    config: dict[str, Any] | None = None
    curve: list[dict] | None = None
    quantizers: dict[str, Any] | None = None
    deploy: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        """The source as the page names it."""
        return "its run folder" if self.source == RUN_FOLDER else f"the results' {BUNDLE_NAME}"


def _dict(v: Any) -> dict | None:
    return v if isinstance(v, dict) else None


def details(cell: Cell) -> Details | None:
    """The record's details from its run folder when ``runs=`` has it, else from its line of the results'
    ``records.jsonl.gz``, else None."""
    if cell.record is not None:
        rec = cell.record
        extra = _dict(rec.get("extra")) or {}
        qname = str(extra.get("qparams_json") or "qparams.json")
        metrics = cell.file("metrics.jsonl")
        quantizers = summarize_qparams(read_json(cell.file(qname)))
        restored = cell.file(RESTORED_NAME)  # a record put back by `bench restore`: its summary as committed
        if quantizers is None and restored is not None:
            quantizers = _dict((_dict(read_json(restored)) or {}).get("quantizers"))
        return Details(RUN_FOLDER, _dict(rec.get("config")), read_jsonl(metrics) if metrics else None,
                       quantizers, _dict(extra.get("deploy")), _dict(extra.get("onnx")))
    b = cell.bundled
    if b is None:
        return None
    curve = b.get("curve")
    return Details(BUNDLE, _dict(b.get("config")),
                   [r for r in curve if isinstance(r, dict)] if isinstance(curve, list) else None,
                   _dict(b.get("quantizers")), _dict(b.get("deploy")), _dict(b.get("onnx")))


def qparams_rows(qparams: Any) -> list[dict[str, str]]:
    """One row per quantizer of ``qparams.json`` (:func:`quantizer_rows` of its summary)."""
    return quantizer_rows(summarize_qparams(qparams))


def quantizer_rows(summary: Any) -> list[dict[str, str]]:
    """One row per quantizer of a ``qparams.json`` summary (:func:`bench.aggregate.bundle.summarize_qparams`), in
    the file's order: kind, spec, integer range, scale and zero point (min..max over channels), the real range it
    represents and the learned values."""
    rows: list[dict[str, str]] = []
    if not isinstance(summary, Mapping):
        return rows
    quantizers = [(name, q) for name, q in summary.items() if isinstance(q, Mapping)]
    quantizers.sort(key=lambda nq: _num(nq[1].get("index")) if math.isfinite(_num(nq[1].get("index"))) else math.inf)
    for name, q in quantizers:
        rng = q.get("range")
        lo, hi = (_num(rng.get("min")), _num(rng.get("max"))) if isinstance(rng, Mapping) else (math.nan, math.nan)
        learned = q.get("learned")
        learned_text = ", ".join(f"{k}: {_span(v)}" for k, v in learned.items()) \
            if isinstance(learned, Mapping) else ""
        rows.append({"quantizer": str(name), "kind": str(q.get("kind") or ""), "spec": str(q.get("spec") or ""),
                     "int range": f"[{norm(q.get('qmin'))}, {norm(q.get('qmax'))}]",
                     "scale": _span(q.get("scale")), "zero point": _span(q.get("zero_point")),
                     "real range": f"[{_g(lo)}, {_g(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "-",
                     "channels": norm(q.get("channels")) or "0", "learned": learned_text})
    return rows


def _g(x: float) -> str:
    return f"{x:.4g}"


def _span(span: Any) -> str:
    """``lo .. hi`` (one value when equal) of a ``{min, max}`` summary; '-' when there is none."""
    if not isinstance(span, Mapping):
        return "-"
    lo, hi = _num(span.get("min")), _num(span.get("max"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return _g(lo) if lo == hi else f"{_g(lo)} .. {_g(hi)}"
