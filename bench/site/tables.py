"""A table CSV (+ its Markdown) -> the model of its HTML table: columns, rows with sort keys, heatmap colours, links
to cell pages, filter attributes, the paper's numbers.

Two shapes come out of ``python -m bench aggregate``: *grid* tables, whose column groups ``<g>_mean``, ``<g>_std``,
``<g>_ci95``, ``<g>_n``, ``<g>_status`` (and ``<g>_gap``, ``ref_<g>``) become one column per group, and *plain*
tables, shown column by column. Every CSV row is one HTML row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.site.cells import MATCH_COLUMNS, CellIndex, norm
from bench.site.discover import TableFile
from bench.site.reference import Reference

AXIS_COLUMNS = ("arch", "algo", "hw", "calib_act", "calib_weight")
MD_NAMES = {"calib_act": "A calib", "calib_weight": "W calib"}  # how the Markdown grid tables name key columns
GRID_FIELDS = ("mean", "std", "ci95", "n", "status", "overlaps_next")
NOT_GROUPS = ("FP32", "Avg. HW", "Avg. HW [paper]", "QAT algo")
# filters: axis -> (label, the columns that carry it in a row)
FILTERS = {"arch": ("arch", ("arch",)), "hw": ("profile", ("hw", "profile", "model")),
           "algo": ("algorithm", ("algo", "method")), "bits": ("bit-width", ("bits",))}
# column groups that are not grid axes: Table 11's, as records filters
TABLE11_GROUPS = {"ptq": {"algo": "ptq", "bn_recalib": False}, "bn_calib": {"algo": "ptq", "bn_recalib": True}}
OVERLAP_TITLE = "95% confidence interval overlaps the next-ranked algorithm's: the ranking is not significant"
Labels = dict[str, dict[str, str]]


@dataclass
class Column:
    """One HTML column: header text, role (``key``, ``num``, ``text``, ``group``, ``gap``, ``link``), tooltip and
    the axis values it belongs to (``data-g-<axis>`` attributes: a profile filter hides the other profiles)."""

    header: str
    role: str
    title: str = ""
    groups: dict[str, str] = field(default_factory=dict)


@dataclass
class HtmlCell:
    """One table cell: text, sort key, background colour, link, smaller lines under it, tooltip, CSS classes."""

    text: str
    order: str | None = None
    style: str = ""
    href: str = ""
    sub: list[str] = field(default_factory=list)
    title: str = ""
    cls: str = ""


@dataclass
class HtmlRow:
    """One row: its cells and its filter values (``data-f-<axis>``)."""

    cells: list[HtmlCell]
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class TableView:
    """A table ready to render."""

    table: TableFile
    columns: list[Column]
    rows: list[HtmlRow]
    filters: dict[str, list[tuple[str, str]]]  # axis -> [(value, label)], for the select boxes
    kind: str  # grid | plain
    heat_max: float = math.nan
    has_reference: bool = False
    legend: list[str] = field(default_factory=list)


# ---- numbers ----

def finite(x: Any) -> bool:
    """Whether ``x`` is a real number (not NaN, not a bool)."""
    if isinstance(x, bool) or x is None:
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt(x: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, '-' when missing."""
    return f"{float(x):.{digits}f}" if finite(x) else "-"


def heat_style(value: Any, vmax: float) -> str:
    """Background colour of a gap: red for a drop, blue for a gain, the shade by ``|value| / vmax`` (light enough for
    the number on it to stay readable)."""
    if not finite(value) or not finite(vmax) or vmax <= 0:
        return ""
    v = float(value)
    t = min(abs(v) / vmax, 1.0) ** 0.5  # square root: small gaps stay visible beside one very large one
    hue = 0 if v > 0 else 215
    return f"background-color: hsl({hue} 80% {97 - 38 * t:.0f}%)"


# ---- labels learned from the Markdown pages ----

