"""What a results folder holds: its tables (CSV + the Markdown beside), records (cells.csv, and records.jsonl.gz: what
their run folders hold), figures, README, findings.

Nothing here hard-codes today's file list: every CSV is a table (the Markdown beside it gives the title, the display
names of axis values and the legend); known stems get the paper's names (:data:`CATEGORIES`), unknown ones are shown
generically under "More tables".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.aggregate.bundle import BUNDLE_NAME
from bench.errors import BenchError

RECORDS_NAME = "cells.csv"  # one row per record: what `python -m bench aggregate` writes beside the tables
SITE_MARKER = ".bench-site"  # in every site `python -m bench site` writes
FINDINGS_STEM = "findings"

# (category key, display name, stem pattern) in page order; the first pattern that matches a table's stem wins.
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("findings", "Findings scorecard", r"^findings$"),
    ("table4", "Table 4: academic QAT", r"^table4_"),
    ("table5", "Table 5: BN folding", r"^table5_"),
    ("table6", "Table 6: graph variants", r"^table6_"),
    ("table7", "Table 7: hardware profiles", r"^table7_"),
    ("table10", "Table 10: PTQ calibration", r"^table10_"),
    ("table11", "Table 11: initialization", r"^table11"),
    ("ptq_lowbit", "Low-bit PTQ", r"^ptq_lowbit"),
    ("ptq_advanced", "Advanced PTQ", r"^ptq_advanced"),
    ("deploy", "Deployment checks", r"^(deploy_check|onnx_runtime)"),
    ("latency", "Latency", r"^latency"),
    ("records", "Records", r"^(cells|failed)$"),
    ("other", "More tables", r""),
)


@dataclass
class MarkdownTable:
    """The parts of a table's Markdown page: title, the first table's header and rows, and the legend text."""

    title: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: str = ""


@dataclass
class TableFile:
    """One table of the results folder: ``rel`` is its CSV path relative to the folder, without ``.csv``."""

    rel: str
    csv: Path
    frame: pd.DataFrame
    md: MarkdownTable
    category: str
    folder: str  # the sub-folder it lives in ("" for the top level): its rows link to that folder's records

    @property
    def stem(self) -> str:
        """The file name without ``.csv`` (``table7_hw_w4a4``)."""
        return self.csv.stem

    @property
    def slug(self) -> str:
        """The page name (``deploy--deploy_check`` for ``deploy/deploy_check.csv``)."""
        return self.rel.replace("/", "--")

    @property
    def title(self) -> str:
        """The Markdown title, else the file name."""
        return self.md.title or self.rel


@dataclass
class Results:
    """A validated results folder."""

    root: Path
    tables: list[TableFile]
    cells: pd.DataFrame  # every cells.csv of the folder (and its sub-folders), with ``folder``
    figures: list[Path]  # top-level PNGs
    curves: list[Path]  # curves/*.png
    readme: str
    index_md: str
    findings_md: str
    bundles: dict[str, Path] = field(default_factory=dict)  # folder -> its records.jsonl.gz (beside its cells.csv)

    def category_name(self, key: str) -> str:
        """Display name of a category key."""
        return next(name for k, name, _ in CATEGORIES if k == key)


def parse_markdown(text: str) -> MarkdownTable:
    """Title (first ``# `` line), the first GitHub table and the other paragraphs of a table's Markdown page."""
    out = MarkdownTable()
    lines = text.splitlines()
    notes: list[str] = []
    in_first = False
    seen_table = False
    for line in lines:
        s = line.strip()
        if s.startswith("# ") and not out.title:
            out.title = s[2:].strip()
            continue
        if s.startswith("|"):
            cells = _md_cells(s)
            if not seen_table:
                in_first = True
                seen_table = True
                out.header = cells
            elif in_first and not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                out.rows.append(cells)
            continue
        in_first = False
        if seen_table and s.startswith("## "):
            continue
        if s.endswith(":") and not s.startswith(("-", "*")) and seen_table:  # "counts:" before a second table
            continue
        notes.append(line)
    out.notes = "\n".join(notes).strip()
    return out


def _md_cells(line: str) -> list[str]:
    body = line.strip().strip("|")
    parts = re.split(r"(?<!\\)\|", body)
    return [p.strip().replace("\\|", "|") for p in parts]


def category_of(stem: str) -> str:
    """The category key of a table stem (:data:`CATEGORIES`)."""
    for key, _, pattern in CATEGORIES:
        if re.search(pattern, stem):
            return key
    return "other"


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"arch": str, "algo": str, "hw": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        return None


def check_results(path: str | Path) -> Path:
    """The results folder ``path`` if it exists and holds records (a non-empty ``cells.csv``), else a one-line
    :class:`BenchError` naming the value."""
    root = Path(path)
    if not root.exists():
        raise BenchError(f"results={path} does not exist; accepted: a folder written by python -m bench aggregate "
                         "(e.g. results/fmnist-mini)")
    if not root.is_dir():
        raise BenchError(f"results={path} is not a directory; accepted: a folder written by python -m bench aggregate")
    cells = root / RECORDS_NAME
    if not cells.is_file():
        raise BenchError(f"results={path} has no records (no {RECORDS_NAME}); build it with "
                         f"python -m bench aggregate runs=<runs dir> out={path}")
    frame = _read_csv(cells)
    if frame is None or frame.empty or "config_hash" not in frame.columns:
        raise BenchError(f"results={path} has no records ({RECORDS_NAME} is empty or not a records table); build it "
                         f"with python -m bench aggregate runs=<runs dir> out={path}")
    return root


def discover(path: str | Path) -> Results:
    """Validate ``path`` (:func:`check_results`) and read everything the site shows."""
    root = check_results(path)
    tables: list[TableFile] = []
    cells_parts: list[pd.DataFrame] = []
    bundles: dict[str, Path] = {}
    sites = {m.parent for m in root.rglob(SITE_MARKER)}  # a site built inside the results folder is not results
    for csv in sorted(root.rglob("*.csv")):
        rel_path = csv.relative_to(root)
        if any(p.startswith(".") for p in rel_path.parts) or rel_path.parts[0] == "curves" \
                or any(s in csv.parents for s in sites):
            continue
        frame = _read_csv(csv)
        if frame is None:
            continue
        folder = str(rel_path.parent) if rel_path.parent != Path(".") else ""
        if csv.name == RECORDS_NAME and "config_hash" in frame.columns:
            cells_parts.append(frame.assign(folder=folder))
            if (csv.parent / BUNDLE_NAME).is_file():
                bundles[folder] = csv.parent / BUNDLE_NAME
        md_path = csv.with_suffix(".md")
        md = parse_markdown(md_path.read_text(encoding="utf-8")) if md_path.is_file() else MarkdownTable()
        rel = str(rel_path.with_suffix("")).replace("\\", "/")
        category = "deploy" if folder == "deploy" and category_of(csv.stem) not in ("records",) else \
            category_of(csv.stem)
        if csv.name == "failed.csv" and frame.empty:
            continue
        tables.append(TableFile(rel, csv, frame, md, category, folder))
    order = {k: i for i, (k, _, _) in enumerate(CATEGORIES)}
    tables.sort(key=lambda t: (order[t.category], t.folder, t.rel))
    cells = pd.concat(cells_parts, ignore_index=True) if cells_parts else pd.DataFrame()
    if not cells.empty:
        cells = cells.drop_duplicates("config_hash", keep="first").reset_index(drop=True)
    figures = sorted(p for p in root.glob("*.png"))
    curves = sorted((root / "curves").glob("*.png")) if (root / "curves").is_dir() else []

    def text(name: str) -> str:
        p = root / name
        return p.read_text(encoding="utf-8") if p.is_file() else ""

    return Results(root, tables, cells, figures, curves, text("README.md"), text("index.md"),
                   text(f"{FINDINGS_STEM}.md"), bundles)
