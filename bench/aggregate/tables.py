"""The benchmark tables (MQBench Tables 4-7, 10, 11, Fig. 5/6 data) as pure functions of the cells DataFrame.

Input: the cells of :func:`bench.aggregate.records.group_seeds` (one row per cell: descriptors, n, mean, std,
ci95, status). Grid tables come out wide: the row keys, then per column group ``g`` (a profile, an algorithm, a
BN-fold strategy...) the columns ``g_mean, g_std, g_ci95, g_n, g_status`` (``ok`` | ``nc`` | ``missing``) and
``g_overlaps_next`` (the cell's 95% CI overlaps the next-ranked competitor's), plus table-specific columns.

Conventions taken from the paper (checked against its own numbers in tests/aggregate/test_tables.py):
- hardware gap = academic accuracy - profile accuracy (positive = the drop);
- Avg. HW, Avg. Arch. and the Fig. 5 spread count a not-converged (NC) cell as 0 and use the population std.

Rows, columns and groups follow the table order of the records' axis values (:class:`bench.aggregate.axes.Axes`).
The mini track's own views (``ptq_*``, ``qat_*``: :func:`mini_tables`) are plain long or per-arch tables of means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aggregate import records as R
from bench.aggregate.axes import AXES, Axes
from bench.aggregate.stats import intervals_overlap, mean_or_nan, population_std

ACADEMIC = "academic"
FIELDS = ("mean", "std", "ci95", "n", "status")
AVG_ARCH = "Avg. Arch."
EPS = 1e-6  # accuracies are given to 2 decimals: means closer than this are ties


def ordered(values: Iterable[object], axis: str, axes: Axes) -> list:
    """Distinct ``values`` of ``axis`` in table order (values nobody describes last, by name)."""
    return axes.ordered(axis, values)


def sort_rows(df: pd.DataFrame, keys: list[str], axes: Axes) -> pd.DataFrame:
    """Rows sorted by ``keys``: archs, algorithms, profiles and calibrations in table order, others by value."""
    if df.empty:
        return df.reset_index(drop=True)
    tmp = df.copy()
    sort_cols = []
    for k in keys:
        if k in AXES:
            tmp[f"_pos_{k}"] = tmp[k].map(lambda v, a=k: axes.position(a, v))
            sort_cols.append(f"_pos_{k}")
        sort_cols.append(k)
    helpers = [c for c in sort_cols if c.startswith("_pos_")]
    return tmp.sort_values(sort_cols, kind="stable").drop(columns=helpers).reset_index(drop=True)


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def score(mean: float, status: str) -> float:
    """A cell's value for averages and spreads: its mean, 0 for NC (as the paper's Avg. HW), NaN when missing."""
    if status == "nc":
        return 0.0
    return float(mean) if status == "ok" and _finite(mean) else math.nan


# ---- generic helpers: slots -> overlap markers -> wide layout ----

def slots(cells: pd.DataFrame, row_keys: list[str], col_key: str, prefer_calib: bool = False) -> pd.DataFrame:
    """One cell per (row, column) slot (see :func:`records.resolve_slots`), as a long frame."""
    kept, _ = R.resolve_slots(cells, row_keys + [col_key], prefer_calib=prefer_calib)
    return kept.reset_index(drop=True)


def mark_overlaps(long: pd.DataFrame, group_keys: list[str]) -> pd.DataFrame:
    """Add ``overlaps_next``: within each group of competitors (e.g. the algorithms of one arch x profile), rank the
    converged cells by mean and flag a cell whose 95% CI overlaps the CI of the next-ranked one (n >= 2 on both)."""
    out = long.copy()
    out["overlaps_next"] = False
    if out.empty:
        return out
    for _, g in out.groupby(group_keys, sort=False):
        g = g[(g["status"] == "ok") & g["mean"].map(_finite)].sort_values("mean", ascending=False)
        idx = list(g.index)
        for a, b in zip(idx, idx[1:], strict=False):
            out.loc[a, "overlaps_next"] = intervals_overlap(out.at[a, "mean"], out.at[a, "ci95"], out.at[b, "mean"],
                                                            out.at[b, "ci95"])
    return out


def widen(long: pd.DataFrame, row_keys: list[str], col_key: str, columns: list, axes: Axes,
          fields: Sequence[str] = FIELDS + ("overlaps_next",)) -> pd.DataFrame:
    """Long slots -> one row per ``row_keys`` with ``<column>_<field>`` columns (missing slots: status 'missing')."""
    rows: dict[tuple, dict] = {}
    for _, r in long.iterrows():
        key = tuple(r[k] for k in row_keys)
        row = rows.setdefault(key, dict(zip(row_keys, key, strict=True)))
        for f in fields:
            row[f"{r[col_key]}_{f}"] = r[f]
    defaults = {"status": "missing", "overlaps_next": False, "n": 0}
    data: dict[str, list] = {k: [row[k] for row in rows.values()] for k in row_keys}
    for c in columns:
        for f in fields:
            name = f"{c}_{f}"
            data[name] = [row.get(name, defaults.get(f, math.nan)) for row in rows.values()]
    wide = pd.DataFrame(data, columns=list(data))
    for c in columns:
        if f"{c}_n" in wide:
            wide[f"{c}_n"] = wide[f"{c}_n"].fillna(0).astype(int)
        if f"{c}_overlaps_next" in wide:
            wide[f"{c}_overlaps_next"] = wide[f"{c}_overlaps_next"].astype(bool)
    return sort_rows(wide, row_keys, axes)


def groups_of(wide: pd.DataFrame) -> list[str]:
    """The column groups of a wide grid table, in order (every ``g`` with a ``g_status`` column)."""
    return [c.removesuffix("_status") for c in wide.columns if c.endswith("_status")]


def _fp32_by_arch(cells: pd.DataFrame) -> dict:
    return {a: mean_or_nan([float(x) for x in g["fp32"] if _finite(x)]) for a, g in cells.groupby("arch")}


def _int_or_nan(x: object) -> object:
    return int(float(x)) if _finite(x) else math.nan


# ---- Table 7: 4-bit QAT on the hardware profiles ----

def table7(cells: pd.DataFrame, ref: pd.DataFrame | None = None) -> pd.DataFrame:
    """MQBench Table 7: rows (arch, algo), per profile the accuracy and the hardware gap, FP32 and Avg. HW.

    ``cells``: hardware cells (:func:`records.is_hardware_cell`) of one bit setting. Adds ``fp32``, ``<p>_gap``
    (academic - p; NaN unless both converged), ``avg_hw_mean`` / ``avg_hw_std`` (population) / ``avg_hw_n``
    over the non-academic profiles present (NC = 0), and with ``ref`` (the paper's Table 7 CSV) ``ref_<p>``
    and ``ref_avg_hw_mean`` / ``ref_avg_hw_std`` computed from the paper's numbers by the same formula.
    """
    axes = Axes.of(cells)
    long = mark_overlaps(slots(cells, ["arch", "algo"], "hw", prefer_calib=True), ["arch", "hw"])
    profiles = ordered(long["hw"], "hw", axes)
    wide = widen(long, ["arch", "algo"], "hw", profiles, axes)
    fp32 = _fp32_by_arch(cells)
    wide.insert(2, "fp32", wide["arch"].map(fp32).astype(float))
    hw = [p for p in profiles if p != ACADEMIC]
    for p in hw:
        if ACADEMIC in profiles:
            ok = (wide[f"{ACADEMIC}_status"] == "ok") & (wide[f"{p}_status"] == "ok")
            wide[f"{p}_gap"] = (wide[f"{ACADEMIC}_mean"] - wide[f"{p}_mean"]).where(ok)
        else:
            wide[f"{p}_gap"] = math.nan
    stats = [avg_hw([score(r[f"{p}_mean"], r[f"{p}_status"]) for p in hw]) for _, r in wide.iterrows()]
    wide["avg_hw_mean"] = [s[0] for s in stats]
    wide["avg_hw_std"] = [s[1] for s in stats]
    wide["avg_hw_n"] = [s[2] for s in stats]
    if ref is not None and not ref.empty:
        wide = _merge_ref(wide, ref, ["arch", "algo"], profiles)
        ref_scores = [[ref_score(r.get(f"ref_{p}")) for p in hw] for _, r in wide.iterrows()]
        stats = [avg_hw(s) for s in ref_scores]
        wide["ref_avg_hw_mean"] = [s[0] for s in stats]
        wide["ref_avg_hw_std"] = [s[1] for s in stats]
    return wide


def avg_hw(values: Sequence[float]) -> tuple[float, float, int]:
    """Avg. HW of one row: (mean, population std, count) of the hardware-profile scores present (NaN = missing)."""
    vals = [v for v in values if _finite(v)]
    return mean_or_nan(vals), population_std(vals), len(vals)


def ref_score(value: object) -> float:
    """A reference-table entry as a number: 'NC' -> 0 (the paper's convention), blank -> NaN."""
    if isinstance(value, str) and value.strip().upper() == "NC":
        return 0.0
    return float(value) if _finite(value) else math.nan


def _merge_ref(wide: pd.DataFrame, ref: pd.DataFrame, keys: list[str], columns: Iterable[str],
               source: dict[str, str] | None = None) -> pd.DataFrame:
    """Add ``ref_<c>`` columns from the reference frame (matched on ``keys``; ``source`` maps c -> ref column)."""
    source = source or {c: c for c in columns}
    avail = {c: s for c, s in source.items() if s in ref.columns}
    if not avail:
        return wide
    r = ref[keys + list(avail.values())].rename(columns={s: f"ref_{c}" for c, s in avail.items()})
    for k in keys:
        r[k] = r[k].astype(str)
    out = wide.copy()
    for k in keys:
        out[k] = out[k].astype(str) if k not in ("w_bits", "a_bits") else out[k]
    return out.merge(r.drop_duplicates(keys), on=keys, how="left")


# ---- Table 4: the academic setting ----

def table4(cells: pd.DataFrame, ref: pd.DataFrame | None = None) -> pd.DataFrame:
    """MQBench Table 4: academic profile, rows arch, columns algorithms, and an ``Avg. Arch.`` row.

    Avg. Arch. = mean over the archs present of each algorithm's accuracy, NC as 0 (the paper's DoReFa 44.0).
    With ``ref`` (the paper's Table 4 CSV) adds ``ref_<algo>`` (its benchmark accuracies, averaged likewise).
    """
    axes = Axes.of(cells)
    acad = cells[cells["hw"] == ACADEMIC]
    long = mark_overlaps(slots(acad, ["arch"], "algo", prefer_calib=True), ["arch"])
    algos = ordered(long["algo"], "algo", axes)
    wide = widen(long, ["arch"], "algo", algos, axes)
    wide.insert(1, "fp32", wide["arch"].map(_fp32_by_arch(acad)).astype(float))
    if ref is not None and not ref.empty:
        piv = ref.pivot_table(index="arch", columns="algo", values="benchmark_acc", aggfunc="first").reset_index()
        piv.columns = [str(c) for c in piv.columns]
        wide = _merge_ref(wide, piv, ["arch"], algos)
    avg: dict[str, object] = {"arch": AVG_ARCH, "fp32": math.nan}
    for a in algos:
        vals = [score(m, s) for m, s in zip(wide[f"{a}_mean"], wide[f"{a}_status"], strict=True)]
        vals = [v for v in vals if _finite(v)]
        # n stays 0: it counts seeds elsewhere, and this row averages archs (the row above says how many)
        avg.update({f"{a}_mean": mean_or_nan(vals), f"{a}_std": math.nan, f"{a}_ci95": math.nan,
                    f"{a}_n": 0, f"{a}_status": "ok" if vals else "missing", f"{a}_overlaps_next": False})
        if f"ref_{a}" in wide:
            refs = [ref_score(v) for v in wide[f"ref_{a}"]]
            avg[f"ref_{a}"] = mean_or_nan([v for v in refs if _finite(v)])
    return pd.concat([wide, pd.DataFrame([avg])], ignore_index=True)


# ---- robustness, spread and winners (Fig. 5, Fig. 6, Sec. 5.4 counts) ----

def _hardware_slots(cells: pd.DataFrame) -> pd.DataFrame:
    long = slots(cells, ["arch", "algo"], "hw", prefer_calib=True)
    return long.assign(score=[score(m, s) for m, s in zip(long["mean"], long["status"], strict=True)])


def _plain_wide(long: pd.DataFrame, row: str, col: str, value: str, columns: list, axes: Axes) -> pd.DataFrame:
    piv = long.pivot_table(index=row, columns=col, values=value, aggfunc="first")
    cnt = long.pivot_table(index=row, columns=col, values="count", aggfunc="first")
    out = pd.DataFrame({row: list(piv.index)})
    for c in columns:
        out[str(c)] = [piv.at[i, c] if c in piv.columns else math.nan for i in piv.index]
        out[f"{c}_n"] = [int(cnt.at[i, c]) if c in cnt.columns and _finite(cnt.at[i, c]) else 0 for i in piv.index]
    return sort_rows(out, [row], axes)


def hw_robustness(cells: pd.DataFrame) -> pd.DataFrame:
    """Hardware robustness: per algo x arch the mean accuracy over the non-academic profiles (NC = 0), and per algo
    the mean of those over archs (column ``mean``). ``<arch>_n``: profiles averaged."""
    long = _hardware_slots(cells)
    long = long[(long["hw"] != ACADEMIC) & long["score"].map(_finite)]
    if long.empty:
        return pd.DataFrame()
    axes = Axes.of(cells)
    per = long.groupby(["algo", "arch"])["score"].agg(["mean", "count"]).reset_index()
    archs = ordered(per["arch"], "arch", axes)
    wide = _plain_wide(per, "algo", "arch", "mean", archs, axes)
    wide["mean"] = [mean_or_nan([v for v in r[archs] if _finite(v)]) for _, r in wide.iterrows()]
    return wide


def arch_robustness(cells: pd.DataFrame) -> pd.DataFrame:
    """Architecture robustness (Fig. 6 right): per algo x profile the mean accuracy over archs (NC = 0).
    ``<profile>_n``: archs averaged."""
    long = _hardware_slots(cells)
    long = long[long["score"].map(_finite)]
    if long.empty:
        return pd.DataFrame()
    axes = Axes.of(cells)
    per = long.groupby(["algo", "hw"])["score"].agg(["mean", "count"]).reset_index()
    return _plain_wide(per, "algo", "hw", "mean", ordered(per["hw"], "hw", axes), axes)


def algo_std(cells: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5: per arch x profile the population std of accuracy across algorithms (NC = 0). ``<profile>_n``: algos.

    Only the algorithms benchmarked on some hardware profile of that arch take part when there are any (the
    paper's academic column spreads Table 7's four algorithms, not Table 4's six: checked against Fig. 5).
    """
    long = _hardware_slots(cells)
    long = long[long["score"].map(_finite)]
    if long.empty:
        return pd.DataFrame()
    rows = []
    for arch, g in long.groupby("arch"):
        on_hw = set(g.loc[g["hw"] != ACADEMIC, "algo"])
        g = g[g["algo"].isin(on_hw)] if on_hw else g
        for hw, h in g.groupby("hw"):
            vals = list(h["score"])
            rows.append({"arch": arch, "hw": hw, "std": population_std(vals) if len(vals) >= 2 else math.nan,
                         "count": len(vals)})
    per = pd.DataFrame(rows)
    axes = Axes.of(cells)
    return _plain_wide(per, "arch", "hw", "std", ordered(per["hw"], "hw", axes), axes)


def winners(values: dict[str, float], best: str = "max", axes: Axes | None = None) -> list[str]:
    """The algorithms with the best value, in table order (ties all win; the caller splits the point)."""
    axes = axes or Axes()
    vals = {a: v for a, v in values.items() if _finite(v)}
    if not vals:
        return []
    top = max(vals.values()) if best == "max" else min(vals.values())
    return sorted((a for a, v in vals.items() if abs(v - top) <= EPS), key=lambda a: axes.rank("algo", a))


def best_algo(cells: pd.DataFrame) -> pd.DataFrame:
    """Per arch x profile the winning algorithm(s) by accuracy (converged cells) and by smallest hardware gap
    (academic - profile, both converged). Columns: arch, hw, per_channel, best_top1_algos ('+'-joined ties),
    best_top1, min_gap_algos, min_gap."""
    long = _hardware_slots(cells)
    if long.empty:
        return pd.DataFrame()
    axes = Axes.of(cells)
    granularity = {h: g.dropna().iloc[0] if g.notna().any() else None for h, g in cells.groupby("hw")["per_channel"]}
    rows = []
    for (arch, hw), g in long.groupby(["arch", "hw"]):
        acc = {r.algo: (r.mean if r.status == "ok" else math.nan) for r in g.itertuples()}
        gaps: dict[str, float] = {}
        if hw != ACADEMIC:
            acad = long[(long["arch"] == arch) & (long["hw"] == ACADEMIC) & (long["status"] == "ok")]
            acad_acc = dict(zip(acad["algo"], acad["mean"], strict=True))
            gaps = {a: acad_acc[a] - v for a, v in acc.items() if a in acad_acc and _finite(v)}
        top, low = winners(acc, axes=axes), winners(gaps, best="min", axes=axes)
        rows.append({"arch": arch, "hw": hw, "per_channel": granularity.get(hw),
                     "best_top1_algos": "+".join(top), "best_top1": max(acc[a] for a in top) if top else math.nan,
                     "min_gap_algos": "+".join(low), "min_gap": min(gaps[a] for a in low) if low else math.nan})
    return sort_rows(pd.DataFrame(rows), ["arch", "hw"], axes)


def best_counts(best: pd.DataFrame, axes: Axes | None = None) -> pd.DataFrame:
    """Wins per algorithm over the hardware (non-academic) settings, a tie giving each winner an equal share (the
    paper's footnote 4): ``top1_all`` / ``top1_per_tensor`` / ``top1_per_channel`` and the same for ``gap``, each
    with ``_share`` = wins / settings counted. Algorithms in ``axes``' order (default: the legacy one)."""
    axes = axes or Axes()
    hw = best[best["hw"] != ACADEMIC] if not best.empty else best
    if hw.empty:
        return pd.DataFrame()
    subsets = {"all": hw, "per_tensor": hw[hw["per_channel"] == False],  # noqa: E712 (None is neither)
               "per_channel": hw[hw["per_channel"] == True]}  # noqa: E712
    counts: dict[str, dict[str, float]] = {}
    totals: dict[str, int] = {}
    for metric in ("top1", "gap"):
        col = "best_top1_algos" if metric == "top1" else "min_gap_algos"
        for name, sub in subsets.items():
            key = f"{metric}_{name}"
            settings = [w for w in sub[col] if isinstance(w, str) and w]
            totals[key] = len(settings)
            for w in settings:
                algos = w.split("+")
                for a in algos:
                    counts.setdefault(a, {}).setdefault(key, 0.0)
                    counts[a][key] += 1.0 / len(algos)
    rows = []
    for a in ordered(counts, "algo", axes):
        row: dict[str, object] = {"algo": a}
        for key, total in totals.items():
            row[key] = counts[a].get(key, 0.0)
            row[f"{key}_share"] = row[key] / total if total else math.nan
        rows.append(row)
    total_row: dict[str, object] = {"algo": "settings"}
    for key, total in totals.items():
        total_row[key], total_row[f"{key}_share"] = float(total), 1.0 if total else math.nan
    return pd.DataFrame(rows + [total_row])


# ---- Tables 5 and 6: BN folding and graph variants ----

def _ablation(cells: pd.DataFrame, override: str, effective: str) -> pd.DataFrame:
    """Rows (arch, algo) with at least one ``override`` cell, columns the effective value (``effective`` field)."""
    over = cells[cells[override].notna()]
    if over.empty:
        return pd.DataFrame()
    pairs = set(zip(over["arch"], over["algo"], strict=True))
    sub = cells[[(a, b) in pairs for a, b in zip(cells["arch"], cells["algo"], strict=True)]].copy()
    sub["setting"] = [_int_or_nan(o if _finite(o) else e) for o, e in zip(sub[override], sub[effective], strict=True)]
    sub = sub[sub["setting"].map(_finite)]
    long = mark_overlaps(slots(sub, ["arch", "algo"], "setting", prefer_calib=True), ["arch", "setting"])
    settings = sorted(long["setting"].unique())
    return widen(long, ["arch", "algo"], "setting", settings, Axes.of(cells))


def table5(cells: pd.DataFrame) -> pd.DataFrame:
    """MQBench Table 5 for one base profile: rows (arch, algo), columns BN-fold strategies (-1 .. 4).

    ``cells``: :func:`records.is_bnfold_cell` cells of one profile and bit setting. The profile's own folding
    (no override; -1 on academic) is its column; rows need at least one ``quant.bn_fold`` override.
    """
    return _ablation(cells, "quant_bn_fold", "bn_fold")


def table6(cells: pd.DataFrame) -> pd.DataFrame:
    """MQBench Table 6 for one base profile: rows (arch, algo), columns graph variants 1, 2, 3 (graph 1 on academic
    is its own graph; rows need at least one ``quant.graph`` override)."""
    return _ablation(cells, "quant_graph", "graph")


# ---- PTQ: Tables 10 and 11 ----

def table10(cells: pd.DataFrame, ref: pd.DataFrame | None = None) -> pd.DataFrame:
    """MQBench Table 10: plain PTQ (:func:`records.is_ptq_cell`) of one bit setting; rows (arch, act calib, weight
    calib), columns the profiles (mean ± std over seeds), FP32. ``ref``: the paper's Table 10 CSV (``ref_<p>``,
    ``ref_<p>_std``) matched on arch, calibrations and weight bits."""
    axes = Axes.of(cells)
    keys = ["arch", "calib_act", "calib_weight"]
    long = mark_overlaps(slots(cells, keys, "hw"), ["arch", "hw"])
    profiles = ordered(long["hw"], "hw", axes)
    wide = widen(long, keys, "hw", profiles, axes)
    wide.insert(3, "fp32", wide["arch"].map(_fp32_by_arch(cells)).astype(float))
    if ref is not None and not ref.empty and not cells.empty:
        bits = int(cells["w_bits"].iloc[0])
        r = ref[ref["bits"] == bits].rename(columns={"act_calibration": "calib_act",
                                                     "weight_calibration": "calib_weight"})
        source = {}
        for p in profiles:
            source[p], source[f"{p}_std"] = f"{p}_acc_mean", f"{p}_acc_std"
        wide = _merge_ref(wide, r, keys, list(source), source)
    return wide


def table11(ptq: pd.DataFrame, bn_calib: pd.DataFrame, qat: pd.DataFrame, qat_algo: str = "lsq") -> pd.DataFrame:
    """MQBench Table 11 (initialization): rows (arch, w_bits, a_bits, hw, calib_act, calib_weight), groups ``ptq``
    (plain PTQ; else the PTQ accuracy a BN-calib cell measured before re-calibration), ``bn_calib`` (PTQ + BN
    re-calibration) and ``qat`` (``qat_algo`` initialised with the same calibration). Rows with at least two of
    the three present."""
    keys = ["arch", "w_bits", "a_bits", "hw", "calib_act", "calib_weight"]
    parts = []
    bn = slots(bn_calib, keys, "algo")
    q = slots(qat[qat["algo"] == qat_algo], keys, "algo", prefer_calib=False) if not qat.empty else qat
    p = slots(ptq, keys, "algo")
    for name, frame in (("ptq", p), ("bn_calib", bn), ("qat", q)):
        if not frame.empty:
            parts.append(frame.assign(group=name))
    if not bn.empty:  # the PTQ accuracy before BN re-calibration, where no plain PTQ cell measured it
        have = set(map(tuple, p[keys].astype(str).values)) if not p.empty else set()
        fb = bn[[tuple(map(str, r)) not in have for r in bn[keys].values]]
        fb = fb.assign(group="ptq", mean=fb["init"], std=math.nan, ci95=math.nan, status="ok")
        fb = fb.assign(status=["ok" if _finite(m) else "missing" for m in fb["mean"]])
        parts.append(fb[fb["status"] == "ok"])
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    long["overlaps_next"] = False
    present = long.groupby(keys)["group"].nunique()
    keep = set(present[present >= 2].index)
    long = long[[tuple(r) in keep for r in long[keys].values]]
    if long.empty:
        return pd.DataFrame()
    wide = widen(long, keys, "group", [g for g in ("ptq", "bn_calib", "qat") if g in set(long["group"])],
                 Axes.of(long))
    fp = {}
    for frame in (p, bn, q):
        if not frame.empty:
            fp.update({k: v for k, v in _fp32_by_arch(frame).items() if _finite(v)})
    wide.insert(1, "fp32", wide["arch"].map(fp).astype(float))
    if "qat_mean" in wide:
        wide["qat_algo"] = qat_algo
    return wide


def _cell_keys(c: pd.DataFrame) -> dict[str, Any]:
    return {"arch": c["arch"], "hw": c["hw"],
            "bits": [bits_label(w, a) for w, a in zip(c["w_bits"], c["a_bits"], strict=True)]}


def _recorded(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """The cells whose records carry ``column`` (a deployment check's status); empty if none do."""
    return cells[cells[column].notna()] if column in cells.columns else cells.iloc[0:0]


def _by_bits_arch_profile(out: pd.DataFrame, axes: Axes) -> pd.DataFrame:
    out = out.assign(_h=out["hw"].map(lambda h: axes.position("hw", h)))
    return out.sort_values(["bits", "arch", "_h", "algo"]).drop(columns="_h").reset_index(drop=True)


def deploy_check(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per cell checked with ``deploy.check``: fake-quant and integer top-1, agreement, logit difference."""
    c = _recorded(cells, "deploy_status")
    if c.empty:
        return pd.DataFrame()
    out = pd.DataFrame({
        **_cell_keys(c),
        "algo": c["algo"], "calib": c["calib_weight"].astype(str) + "/" + c["calib_act"].astype(str),
        "status": c["deploy_status"], "requant": c["deploy_requant"], "rounding": c["deploy_rounding"],
        "fake_top1": c["deploy_fake_top1"].astype(float), "int_top1": c["deploy_int_top1"].astype(float),
        "agreement": c["deploy_agreement"].astype(float),
        "max_diff_steps": c["deploy_max_abs_logit_diff_units"].astype(float),
        "mean_diff_steps": c["deploy_mean_abs_logit_diff_units"].astype(float),
        "int32_overflows": c["deploy_int32_overflows"].astype("Int64"), "images": c["deploy_n"].astype("Int64"),
    })
    return _by_bits_arch_profile(out, Axes.of(c))


def onnx_runtime(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per cell exported with ``deploy.onnx``: fake-quant vs onnxruntime top-1, agreement, logit diff."""
    c = _recorded(cells, "onnx_status")
    if c.empty:
        return pd.DataFrame()
    fake, ort = c["onnx_fake_top1"].astype(float), c["onnx_ort_top1"].astype(float)
    out = pd.DataFrame({
        **_cell_keys(c),
        "algo": c["algo"], "status": c["onnx_status"], "fake_top1": fake, "ort_top1": ort,
        "gap": (ort - fake).round(2), "agreement": c["onnx_agreement"].astype(float),
        "ort_float_top1": c["onnx_ort_float_top1"].astype(float),
        "max_logit_diff": c["onnx_max_abs_logit_diff"].astype(float), "images": c["onnx_n"].astype("Int64"),
        "onnxruntime": c["onnx_onnxruntime"],
    })
    return _by_bits_arch_profile(out, Axes.of(c))


# ---- the mini track's own views (they replaced scripts/ptq_tables.py, qat_tables.py, ptq_advanced_tables.py) ----

def _ok(mean: object, status: object) -> float:
    """A cell's mean when it converged, else NaN (plain tables show a number or '-', and ``status`` says why)."""
    return float(mean) if status == "ok" and _finite(mean) else math.nan


def bits_name(w: int, a: int) -> str:
    """``8bit`` when weights and activations share a bit-width, else ``w4a8`` (file names of the PTQ views)."""
    return f"{int(w)}bit" if int(w) == int(a) else bits_label(w, a)


def standard_epochs(cells: pd.DataFrame) -> int:
    """The training length most of ``cells`` have (ties: the shorter): the recipe's, e.g. train=mini_qat's 1."""
    counts = cells["train_epochs"].astype(int).value_counts()
    return int(min(counts[counts == counts.max()].index))


def ptq_profiles(cells: pd.DataFrame) -> pd.DataFrame:
    """Plain PTQ with MinMax ranges, one bit setting (was ``ptq_w8a8``): rows arch; ``fp32``, the top-1 per profile
    (mean over seeds) and ``max_drop`` = fp32 - the worst profile present.

    ``cells``: :func:`records.is_ptq_cell` cells of one bit setting; only MinMax / MinMax calibration is taken.
    """
    c = cells[(cells["calib_act"] == R.DEFAULT_CALIB[0]) & (cells["calib_weight"] == R.DEFAULT_CALIB[1])]
    if c.empty:
        return pd.DataFrame()
    axes = Axes.of(c)
    long = slots(c, ["arch"], "hw")
    profiles = ordered(long["hw"], "hw", axes)
    fp32 = _fp32_by_arch(c)
    rows = []
    for arch in ordered(long["arch"], "arch", axes):
        g = long[long["arch"] == arch]
        acc = {h: _ok(m, s) for h, m, s in zip(g["hw"], g["mean"], g["status"], strict=True)}
        row: dict[str, object] = {"arch": arch, "fp32": fp32.get(arch, math.nan)}
        row.update({h: acc.get(h, math.nan) for h in profiles})
        drops = [float(row["fp32"]) - v for v in acc.values() if _finite(v) and _finite(row["fp32"])]
        row["max_drop"] = max(drops) if drops else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["arch", "fp32", *profiles, "max_drop"])


def ptq_calib(cells: pd.DataFrame) -> pd.DataFrame:
    """Plain PTQ by calibration, one bit setting (was ``ptq_calib_8bit``, MQBench Table 10 in one line per
    calibration): rows (arch, act calib, weight calib) with ``fp32`` and ``<profile>_top1`` (mean over seeds).

    ``cells``: :func:`records.is_ptq_cell` cells of one bit setting. Empty unless some weight calibration was run with
    two activation calibrations (a comparison of calibrations, not RTN MinMax beside RTN MSE).
    """
    if not (cells.groupby("calib_weight")["calib_act"].nunique() >= 2).any():
        return pd.DataFrame()
    axes = Axes.of(cells)
    keys = ["arch", "calib_act", "calib_weight"]
    long = slots(cells, keys, "hw")
    profiles = ordered(long["hw"], "hw", axes)
    fp32 = _fp32_by_arch(cells)
    rows: dict[tuple, dict] = {}
    for r in long.itertuples():
        key = (r.arch, r.calib_act, r.calib_weight)
        row = rows.setdefault(key, {"arch": r.arch, "fp32": fp32.get(r.arch, math.nan), "calib_act": r.calib_act,
                                    "calib_weight": r.calib_weight})
        row[f"{r.hw}_top1"] = _ok(r.mean, r.status)
    out = pd.DataFrame(list(rows.values()), columns=["arch", "fp32", "calib_act", "calib_weight"]
                       + [f"{p}_top1" for p in profiles])
    return sort_rows(out, ["arch", "calib_weight", "calib_act"], axes)  # weight ranges grouped, as the script had


def ptq_bn_calib(cells: pd.DataFrame) -> pd.DataFrame:
    """PTQ with and without BN re-calibration, one bit setting (was ``ptq_bn_calib_4bit``, MQBench Table 11's
    PTQ columns): rows (arch, hw, calibration pair, calibration images) with ``ptq_top1`` (before re-calibration: the
    cells' ``init_top1``) and ``bn_calib_top1``, best re-calibrated accuracy first within an arch and profile.

    ``cells``: :func:`records.is_bn_calib_cell` cells of one bit setting. Empty unless two calibrations were run.
    """
    if len(set(zip(cells["calib_act"], cells["calib_weight"], strict=True))) < 2:
        return pd.DataFrame()
    axes = Axes.of(cells)
    long, _ = R.resolve_slots(cells, ["arch", "hw", "calib_act", "calib_weight", "calib_size"])
    after = [_ok(m, s) for m, s in zip(long["mean"], long["status"], strict=True)]
    out = pd.DataFrame({
        "arch": long["arch"], "fp32_top1": long["fp32"].astype(float), "hw": long["hw"],
        "calib_act": long["calib_act"], "calib_weight": long["calib_weight"],
        "calib_size": long["calib_size"].map(_int_or_nan), "ptq_top1": long["init"].astype(float),
        "bn_calib_top1": pd.Series(after, index=long.index, dtype=float),
    })
    out = out.assign(_a=out["arch"].map(lambda v: axes.position("arch", v)),
                     _h=out["hw"].map(lambda v: axes.position("hw", v)), _acc=-out["bn_calib_top1"].fillna(-math.inf))
    out = out.sort_values(["_a", "arch", "_h", "hw", "calib_size", "_acc"], kind="stable", na_position="last")
    return out.drop(columns=["_a", "_h", "_acc"]).reset_index(drop=True)


def _qat_row(r: Any) -> dict[str, Any]:
    """The per-cell columns of the QAT views, from one row of the cells."""
    return {"fp32": float(r.fp32), "init_top1": float(r.init), "top1": _ok(r.mean, r.status), "wall_s": float(r.wall_s),
            "n": int(r.n), "status": r.status}


def qat_long(cells: pd.DataFrame) -> pd.DataFrame:
    """QAT per arch, algorithm and profile, one bit setting, long form (was ``qat_w4a4_hw``, MQBench Table 7 with
    the cost): ``fp32``, ``init_top1`` (after calibration, before QAT), ``top1``, ``hw_gap`` (academic - profile,
    both converged), ``wall_s`` (mean over seeds), seeds ``n`` and ``status``.

    ``cells``: :func:`records.is_hardware_cell` cells of one bit setting and one training length.
    """
    if cells.empty:
        return pd.DataFrame()
    axes = Axes.of(cells)
    long = slots(cells, ["arch", "algo"], "hw", prefer_calib=True)
    acad = {(r.arch, r.algo): _ok(r.mean, r.status) for r in long.itertuples() if r.hw == ACADEMIC}
    rows = []
    for r in long.itertuples():
        row = {"arch": r.arch, "algo": r.algo, "hw": r.hw, **_qat_row(r)}
        ref = acad.get((r.arch, r.algo), math.nan)
        row["hw_gap"] = ref - row["top1"] if r.hw != ACADEMIC and _finite(ref) and _finite(row["top1"]) else math.nan
        rows.append(row)
    cols = ["arch", "algo", "hw", "fp32", "init_top1", "top1", "hw_gap", "wall_s", "n", "status"]
    return sort_rows(pd.DataFrame(rows, columns=cols), ["arch", "algo", "hw"], axes)


def qat_academic(cells: pd.DataFrame) -> pd.DataFrame:
    """QAT in the academic setting, one bit setting and training length (was ``qat_w4a4_academic``, MQBench Table 4
    with the cost): rows (arch, algo); ``fp32_top1``, ``init_top1``, ``top1``, ``wall_s``, ``qat_gain`` (top1 -
    init_top1), ``drop_from_fp32`` (fp32 - top1), seeds ``n`` and ``status``.

    ``cells``: academic :func:`records.is_hardware_cell` cells of one bit setting and one training length.
    """
    if cells.empty:
        return pd.DataFrame()
    long = slots(cells, ["arch"], "algo", prefer_calib=True)
    rows = []
    for r in long.itertuples():
        q = _qat_row(r)
        rows.append({"arch": r.arch, "algo": r.algo, "fp32_top1": q["fp32"], "init_top1": q["init_top1"],
                     "top1": q["top1"], "wall_s": q["wall_s"], "qat_gain": q["top1"] - q["init_top1"],
                     "drop_from_fp32": q["fp32"] - q["top1"], "n": q["n"], "status": q["status"]})
    return sort_rows(pd.DataFrame(rows), ["arch", "algo"], Axes.of(cells))


def qat_academic_longer(cells: pd.DataFrame, base: pd.DataFrame, epochs: int, base_epochs: int) -> pd.DataFrame:
    """The academic QAT cells trained ``epochs`` epochs beside the ``base_epochs`` top-1 of the same arch and
    algorithm (was ``qat_w4a4_academic_3ep``): ``top1_<base>ep``, ``top1_<epochs>ep``, ``wall_s`` and
    ``drop_from_fp32`` of the longer run.

    ``cells``, ``base``: academic hardware cells of one bit setting, trained ``epochs`` and ``base_epochs``.
    """
    t = qat_academic(cells)
    if t.empty:
        return t
    short = qat_academic(base)
    before = {(a, g): v for a, g, v in zip(short["arch"], short["algo"], short["top1"], strict=True)} \
        if not short.empty else {}
    return pd.DataFrame({
        "arch": t["arch"], "algo": t["algo"], "fp32_top1": t["fp32_top1"], "init_top1": t["init_top1"],
        f"top1_{base_epochs}ep": [before.get((a, g), math.nan) for a, g in zip(t["arch"], t["algo"], strict=True)],
        f"top1_{epochs}ep": t["top1"], "wall_s": t["wall_s"], "drop_from_fp32": t["drop_from_fp32"], "n": t["n"],
        "status": t["status"],
    })


# The plain-PTQ rows of the advanced PTQ table, in order: (label, (act, weight) calibration, BN re-calibration, CLE,
# bias correction, quant.bn_fold override). The reconstruction methods follow, each with MSE ranges and no PTQ flags,
# named by their labels. The "(BN folded)" rows quantize the BN-folded weights (experiment=ptq_white_paper, on the
# academic profile, which does not fold): the weights CLE starts from, the white paper's per-tensor baseline.
PTQ_PIPELINE = (
    ("RTN MinMax", ("minmax", "minmax"), False, False, "none", None),
    ("RTN MSE", ("mse", "mse"), False, False, "none", None),
    ("RTN MinMax weights (BN folded)", ("mse", "minmax"), False, False, "none", 0),
    ("RTN MSE (BN folded)", ("mse", "mse"), False, False, "none", 0),
    ("+BN re-calib", ("mse", "mse"), True, False, "none", None),
    ("+CLE", ("mse", "mse"), False, True, "none", None),
    ("+CLE +bias corr.", ("mse", "mse"), False, True, "empirical", None),
    ("+CLE +analytic bias corr.", ("mse", "mse"), False, True, "analytic", None),
)
RECON_CALIB = ("mse", "mse")
PLAIN_PTQ = "ptq"  # the algorithm of nearest rounding, whose variants are the PTQ_PIPELINE rows


def ptq_method(cells: pd.DataFrame, axes: Axes) -> pd.Series:
    """The advanced-PTQ row of each cell: a PTQ_PIPELINE label, an advanced PTQ method's label, or None."""
    plain = cells["quant_graph"].isna() & R.plain_quant(cells)
    out = []
    for (_, c), ok in zip(cells.iterrows(), plain, strict=True):
        calib, flags = (c["calib_act"], c["calib_weight"]), (bool(c["bn_recalib"]), bool(c["cle"]),
                                                            str(c["bias_correction"]))
        fold = int(c["quant_bn_fold"]) if _finite(c["quant_bn_fold"]) else None
        label = None
        if ok and c["algo"] == PLAIN_PTQ:
            label = next((m for m, cal, *f, bn_fold in PTQ_PIPELINE
                          if cal == calib and tuple(f) == flags and bn_fold == fold), None)
        elif ok and fold is None and c["kind"] == "ptq" and calib == RECON_CALIB and flags == (False, False, "none"):
            label = axes.label("algo", c["algo"])
        out.append(label)
    return pd.Series(out, index=cells.index, dtype=object)


def ptq_advanced(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, pd.DataFrame, list[str]]]]:
    """Advanced PTQ (was ``ptq_advanced``): nearest rounding (RTN) with MinMax / MSE ranges, + BN re-calibration,
    + CLE, + CLE and bias correction, then every reconstruction method (a ``ptq`` kind other than plain PTQ), in the
    settings (profile, arch, bits) where a reconstruction method ran.

    Returns the long frame (hw, arch, bits, method, fp32_top1, init_top1, top1, wall_s, recon_s, recon_preset) and
    the Markdown sections: per profile methods x (arch, bits) top-1 with an FP32 row; IOSO's integer operations when
    cells report them; the median wall time per method and arch.
    """
    if cells.empty:
        return pd.DataFrame(), []
    axes = Axes.of(cells)
    c = cells.assign(method=ptq_method(cells, axes))
    c = c[c["method"].notna()]
    setting = ["hw", "arch", "w_bits", "a_bits"]
    recon = c[c["algo"] != PLAIN_PTQ]
    if recon.empty:
        return pd.DataFrame(), []
    ran = set(map(tuple, recon[setting].values))
    c = c[[tuple(r) in ran for r in c[setting].values]]
    kept, _ = R.resolve_slots(c, setting + ["method"])
    rank = {m: i for i, (m, *_) in enumerate(PTQ_PIPELINE)}
    base = len(rank)
    method_pos = {m: rank.get(m, base + axes.position("algo", a)) for m, a in zip(kept["method"], kept["algo"],
                                                                                  strict=True)}
    recon_s = [r if _finite(r) else b for r, b in zip(kept["recon_s"], kept["bitsplit_s"], strict=True)]
    long = pd.DataFrame({
        "hw": kept["hw"], "arch": kept["arch"],
        "bits": [bits_label(w, a) for w, a in zip(kept["w_bits"], kept["a_bits"], strict=True)],
        "method": kept["method"], "fp32_top1": kept["fp32"].astype(float), "init_top1": kept["init"].astype(float),
        "top1": [_ok(m, s) for m, s in zip(kept["mean"], kept["status"], strict=True)],
        "wall_s": kept["wall_s"].astype(float), "recon_s": pd.Series(recon_s, index=kept.index, dtype=float),
        "recon_preset": kept["recon_preset"],
        "_h": kept["hw"].map(lambda v: axes.position("hw", v)),
        "_a": kept["arch"].map(lambda v: axes.position("arch", v)),
        "_w": kept["w_bits"].astype(int), "_x": kept["a_bits"].astype(int), "_m": kept["method"].map(method_pos),
        "_ioso": kept["ioso_int_ops"].astype(float), "_isg": kept["ioso_isg_ops"].astype(float),
        "_ratio": kept["ioso_isg_ops_ratio"].astype(float),
    }).sort_values(["_h", "hw", "_a", "arch", "_w", "_x", "_m", "method"], kind="stable").reset_index(drop=True)
    methods = sorted(set(long["method"]), key=lambda m: (method_pos[m], m))
    archs = ordered(long["arch"], "arch", axes)
    sections = []
    for hw in ordered(long["hw"], "hw", axes):
        sub = long[long["hw"] == hw]
        cols = list(dict.fromkeys(zip(sub["arch"], sub["bits"], strict=True)))  # in the frame's (arch, bits) order
        names = [f"{axes.label('arch', a)} {b}" for a, b in cols]
        fp32 = {a: v for a, v in zip(sub["arch"], sub["fp32_top1"], strict=True) if _finite(v)}
        acc = {(m, a, b): v for m, a, b, v in zip(sub["method"], sub["arch"], sub["bits"], sub["top1"], strict=True)}
        rows = [["FP32", *[fp32.get(a, math.nan) for a, _ in cols]]]
        rows += [[m, *[acc.get((m, a, b), math.nan) for a, b in cols]] for m in methods if m in set(sub["method"])]
        sections.append((f"hw={hw}", pd.DataFrame(rows, columns=["method", *names]), ["method"]))
    ops = long[long["_ioso"].map(_finite)].drop_duplicates("arch")
    if not ops.empty:
        t = pd.DataFrame({"arch": ops["arch"], "int_ops_M": ops["_ioso"] / 1e6, "isg_ops_M": ops["_isg"] / 1e6,
                          "total_M": (ops["_ioso"] + ops["_isg"]) / 1e6, "isg_percent": 100 * ops["_ratio"]})
        sections.append(("IOSO: integer operations per image without and with ISG (seed 002 Table 5 analogue)",
                         sort_rows(t, ["arch"], axes), ["arch"]))
    times = long[long["wall_s"].map(_finite)]
    if not times.empty:
        med = times.groupby(["method", "arch"])["wall_s"].median()
        rows = [[m, *[med.get((m, a), math.nan) for a in archs]] for m in methods if m in set(times["method"])]
        sections.append(("Median wall time per cell (s, whole cell incl. calibration and evaluations)",
                         pd.DataFrame(rows, columns=["method", *[axes.label("arch", a) for a in archs]]),
                         ["method"]))
    return long.drop(columns=["_h", "_a", "_w", "_x", "_m", "_ioso", "_isg", "_ratio"]), sections


# ---- everything for one track ----

@dataclass
class Table:
    """One output table: its file stem, title, frame, kind (``grid``, ``plain`` or ``sections``) and legend lines.

    ``axes``: order and display names of the axis values (from the records); ``group_axis``: the axis whose values
    name the column groups (``hw``, ``algo``...; empty: none), ``labels``: display names of other column groups;
    ``extra``: more frames, written as ``<name>_<key>.csv``; ``sections``: (heading, frame, key columns) of a
    ``sections`` table's Markdown page (its CSV is ``frame``).
    """

    name: str
    title: str
    frame: pd.DataFrame
    kind: str = "grid"
    keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    axes: Axes = field(default_factory=Axes)
    group_axis: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    sections: list[tuple[str, pd.DataFrame, list[str]]] = field(default_factory=list)


def bits_label(w: int, a: int) -> str:
    """``w4a4``."""
    return f"w{int(w)}a{int(a)}"


def read_reference(ref_dir: str | Path | None, name: str) -> pd.DataFrame | None:
    """A reference CSV of the paper (``results/reference/<name>``), or None if absent."""
    if ref_dir is None:
        return None
    path = Path(ref_dir) / name
    return pd.read_csv(path, dtype={"arch": str, "algo": str}, keep_default_na=False, na_values=[""]) \
        if path.is_file() else None


def by_bits(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The cells split per (w_bits, a_bits), in increasing order."""
    if cells.empty:
        return []
    return [(bits_label(w, a), g) for (w, a), g in sorted(cells.groupby(["w_bits", "a_bits"]), key=lambda t: t[0])]


NC_NOTE = f"NC: not converged (loss not finite, or a QAT top-1 within {R.CHANCE_MARGIN:g} point of chance)"
GAP_NOTE = f"acc (gap): gap = academic - profile accuracy (positive = drop); {NC_NOTE}; -: missing or failed"


def build_all(cells: pd.DataFrame, track: str, ref_dir: str | Path | None = None,
              qat_algo: str = "lsq") -> list[Table]:
    """Every table that has data for one track's cells (no table is written for a slice without cells)."""
    use_ref = track == "imagenet"  # the paper's numbers are ImageNet numbers: only comparable on that track
    ref7 = read_reference(ref_dir, "mqbench_table7_hw_qat4bit.csv") if use_ref else None
    ref4 = read_reference(ref_dir, "mqbench_table4_academic_qat4bit.csv") if use_ref else None
    ref10 = read_reference(ref_dir, "mqbench_table10_ptq8bit.csv") if use_ref else None
    out: list[Table] = []
    if cells.empty:
        return out
    axes = Axes.of(cells)

    def add(name: str, title: str, frame: pd.DataFrame, **kw: Any) -> None:
        out.append(Table(name, title, frame, axes=axes, **kw))

    hw_cells = cells[R.is_hardware_cell(cells)]
    for bits, c in by_bits(hw_cells):
        qat_ref = ref7 if bits == "w4a4" else None
        if c["hw"].ne(ACADEMIC).any():
            add(f"table7_hw_{bits}", f"QAT {bits.upper()} on the hardware profiles (MQBench Table 7), top-1 %",
                table7(c, qat_ref), keys=["arch", "algo"], group_axis="hw",
                notes=[GAP_NOTE + "; Avg. HW: mean ± population std over the hardware profiles, NC = 0"]
                + (["[x]: the paper's ImageNet accuracy"] if qat_ref is not None else []))
        if c["hw"].eq(ACADEMIC).any():
            add(f"table4_academic_{bits}", f"QAT {bits.upper()}, academic setting (MQBench Table 4), top-1 %",
                table4(c, ref4 if bits == "w4a4" else None), keys=["arch"], group_axis="algo",
                notes=[f"{AVG_ARCH}: mean over architectures (NC = 0)"]
                + (["[x]: the paper's ImageNet accuracy"] if use_ref and bits == "w4a4" else []))
        out.extend(_robustness_tables(c, bits, axes))
    for bits, c in by_bits(cells[R.is_bnfold_cell(cells)]):
        for hw in ordered(c["hw"], "hw", axes):
            t = table5(c[c["hw"] == hw])
            if not t.empty:
                stem = "table5_bnfold_" + ("" if hw == ACADEMIC else f"{hw}_") + bits
                add(stem, f"QAT {bits.upper()} by BN-folding strategy on {hw} (MQBench Table 5), top-1 %", t,
                    keys=["arch", "algo"], notes=[f"{NC_NOTE}; -: missing"])
    for bits, c in by_bits(cells[R.is_graph_cell(cells)]):
        for hw in ordered(c["hw"], "hw", axes):
            t = table6(c[c["hw"] == hw])
            if not t.empty:
                stem = "table6_graph_" + ("" if hw == ACADEMIC else f"{hw}_") + bits
                add(stem, f"QAT {bits.upper()} by graph variant on {hw} (MQBench Table 6), top-1 %", t,
                    keys=["arch", "algo"], notes=[f"{NC_NOTE}; -: missing"])
    for bits, c in by_bits(cells[R.is_ptq_cell(cells)]):
        add(f"table10_ptq_{bits}", f"PTQ {bits.upper()} by calibration (MQBench Table 10), top-1 %",
            table10(c, ref10), keys=["arch", "calib_act", "calib_weight"], group_axis="hw",
            notes=[f"mean ± sample std over seeds; {NC_NOTE}; -: missing"]
            + (["[x]: the paper's ImageNet accuracy"] if ref10 is not None else []))
    dep = deploy_check(cells)
    if not dep.empty:
        add("deploy_check", "Fake quantization vs integer-only execution (deploy.check), test set", dep, kind="plain",
            keys=["arch", "hw", "bits", "algo"],
            notes=["agreement: % of test images with the same prediction; logit diff in output steps (the last "
                   "layer's accumulator step s_x s_w); requant / rounding: the profile's integer arithmetic; first "
                   "seed of each cell"])
    ort = onnx_runtime(cells)
    if not ort.empty:
        add("onnx_runtime", "Fake quantization vs the exported QDQ ONNX model in onnxruntime (deploy.onnx), test set",
            ort, kind="plain", keys=["arch", "hw", "bits", "algo"],
            notes=["gap: onnxruntime - fake-quant top-1 (points); agreement: % of test images with the same "
                   "prediction; ort_float_top1: the same ONNX model with onnxruntime's graph optimizations off (QDQ "
                   "as float ops, no integer kernels); first seed of each cell"])
    t11 = table11(cells[R.is_ptq_cell(cells)], cells[R.is_bn_calib_cell(cells)], hw_cells, qat_algo)
    if not t11.empty:
        add("table11_init", "PTQ, BN re-calibration and QAT by initialization (MQBench Table 11), top-1 %", t11,
            keys=["arch", "w_bits", "a_bits", "hw", "calib_act", "calib_weight"], labels=dict(TABLE11_GROUPS),
            notes=[f"ptq: plain PTQ; bn_calib: PTQ + BN re-calibration; qat: {qat_algo} initialised with the same "
                   "calibration"])
    if R.self_describing(cells):
        out.extend(mini_tables(cells, axes))
    return out


TABLE11_GROUPS = {"ptq": "PTQ", "bn_calib": "BN calib", "qat": "QAT"}  # display names of table11's column groups


# The experiments (bench/conf/experiment) whose grids give the committed mini views: one route to every table.
EXPERIMENTS = {
    "ptq_w8a8": ("ptq_w8a8",), "ptq_calib_8bit": ("table10_ptq",), "ptq_bn_calib_4bit": ("ptq_bn_calib_4bit",),
    "qat_w4a4_hw": ("qat_w4a4_hw",), "qat_w4a4_academic": ("qat_w4a4_academic",),
    "qat_w4a4_academic_3ep": ("qat_w4a4_academic_3ep",), "ptq_advanced": ("ptq_advanced", "ptq_advanced_per_channel",
                                                                    "ptq_white_paper"),
}


def run_note(name: str) -> str | None:
    """The legend line naming the experiment(s) that run table ``name``'s committed grid; None for other tables."""
    runs = EXPERIMENTS.get(name)
    if not runs:
        return None
    sweeps = " and ".join(f"`python -m bench run -m experiment={e}`" for e in runs)
    return f"grid: {sweeps}, then `python -m bench aggregate`"


def mini_tables(cells: pd.DataFrame, axes: Axes) -> list[Table]:
    """The mini track's own views of the cells: ``ptq_<bits>``, ``ptq_calib_<n>bit``, ``ptq_bn_calib_<n>bit``,
    ``qat_<bits>_hw``, ``qat_<bits>_academic``, ``qat_<bits>_academic_<e>ep`` and ``ptq_advanced``, each where its
    cells exist; the committed ones' notes name the experiments of their grids (:data:`EXPERIMENTS`)."""
    out: list[Table] = []

    def add(name: str, title: str, frame: pd.DataFrame, notes: list[str], **kw: Any) -> None:
        if not frame.empty:
            note = run_note(name)
            out.append(Table(name, title, frame, kind=kw.pop("kind", "plain"), axes=axes,
                             notes=notes + ([note] if note else []), **kw))

    for bits, c in by_bits(cells[R.is_ptq_cell(cells)]):
        w, a = int(c["w_bits"].iloc[0]), int(c["a_bits"].iloc[0])
        add(f"ptq_{bits}", f"PTQ {bits.upper()} (MinMax calibration) per profile, top-1 %", ptq_profiles(c),
            keys=["arch"], group_axis="hw",
            notes=["mean over seeds; max_drop: fp32 - the lowest profile; -: missing or not a number"])
        add(f"ptq_calib_{bits_name(w, a)}", f"PTQ {bits.upper()} by calibration method (MQBench Table 10 analogue), "
            "top-1 %", ptq_calib(c), keys=["arch", "calib_act", "calib_weight"],
            notes=["<profile>_top1: mean over seeds; -: missing"])
    for _, c in by_bits(cells[R.is_bn_calib_cell(cells)]):
        w, a = int(c["w_bits"].iloc[0]), int(c["a_bits"].iloc[0])
        add(f"ptq_bn_calib_{bits_name(w, a)}", f"PTQ {bits_label(w, a).upper()} with and without BN re-calibration "
            "(MQBench Table 11 analogue), top-1 %", ptq_bn_calib(c),
            keys=["arch", "hw", "calib_act", "calib_weight"],
            notes=["ptq_top1: before BN re-calibration (the cell's init_top1); bn_calib_top1: after it, re-estimated "
                   "on calib_size images; best first per arch and profile"])
    for bits, c in by_bits(cells[R.is_hardware_cell(cells)]):
        epochs = standard_epochs(c)
        std = c[c["train_epochs"] == epochs]
        if std["hw"].ne(ACADEMIC).any():
            add(f"qat_{bits}_hw", f"QAT {bits.upper()} per profile with the cost ({epochs} epoch(s); MQBench Table 7 "
                "analogue), top-1 %", qat_long(std), keys=["arch", "algo", "hw"],
                notes=["init_top1: after calibration, before QAT; hw_gap: academic - profile top-1; wall_s: seconds "
                       f"per cell (mean over seeds); {NC_NOTE}"])
        acad = c[c["hw"] == ACADEMIC]
        base = acad[acad["train_epochs"] == epochs]
        add(f"qat_{bits}_academic", f"QAT {bits.upper()}, academic setting, with the cost ({epochs} epoch(s); MQBench "
            "Table 4 analogue), top-1 %", qat_academic(base), keys=["arch", "algo"],
            notes=[f"qat_gain: top1 - init_top1; drop_from_fp32: fp32_top1 - top1; {NC_NOTE}"])
        for e in sorted(set(acad["train_epochs"].astype(int)) - {epochs}):
            add(f"qat_{bits}_academic_{e}ep", f"QAT {bits.upper()}, academic, {e} epoch(s) against {epochs}, top-1 %",
                qat_academic_longer(acad[acad["train_epochs"] == e], base, e, epochs), keys=["arch", "algo"],
                notes=[f"top1_<n>ep: after n epochs; drop_from_fp32 and wall_s of the {e}-epoch cells; {NC_NOTE}"])
    adv, sections = ptq_advanced(cells[cells["kind"] == "ptq"])
    presets = sorted({p for p in adv["recon_preset"] if isinstance(p, str)}) if not adv.empty else []
    add("ptq_advanced", "Advanced PTQ: top-1 % (FP32 in the first row)", adv, kind="sections", sections=sections,
        notes=["Nearest rounding (RTN) with MinMax / MSE ranges, BN re-calibration, CLE, bias correction, and the "
               "reconstruction methods with MSE-initialised ranges"
               + (f"; reconstruction budget `recon={', '.join(presets)}`" if presets else "")
               + ". Bit-Split and IOSO need per-channel weights (per-tensor profiles have no such cells)."])
    return out


def _robustness_tables(c: pd.DataFrame, bits: str, axes: Axes) -> list[Table]:
    out = []
    hwr = hw_robustness(c)
    if not hwr.empty:
        out.append(Table(f"hw_robustness_{bits}", f"Hardware robustness {bits.upper()}: mean top-1 over the hardware "
                         "profiles per algorithm and arch (NC = 0)", hwr, kind="plain", keys=["algo"], axes=axes,
                         group_axis="arch"))
    ar = arch_robustness(c)
    if not ar.empty:
        out.append(Table(f"arch_robustness_{bits}", f"Architecture robustness {bits.upper()}: mean top-1 over archs "
                         "per algorithm and profile (NC = 0; MQBench Fig. 6)", ar, kind="plain", keys=["algo"],
                         axes=axes, group_axis="hw"))
    sd = algo_std(c)
    if not sd.empty:
        out.append(Table(f"algo_std_{bits}", f"Spread of top-1 across algorithms {bits.upper()} (population std, "
                         "NC = 0; MQBench Fig. 5)", sd, kind="plain", keys=["arch"], axes=axes, group_axis="hw"))
    best = best_algo(c)
    if not best.empty:
        out.append(Table(f"best_algo_{bits}", f"Best algorithm per arch and profile {bits.upper()} (ties share the "
                         "point, as the paper's footnote 4)", best, kind="plain", keys=["arch", "hw"], axes=axes,
                         extra={"counts": best_counts(best, axes)}))
    return out