def learn_labels(tables: list[TableFile], known: Mapping[str, set[str]]) -> Labels:
    """Display names of axis values (``tvm`` -> ``TVM``) as the aggregator's Markdown tables print them: key columns
    matched by name, row by row, and grid column groups named after axis values (``known``: the values per axis)."""
    labels: Labels = {a: {} for a in AXIS_COLUMNS}
    for t in tables:
        md, df = t.md, t.frame
        if not md.header or len(md.rows) != len(df):
            continue
        for col in AXIS_COLUMNS:
            name = MD_NAMES.get(col, col)
            if col in df.columns and name in md.header:
                j = md.header.index(name)
                for value, row in zip(df[col], md.rows, strict=True):
                    if j < len(row) and norm(value) and row[j] and row[j] != "-":
                        labels[col].setdefault(norm(value), row[j].strip("*"))
        groups = grid_groups(df)
        md_groups = _md_group_headers(t, df, groups)
        for g, lab in zip(groups, md_groups, strict=False):
            for axis in ("hw", "algo", "arch"):
                if g in known.get(axis, set()):
                    labels[axis].setdefault(g, lab)
    return labels


def _md_group_headers(t: TableFile, df: pd.DataFrame, groups: list[str]) -> list[str]:
    """The Markdown header names of a grid table's column groups, in order ([] when they do not line up)."""
    keys = {MD_NAMES.get(c, c) for c in df.columns}
    heads = [h for h in t.md.header if h not in keys and h not in NOT_GROUPS]
    return heads if len(heads) == len(groups) else []


def grid_groups(df: pd.DataFrame) -> list[str]:
    """The column groups of a grid table (every ``g`` with ``g_mean`` and ``g_status``), in order."""
    return [c[: -len("_status")] for c in df.columns
            if c.endswith("_status") and f"{c[: -len('_status')]}_mean" in df.columns]


def known_values(index: CellIndex) -> dict[str, set[str]]:
    """The values of each axis among the records."""
    out: dict[str, set[str]] = {a: set() for a in AXIS_COLUMNS}
    for c in index:
        for a in AXIS_COLUMNS:
            v = norm(c.row.get(a))
            if v:
                out[a].add(v)
    return out


# ---- building a view ----

@dataclass
class _Ctx:
    table: TableFile
    index: CellIndex
    labels: Labels
    known: dict[str, set[str]]
    ref: Reference

    def label(self, axis: str, value: Any) -> str:
        v = norm(value)
        return self.labels.get(axis, {}).get(v, v)


def _stem_filters(stem: str, df: pd.DataFrame, known: Mapping[str, set[str]]) -> dict[str, Any]:
    """Grid values a table's file name fixes: its bit setting (``_w4a4``) and a profile named in it
    (``table5_bnfold_tensorrt_w4a4``, ``qat_w4a4_academic``)."""
    out: dict[str, Any] = {}
    m = re.search(r"(?:^|_)w(\d+)a(\d+)(?:_|$)", stem)
    if m and "w_bits" not in df.columns and "bits" not in df.columns:
        out["w_bits"], out["a_bits"] = int(m.group(1)), int(m.group(2))
    if "hw" not in df.columns:
        for token in stem.split("_"):
            if token in known.get("hw", set()):
                out["hw"] = token
        if re.match(r"table[56]_", stem) and "hw" not in out:
            out["hw"] = "academic"
    return out


