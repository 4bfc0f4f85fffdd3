"""Writing tables: CSV (numbers) and Markdown (the paper's layout), atomically (temp file + os.replace)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.aggregate.axes import AXES, Axes
from bench.aggregate.tables import ACADEMIC, AVG_ARCH, Table, groups_of
from bench.results import write_atomic

OVERLAP_MARK = "≈"
OVERLAP_NOTE = (f"{OVERLAP_MARK}: 95% confidence interval overlaps the next-ranked algorithm's: the ranking is not "
                "significant")
SINGLE_SEED_NOTE = "one seed per cell: no confidence intervals, no significance marks"


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def csv_text(df: pd.DataFrame) -> str:
    """CSV of a frame, floats rounded to 4 decimals (no 69.33999999 noise)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out.to_csv(index=False, lineterminator="\n")


def pretty(axes: Axes, column: str, value: object) -> str:
    """Display name of ``value`` in a column named ``column``: its label if the column is a grid axis (algo, hw,
    arch, calib_act, calib_weight), else the value as it is."""
    return axes.label(column, value) if column in AXES else str(value)


def _finite(x: object) -> bool:
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals; '-' for NaN / missing."""
    return f"{float(x):.{digits}f}" if _finite(x) else "-"


def ref_text(x: object) -> str:
    """A reference-table entry as the paper prints it ('NC' stays, numbers in short form)."""
    if isinstance(x, str):
        return x
    return f"{float(x):g}" if _finite(x) else ""


def cell_text(mean: object, std: object, n: object, status: object, gap: object = None, ref: object = None,
              ref_std: object = None, overlap: bool = False) -> str:
    """One Markdown cell: ``mean[ ± std][ (gap)][ ≈][ [ref]]``; 'NC' for not converged, '-' for missing."""
    if status == "nc":
        text = "NC"
    elif status != "ok" or not _finite(mean):
        text = "-"
    else:
        text = num(mean)
        if _finite(n) and int(n) >= 2 and _finite(std):
            text += f" ± {num(std)}"
        if _finite(gap):
            text += f" ({num(gap)})"
        if overlap:
            text += f" {OVERLAP_MARK}"
    r = ref_text(ref) if ref is not None else ""
    if r:
        text += f" [{r}" + (f" ± {ref_text(ref_std)}" if _finite(ref_std) else "") + "]"
    return text


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _key_text(axes: Axes, col: str, value: object) -> str:
    if col == "arch" and value == AVG_ARCH:
        return f"**{AVG_ARCH}**"
    if col in AXES:
        return axes.label(col, value)
    return str(int(value)) if _finite(value) and float(value).is_integer() else str(value)


def group_text(table: Table, group: object) -> str:
    """Header of a column group: the table's own label for it, else its label on the table's group axis."""
    name = str(group)
    if name in table.labels:
        return table.labels[name]
    return table.axes.label(table.group_axis, name) if table.group_axis else name


def grid_markdown(table: Table) -> str:
    """The Markdown body of a grid table: key columns, FP32, one column per group, then Avg. HW if present."""
    df = table.frame
    groups = groups_of(df)
    has_fp32 = "fp32" in df
    has_avg = "avg_hw_mean" in df
    header = [{"calib_act": "A calib", "calib_weight": "W calib"}.get(k, k) for k in table.keys]
    header += ["FP32"] if has_fp32 else []
    header += [group_text(table, g) for g in groups]
    header += ["Avg. HW"] + (["Avg. HW [paper]"] if "ref_avg_hw_mean" in df else []) if has_avg else []
    if "qat_algo" in df:
        header.append("QAT algo")
    rows = []
    for _, r in df.iterrows():
        row = [_key_text(table.axes, k, r[k]) for k in table.keys]
        if has_fp32:
            row.append(num(r["fp32"]))
        for g in groups:
            row.append(cell_text(r[f"{g}_mean"], r[f"{g}_std"], r[f"{g}_n"], r[f"{g}_status"], r.get(f"{g}_gap"),
                                 r.get(f"ref_{g}"), r.get(f"ref_{g}_std"), bool(r[f"{g}_overlaps_next"])))
        if has_avg:
            row.append(f"{num(r['avg_hw_mean'])} ± {num(r['avg_hw_std'])}" if r["avg_hw_n"] else "-")
            if "ref_avg_hw_mean" in df:
                row.append(f"{num(r['ref_avg_hw_mean'])} ± {num(r['ref_avg_hw_std'])}"
                           if _finite(r["ref_avg_hw_mean"]) else "-")
        if "qat_algo" in df:
            row.append(table.axes.label("algo", r["qat_algo"]) if _finite(r.get("qat_mean")) else "-")
        rows.append(row)
    return md_table(header, rows)


def plain_markdown(df: pd.DataFrame, keys: Sequence[str], digits: int = 2, axes: Axes | None = None,
                   group_axis: str = "") -> str:
    """A table of plain values: key columns as names, numbers with ``digits`` decimals, ``*_n`` columns hidden.

    Values of axis columns (algo, hw...) show their labels, and so do the headers of columns named by a value of
    ``group_axis`` (e.g. one column per profile).
    """
    axes = axes or Axes()
    cols = [c for c in df.columns if not c.endswith("_n")]
    header = [axes.label(group_axis, c) if group_axis and c not in keys else str(c) for c in cols]
    rows = []
    for _, r in df.iterrows():
        row = []
        for c in cols:
            v = r[c]
            if c in keys or isinstance(v, str) or v is None:
                row.append(pretty(axes, c, v) if c in keys or c in AXES else ("-" if v is None else str(v)))
            elif isinstance(v, bool):
                row.append(str(v))
            elif isinstance(v, int | np.integer):  # counts stay integers
                row.append(str(int(v)))
            else:
                row.append(num(v, digits))
        rows.append(row)
    return md_table(header, rows)


def counts_markdown(df: pd.DataFrame, axes: Axes | None = None) -> str:
    """Win counts as ``wins (share %)`` per column (``tables.best_counts``)."""
    axes = axes or Axes()
    cols = [c for c in df.columns if c != "algo" and not c.endswith("_share")]
    rows = []
    for _, r in df.iterrows():
        cells = [axes.label("algo", r["algo"])]
        for c in cols:
            share = r.get(f"{c}_share")
            pct = f" ({100 * share:.0f}%)" if _finite(share) and r["algo"] != "settings" else ""
            cells.append(f"{round(float(r[c]), 2):g}{pct}")
        rows.append(cells)
    return md_table(["algo"] + [c.replace("_", " ") for c in cols], rows)


def significance_note(df: pd.DataFrame) -> str:
    """The overlap legend when any cell has >= 2 seeds, else the single-seed note."""
    ns = [c for c in df.columns if c.endswith("_n") and c != "avg_hw_n"]
    multi = any(_finite(v) and int(v) >= 2 for c in ns for v in df[c])
    return OVERLAP_NOTE if multi else SINGLE_SEED_NOTE


def table_markdown(table: Table) -> str:
    """The whole Markdown page of a table: title, table, legend lines."""
    if table.kind == "sections":  # a page of headed tables after the legend (tables.ptq_advanced)
        parts = [f"## {head}\n\n" + plain_markdown(frame, keys, axes=table.axes)
                 for head, frame, keys in table.sections]
        return f"# {table.title}\n\n" + "".join(f"{n}\n\n" for n in table.notes) + "\n".join(parts)
    if table.kind == "grid":
        body = grid_markdown(table)
        notes = table.notes + [significance_note(table.frame)]
    else:
        body = plain_markdown(table.frame, table.keys, axes=table.axes, group_axis=table.group_axis)
        notes = list(table.notes)
        for name, extra in table.extra.items():
            if not extra.empty:
                body += f"\n{name}:\n\n" + (counts_markdown(extra, table.axes) if name == "counts" else
                                              plain_markdown(extra, ["algo"], axes=table.axes))
    return f"# {table.title}\n\n{body}\n" + "".join(f"{n}\n\n" for n in notes)


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.csv`` (+ ``<name>_<extra>.csv``) and ``<name>.md`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    paths = [write_text(out / f"{table.name}.csv", csv_text(table.frame))]
    for name, extra in table.extra.items():
        if not extra.empty:
            paths.append(write_text(out / f"{table.name}_{name}.csv", csv_text(extra)))
    paths.append(write_text(out / f"{table.name}.md", table_markdown(table)))
    return paths


def index_markdown(track: str, files: Sequence[str], counts: dict[str, int], git_shas: dict[str, int],
                   rejects: Sequence[tuple[str, str]] = (), tracks: Sequence[str] = ()) -> str:
    """``index.md``: what was written, how many records/cells/seeds/failed/rejected, tracks and git commits."""
    lines = [f"# Benchmark results: {track}", "", "Generated by `python -m bench aggregate` from the result records.",
             ""]
    lines += [f"- {k}: {v}" for k, v in counts.items()]
    lines.append(f"- tracks aggregated: {', '.join(tracks) if tracks else track}")
    lines += ["", "## Files", ""] + [f"- [{f}]({f})" for f in files]
    lines += ["", "## Commits of the records", ""] + [f"- `{sha}`: {n} record(s)" for sha, n in git_shas.items()]
    if rejects:
        lines += ["", "## Rejected records", ""] + [f"- `{p}`: {why}" for p, why in rejects]
    return "\n".join(lines) + "\n"


__all__ = ["ACADEMIC", "cell_text", "csv_text", "index_markdown", "table_markdown", "write_table",
           "write_text"]