def _row_filters(row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    f = dict(base)
    for c in MATCH_COLUMNS:
        if c in row and norm(row[c]):
            f[c] = row[c]
    bits = re.fullmatch(r"w(\d+)a(\d+)", norm(row.get("bits")))
    if bits:
        f["w_bits"], f["a_bits"] = int(bits.group(1)), int(bits.group(2))
    return f


def _group_axis(stem: str, groups: list[str], known: Mapping[str, set[str]]) -> str:
    """Which grid column the groups of a table are values of ('' when none)."""
    if stem.startswith("table5_"):
        return "bn_fold"
    if stem.startswith("table6_"):
        return "graph"
    for axis in ("hw", "algo", "arch"):
        if groups and all(g in known.get(axis, set()) for g in groups):
            return axis
    return ""


def _column_axis(col: str, known: Mapping[str, set[str]]) -> tuple[str, str] | None:
    """(axis, value) when a plain table's column is named after an axis value (``tvm``, ``tvm_top1``, ``tvm_n``)."""
    base = re.sub(r"_(top1|mean|std|ci95|n|status|gap|drop)$", "", col)
    for axis in ("hw", "algo", "arch"):
        if base in known.get(axis, set()):
            return axis, base
    return None


def _filter_values(row: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for axis, (_, cols) in FILTERS.items():
        for c in cols:
            v = norm(row.get(c))
            if v:
                out[axis] = v.split("/")[0] if c == "model" else v
                break
    if "bits" not in out and norm(row.get("w_bits")) and norm(row.get("a_bits")):
        out["bits"] = f"w{norm(row.get('w_bits'))}a{norm(row.get('a_bits'))}"
    return out


def build_view(table: TableFile, index: CellIndex, labels: Labels, known: dict[str, set[str]],
               ref: Reference, prefix: str = "../") -> TableView:
    """The HTML model of one table (``prefix``: the path from its page to the site root)."""
    ctx = _Ctx(table, index, labels, known, ref)
    df = table.frame
    groups = grid_groups(df)
    view = _grid(ctx, groups, prefix) if groups else _plain(ctx, prefix)
    # filter options, in the order the rows give them
    options: dict[str, dict[str, str]] = {}
    for r in view.rows:
        for axis, v in r.filters.items():
            options.setdefault(axis, {}).setdefault(v, ctx.label(axis if axis != "bits" else "", v))
    for col in view.columns:
        for axis, v in col.groups.items():
            options.setdefault(axis, {}).setdefault(v, ctx.label(axis, v))
    view.filters = {a: list(o.items()) for a, o in options.items() if len(o) > 1 and a in FILTERS}
    return view


def _key_cell(ctx: _Ctx, col: str, value: Any, numeric: bool) -> HtmlCell:
    if col == "verdict":  # the findings scorecard: the verdict's word carries it, its colour repeats it
        text = norm(value) or "-"
        return HtmlCell(text, cls="verdict verdict-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-"))
    if col in AXIS_COLUMNS:
        text = ctx.label(col, value) if norm(value) else "-"
        return HtmlCell(text, title=norm(value) if text != norm(value) else "")
    if numeric:
        if finite(value) and float(value).is_integer() and not isinstance(value, float):
            return HtmlCell(str(int(value)), order=str(int(value)))
        return HtmlCell(fmt(value) if finite(value) else "-", order=str(float(value)) if finite(value) else "-")
    return HtmlCell("-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _grid(ctx: _Ctx, groups: list[str], prefix: str) -> TableView:
    df, t = ctx.table.frame, ctx.table
    gset = set(groups)
    members = {f"{g}_{f}" for g in groups for f in GRID_FIELDS} | {f"ref_{g}" for g in groups} \
        | {f"ref_{g}_std" for g in groups} | {"avg_hw_std", "avg_hw_n", "ref_avg_hw_std"}
    gap_cols = [c for c in df.columns if c.endswith("_gap") and c[: -len("_gap")] in gset]
    axis = _group_axis(t.stem, groups, ctx.known)
    md_heads = _md_group_headers(t, df, groups)
    head = dict(zip(groups, md_heads, strict=True)) if md_heads else {}
    base = _stem_filters(t.stem, df, ctx.known)
    gaps = [float(v) for c in gap_cols for v in df[c] if finite(v)]
    vmax = max((abs(v) for v in gaps), default=math.nan)
    columns: list[Column] = []
    plan: list[tuple[str, str]] = []  # (role, csv column or group)
    for c in df.columns:
        if c.endswith("_mean") and c[: -len("_mean")] in gset:
            g = c[: -len("_mean")]
            label = head.get(g) or (ctx.label(axis, g) if axis in AXIS_COLUMNS else g)
            label = {"bn_fold": f"BN fold {g}", "graph": f"graph {g}"}.get(axis, label)
            title = {"bn_fold": f"BN folding strategy {g}", "graph": f"graph variant {g}"}.get(axis, label)
            member = {axis: g} if axis in ("hw", "algo") else {}
            columns.append(Column(label, "group", f"top-1 % ({title})", member))
            plan.append(("group", g))
            if f"{g}_gap" in gap_cols:  # the gap beside its profile: sortable, shaded
                columns.append(Column(f"{label} gap", "gap", f"hardware gap on {label}: academic - {label} top-1 "
                                      "(points, positive = drop)", member))
                plan.append(("gap", f"{g}_gap"))
        elif c in gap_cols:
            continue
        elif c == "avg_hw_mean":
            columns.append(Column("Avg. HW", "num", "mean ± population std over the hardware profiles (NC = 0)"))
            plan.append(("avg", "avg_hw"))
        elif c == "ref_avg_hw_mean":
            columns.append(Column("Avg. HW [paper]", "num", "the paper's Avg. HW (ImageNet)"))
            plan.append(("avg", "ref_avg_hw"))
        elif c in members:
            continue
        else:
            header = {"fp32": "FP32", "qat_algo": "QAT algo"}.get(c, c)
            numeric = _is_numeric(df[c]) and c not in AXIS_COLUMNS
            columns.append(Column(header, "num" if numeric else "key"))
            plan.append(("num" if numeric else "key", c))
    rows: list[HtmlRow] = []
    any_ref = False
    for _, r in df.iterrows():
        row = r.to_dict()
        filt = _row_filters(row, base)
        cells: list[HtmlCell] = []
        for role, name in plan:
            if role == "group":
                cell = _group_cell(row, name)
                slot = dict(filt)
                if t.stem.startswith("table11"):
                    slot.update(TABLE11_GROUPS.get(name, {"algo": row.get("qat_algo") or "lsq"}))
                elif axis:
                    slot[axis] = name
                if (axis or t.stem.startswith("table11")) and norm(row.get("arch")) and \
                        norm(row.get(f"{name}_status")) in ("ok", "nc"):
                    target = ctx.index.match(t.folder, slot, _float(row.get(f"{name}_mean")),
                                             norm(row.get(f"{name}_status")))
                    if target is not None:
                        cell.href = prefix + target.page
                label, paper = _paper(ctx, row, name)
                if paper:
                    cell.sub.append(f"{label} {paper}")
                    any_ref = True
                cells.append(cell)
            elif role == "gap":
                v = row.get(name)
                cells.append(HtmlCell(fmt(v), order=str(float(v)) if finite(v) else "-", style=heat_style(v, vmax),
                                      title="academic - profile top-1 (points)", cls="gap"))
            elif role == "avg":
                m, s, n = row.get(f"{name}_mean"), row.get(f"{name}_std"), row.get(f"{name}_n", 1)
                text = f"{fmt(m)} ± {fmt(s)}" if finite(n) and float(n) > 0 and finite(m) else "-"
                cells.append(HtmlCell(text, order=str(float(m)) if finite(m) else "-"))
            else:
                cells.append(_key_cell(ctx, name, row.get(name), role == "num"))
        rows.append(HtmlRow(cells, _filter_values({**row, **{k: v for k, v in base.items() if k == "hw"}})))
    legend = []
    if gap_cols:
        legend.append("Gap columns: academic minus profile top-1 in points; the shade grows with the size of the gap "
                      "(red: a drop, blue: a gain). The number is always printed.")
    if any_ref:
        legend.append(_ref_legend(df))
    return TableView(t, columns, rows, {}, "grid", vmax, any_ref, legend)


def _float(x: Any) -> float | None:
    return float(x) if finite(x) else None


def _group_cell(row: Mapping[str, Any], g: str) -> HtmlCell:
    status = norm(row.get(f"{g}_status"))
    mean, std, n, ci = row.get(f"{g}_mean"), row.get(f"{g}_std"), row.get(f"{g}_n"), row.get(f"{g}_ci95")
    if status == "nc":
        return HtmlCell("NC", order="-", title="not converged", cls="nc")
    if status != "ok" or not finite(mean):
        return HtmlCell("-", order="-", title=status or "missing", cls="missing")
    text = fmt(mean)
    sub = []
    title = "top-1 %"
    if finite(n) and int(float(n)) >= 2 and finite(std):
        text += f" ± {fmt(std)}"
        sub.append(f"n={int(float(n))}" + (f" · 95% CI ± {fmt(ci)}" if finite(ci) else ""))
        title = f"mean ± sample std over {int(float(n))} seeds"
    cell = HtmlCell(text, order=str(float(mean)), sub=sub, title=title)
    if str(row.get(f"{g}_overlaps_next")).lower() == "true":
        cell.text += " ≈"
        cell.title += "; ≈: " + OVERLAP_TITLE
    return cell


def _paper(ctx: _Ctx, row: Mapping[str, Any], g: str | None) -> tuple[str, str]:
    """(label, value) of the paper's number for a slot: the CSV's own ``ref_<g>`` (ImageNet track), else
    ``results/reference``; ('', '') when there is none."""
    if g is not None and finite(row.get(f"ref_{g}")):
        std = row.get(f"ref_{g}_std")
        return "paper", f"{float(row[f'ref_{g}']):g}" + (f" ± {float(std):g}" if finite(std) else "")
    v = ctx.ref.value(ctx.table.stem, dict(row), g)
    return (ctx.ref.label, v) if v else ("", "")


def _ref_legend(df: pd.DataFrame) -> str:
    if any(c.startswith("ref_") for c in df.columns):
        return "paper: the paper's ImageNet accuracy."
    return ("ImageNet (MQBench): the paper's ImageNet numbers (results/reference/), on the paper's full-size "
            "architecture; this track is Fashion-MNIST at 32 px on mini architectures, so compare rankings and gaps, "
            "not accuracies.")


def _plain(ctx: _Ctx, prefix: str) -> TableView:
    df, t = ctx.table.frame, ctx.table
    visible = [c for c in df.columns if not c.endswith("_n")]
    md_head = t.md.header if len(t.md.header) == len(visible) else []
    head = dict(zip(visible, md_head, strict=True)) if md_head else {}
    base = _stem_filters(t.stem, df, ctx.known)
    gap_cols = [c for c in df.columns if "gap" in c and _is_numeric(df[c])]
    gaps = [float(v) for c in gap_cols for v in df[c] if finite(v)]
    vmax = max((abs(v) for v in gaps), default=math.nan)
    columns = []
    for c in df.columns:
        numeric = _is_numeric(df[c]) and c not in AXIS_COLUMNS
        role = "gap" if c in gap_cols else ("num" if numeric else "key")
        ca = _column_axis(c, ctx.known) if c not in AXIS_COLUMNS else None
        columns.append(Column(head.get(c, c), role, groups={ca[0]: ca[1]} if ca and ca[0] in ("hw", "algo") else {}))
    identifying = "top1" in df.columns or {"arch", "algo", "hw"} <= set(df.columns) | set(base)
    records_table = t.category == "records" and "config_hash" in df.columns
    targets = []
    for _, r in df.iterrows():
        row = r.to_dict()
        target = None
        if records_table:
            target = ctx.index.get(norm(row.get("config_hash")))
        elif identifying:
            filt = _row_filters(row, base)
            if "arch" in filt:
                target = ctx.index.match(t.folder, filt, _float(row.get("top1")), norm(row.get("status")) or None,
                                         strict=True)
        targets.append(target)
    link = any(x is not None for x in targets)  # a column of links only where some row has its record
    if link:
        columns.append(Column("record", "link", "the cell page: record, command, config, curve, quantizers"))
    paper_rows = []
    for _, r in df.iterrows():
        row = r.to_dict()
        paper_rows.append(_paper(ctx, row, None)[1] if t.stem.startswith("qat_") else "")
    has_ref = any(paper_rows)
    if has_ref:
        columns.append(Column("paper (ImageNet)", "text", _ref_legend(df)))
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        row = r.to_dict()
        cells = []
        for c, col in zip(df.columns, columns, strict=False):
            v = row.get(c)
            if col.role == "gap":
                cells.append(HtmlCell(fmt(v), order=str(float(v)) if finite(v) else "-", style=heat_style(v, vmax),
                                      cls="gap"))
            elif c == "config_hash" and records_table:
                cells.append(HtmlCell(str(v), href=f"{prefix}cells/{v}.html"))
            else:
                cells.append(_key_cell(ctx, c, v, col.role == "num"))
        if link:
            target = targets[i]
            cells.append(HtmlCell("open", href=prefix + target.page) if target else HtmlCell("-"))
        if has_ref:
            cells.append(HtmlCell(paper_rows[i] or "-"))
        rows.append(HtmlRow(cells, _filter_values({**row, **{k: v for k, v in base.items() if k == "hw"}})))
    legend = []
    if gap_cols:
        legend.append("Gap columns are shaded by size (red: a drop, blue: a gain); the number is always printed.")
    if has_ref:
        legend.append(_ref_legend(df))
    return TableView(t, columns, rows, {}, "plain", vmax, has_ref, legend)
