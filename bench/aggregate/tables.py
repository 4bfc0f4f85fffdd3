"""The benchmark tables (MQBench Tables 4-7, 10, 11, Fig. 5/6 data) as pure functions of the cells DataFrame.

Input: the cells of :func:`bench.aggregate.records.group_seeds` (one row per cell: descriptors, n, mean, std,
ci95, status). Grid tables come out wide: the row keys, then per column group ``g`` (a profile, an algorithm, a
BN-fold strategy...) the columns ``g_mean, g_std, g_ci95, g_n, g_status`` (``ok`` | ``nc`` | ``missing``) and
``g_overlaps_next`` (the cell's 95% CI overlaps the next-ranked competitor's), plus table-specific columns.

Conventions taken from the paper (checked against its own numbers in tests/aggregate/test_tables.py):
- hardware gap = academic accuracy - profile accuracy (positive = the drop);
- Avg. HW, Avg. Arch. and the Fig. 5 spread count a not-converged (NC) cell as 0 and use the population std.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aggregate import records as R
from bench.aggregate.stats import intervals_overlap, mean_or_nan, population_std

PROFILE_ORDER = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]
ARCH_ORDER = ["resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf"]
ALGO_ORDER = ["lsq", "lsqplus", "apot", "qil", "dsq", "pact", "dorefa", "ptq", "adaround", "brecq", "qdrop",
              "bitsplit", "ioso", "fp32"]
CALIB_ORDER = ["minmax", "mse", "kld", "quantile", "norm", "meanstd", "bn"]
ACADEMIC = "academic"
FIELDS = ("mean", "std", "ci95", "n", "status")
AVG_ARCH = "Avg. Arch."
EPS = 1e-6  # accuracies are given to 2 decimals: means closer than this are ties


def _rank(value: object, order: Sequence[str]) -> tuple[int, str]:
    name = str(value)
    base = name.removesuffix("_mini")
    return (order.index(base) if base in order else len(order), name)


ORDERS = {"arch": ARCH_ORDER, "algo": ALGO_ORDER, "hw": PROFILE_ORDER, "calib_act": CALIB_ORDER,
          "calib_weight": CALIB_ORDER}


def ordered(values: Iterable[object], order: Sequence[str]) -> list:
    """Distinct ``values`` in the paper's ``order`` (unknown names last, alphabetically)."""
    return sorted(set(values), key=lambda v: _rank(v, order))


def sort_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``: archs, algorithms, profiles and calibrations in the paper's order, others by value."""
    if df.empty:
        return df.reset_index(drop=True)
    tmp = df.copy()
    sort_cols = []
    for k in keys:
        if k in ORDERS:
            tmp[f"_pos_{k}"] = tmp[k].map(lambda v, o=ORDERS[k]: _rank(v, o)[0])
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


def widen(long: pd.DataFrame, row_keys: list[str], col_key: str, columns: list,
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
    return sort_rows(wide, row_keys)


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
    long = mark_overlaps(slots(cells, ["arch", "algo"], "hw", prefer_calib=True), ["arch", "hw"])
    profiles = ordered(long["hw"], PROFILE_ORDER)
    wide = widen(long, ["arch", "algo"], "hw", profiles)
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
    acad = cells[cells["hw"] == ACADEMIC]
    long = mark_overlaps(slots(acad, ["arch"], "algo", prefer_calib=True), ["arch"])
    algos = ordered(long["algo"], ALGO_ORDER)
    wide = widen(long, ["arch"], "algo", algos)
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


def _plain_wide(long: pd.DataFrame, row: str, col: str, value: str, columns: list) -> pd.DataFrame:
    piv = long.pivot_table(index=row, columns=col, values=value, aggfunc="first")
    cnt = long.pivot_table(index=row, columns=col, values="count", aggfunc="first")
    out = pd.DataFrame({row: list(piv.index)})
    for c in columns:
        out[str(c)] = [piv.at[i, c] if c in piv.columns else math.nan for i in piv.index]
        out[f"{c}_n"] = [int(cnt.at[i, c]) if c in cnt.columns and _finite(cnt.at[i, c]) else 0 for i in piv.index]
    return sort_rows(out, [row])


def hw_robustness(cells: pd.DataFrame) -> pd.DataFrame:
    """Hardware robustness: per algo x arch the mean accuracy over the non-academic profiles (NC = 0), and per algo
    the mean of those over archs (column ``mean``). ``<arch>_n``: profiles averaged."""
    long = _hardware_slots(cells)
    long = long[(long["hw"] != ACADEMIC) & long["score"].map(_finite)]
    if long.empty:
        return pd.DataFrame()
    per = long.groupby(["algo", "arch"])["score"].agg(["mean", "count"]).reset_index()
    archs = ordered(per["arch"], ARCH_ORDER)
    wide = _plain_wide(per, "algo", "arch", "mean", archs)
    wide["mean"] = [mean_or_nan([v for v in r[archs] if _finite(v)]) for _, r in wide.iterrows()]
    return wide


def arch_robustness(cells: pd.DataFrame) -> pd.DataFrame:
    """Architecture robustness (Fig. 6 right): per algo x profile the mean accuracy over archs (NC = 0).
    ``<profile>_n``: archs averaged."""
    long = _hardware_slots(cells)
    long = long[long["score"].map(_finite)]
    if long.empty:
        return pd.DataFrame()
    per = long.groupby(["algo", "hw"])["score"].agg(["mean", "count"]).reset_index()
    return _plain_wide(per, "algo", "hw", "mean", ordered(per["hw"], PROFILE_ORDER))


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
    return _plain_wide(per, "arch", "hw", "std", ordered(per["hw"], PROFILE_ORDER))


def winners(values: dict[str, float], best: str = "max") -> list[str]:
    """The algorithms with the best value (ties all win; the caller splits the point)."""
    vals = {a: v for a, v in values.items() if _finite(v)}
    if not vals:
        return []
    top = max(vals.values()) if best == "max" else min(vals.values())
    return sorted((a for a, v in vals.items() if abs(v - top) <= EPS), key=lambda a: _rank(a, ALGO_ORDER))


def best_algo(cells: pd.DataFrame) -> pd.DataFrame:
    """Per arch x profile the winning algorithm(s) by accuracy (converged cells) and by smallest hardware gap
    (academic - profile, both converged). Columns: arch, hw, per_channel, best_top1_algos ('+'-joined ties),
    best_top1, min_gap_algos, min_gap."""
    long = _hardware_slots(cells)
    if long.empty:
        return pd.DataFrame()
    granularity = {h: g.dropna().iloc[0] if g.notna().any() else None for h, g in cells.groupby("hw")["per_channel"]}
    rows = []
    for (arch, hw), g in long.groupby(["arch", "hw"]):
        acc = {r.algo: (r.mean if r.status == "ok" else math.nan) for r in g.itertuples()}
        gaps: dict[str, float] = {}
        if hw != ACADEMIC:
            acad = long[(long["arch"] == arch) & (long["hw"] == ACADEMIC) & (long["status"] == "ok")]
            acad_acc = dict(zip(acad["algo"], acad["mean"], strict=True))
            gaps = {a: acad_acc[a] - v for a, v in acc.items() if a in acad_acc and _finite(v)}
        top, low = winners(acc), winners(gaps, best="min")
        rows.append({"arch": arch, "hw": hw, "per_channel": granularity.get(hw),
                     "best_top1_algos": "+".join(top), "best_top1": max(acc[a] for a in top) if top else math.nan,
                     "min_gap_algos": "+".join(low), "min_gap": min(gaps[a] for a in low) if low else math.nan})
    return sort_rows(pd.DataFrame(rows), ["arch", "hw"])


def best_counts(best: pd.DataFrame) -> pd.DataFrame:
    """Wins per algorithm over the hardware (non-academic) settings, a tie giving each winner an equal share (the
    paper's footnote 4): ``top1_all`` / ``top1_per_tensor`` / ``top1_per_channel`` and the same for ``gap``, each
    with ``_share`` = wins / settings counted."""
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
    for a in ordered(counts, ALGO_ORDER):
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
    return widen(long, ["arch", "algo"], "setting", settings)


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
    keys = ["arch", "calib_act", "calib_weight"]
    long = mark_overlaps(slots(cells, keys, "hw"), ["arch", "hw"])
    profiles = ordered(long["hw"], PROFILE_ORDER)
    wide = widen(long, keys, "hw", profiles)
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
    wide = widen(long, keys, "group", [g for g in ("ptq", "bn_calib", "qat") if g in set(long["group"])])
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


def _by_bits_arch_profile(out: pd.DataFrame) -> pd.DataFrame:
    order = {h: i for i, h in enumerate(PROFILE_ORDER)}
    out = out.assign(_h=out["hw"].map(order).fillna(len(order)))
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
    return _by_bits_arch_profile(out)


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
    return _by_bits_arch_profile(out)


# ---- everything for one track ----

@dataclass
class Table:
    """One output table: its file stem, title, frame, kind (``grid`` or ``plain``) and legend lines."""

    name: str
    title: str
    frame: pd.DataFrame
    kind: str = "grid"
    keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)


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
    hw_cells = cells[R.is_hardware_cell(cells)]
    for bits, c in by_bits(hw_cells):
        qat_ref = ref7 if bits == "w4a4" else None
        if c["hw"].ne(ACADEMIC).any():
            out.append(Table(f"table7_hw_{bits}", f"QAT {bits.upper()} on the hardware profiles (MQBench Table 7), "
                             "top-1 %", table7(c, qat_ref), keys=["arch", "algo"],
                             notes=[GAP_NOTE + "; Avg. HW: mean ± population std over the hardware profiles, NC = 0"]
                             + (["[x]: the paper's ImageNet accuracy"] if qat_ref is not None else [])))
        if c["hw"].eq(ACADEMIC).any():
            out.append(Table(f"table4_academic_{bits}", f"QAT {bits.upper()}, academic setting (MQBench Table 4), "
                             "top-1 %", table4(c, ref4 if bits == "w4a4" else None), keys=["arch"],
                             notes=[f"{AVG_ARCH}: mean over architectures (NC = 0)"]
                             + (["[x]: the paper's ImageNet accuracy"] if use_ref and bits == "w4a4" else [])))
        out.extend(_robustness_tables(c, bits))
    for bits, c in by_bits(cells[R.is_bnfold_cell(cells)]):
        for hw in ordered(c["hw"], PROFILE_ORDER):
            t = table5(c[c["hw"] == hw])
            if not t.empty:
                stem = "table5_bnfold_" + ("" if hw == ACADEMIC else f"{hw}_") + bits
                out.append(Table(stem, f"QAT {bits.upper()} by BN-folding strategy on {hw} (MQBench Table 5), "
                                 "top-1 %", t, keys=["arch", "algo"], notes=[f"{NC_NOTE}; -: missing"]))
    for bits, c in by_bits(cells[R.is_graph_cell(cells)]):
        for hw in ordered(c["hw"], PROFILE_ORDER):
            t = table6(c[c["hw"] == hw])
            if not t.empty:
                stem = "table6_graph_" + ("" if hw == ACADEMIC else f"{hw}_") + bits
                out.append(Table(stem, f"QAT {bits.upper()} by graph variant on {hw} (MQBench Table 6), top-1 %", t,
                                 keys=["arch", "algo"], notes=[f"{NC_NOTE}; -: missing"]))
    for bits, c in by_bits(cells[R.is_ptq_cell(cells)]):
        out.append(Table(f"table10_ptq_{bits}", f"PTQ {bits.upper()} by calibration (MQBench Table 10), top-1 %",
                         table10(c, ref10), keys=["arch", "calib_act", "calib_weight"],
                         notes=[f"mean ± sample std over seeds; {NC_NOTE}; -: missing"]
                         + (["[x]: the paper's ImageNet accuracy"] if ref10 is not None else [])))
    dep = deploy_check(cells)
    if not dep.empty:
        out.append(Table("deploy_check", "Fake quantization vs integer-only execution (deploy.check), test set",
                         dep, kind="plain", keys=["arch", "hw", "bits", "algo"],
                         notes=["agreement: % of test images with the same prediction; logit diff in output steps "
                                "(the last layer's accumulator step s_x s_w); requant / rounding: the profile's "
                                "integer arithmetic; first seed of each cell"]))
    ort = onnx_runtime(cells)
    if not ort.empty:
        out.append(Table("onnx_runtime", "Fake quantization vs the exported QDQ ONNX model in onnxruntime "
                         "(deploy.onnx), test set", ort, kind="plain", keys=["arch", "hw", "bits", "algo"],
                         notes=["gap: onnxruntime - fake-quant top-1 (points); agreement: % of test images with the "
                                "same prediction; ort_float_top1: the same ONNX model with onnxruntime's graph "
                                "optimizations off (QDQ as float ops, no integer kernels); first seed of each cell"]))
    t11 = table11(cells[R.is_ptq_cell(cells)], cells[R.is_bn_calib_cell(cells)], hw_cells, qat_algo)
    if not t11.empty:
        out.append(Table("table11_init", "PTQ, BN re-calibration and QAT by initialization (MQBench Table 11), "
                         "top-1 %", t11, keys=["arch", "w_bits", "a_bits", "hw", "calib_act", "calib_weight"],
                         notes=[f"ptq: plain PTQ; bn_calib: PTQ + BN re-calibration; qat: {qat_algo} initialised "
                                "with the same calibration"]))
    return out


def _robustness_tables(c: pd.DataFrame, bits: str) -> list[Table]:
    out = []
    hwr = hw_robustness(c)
    if not hwr.empty:
        out.append(Table(f"hw_robustness_{bits}", f"Hardware robustness {bits.upper()}: mean top-1 over the hardware "
                         "profiles per algorithm and arch (NC = 0)", hwr, kind="plain", keys=["algo"]))
    ar = arch_robustness(c)
    if not ar.empty:
        out.append(Table(f"arch_robustness_{bits}", f"Architecture robustness {bits.upper()}: mean top-1 over archs "
                         "per algorithm and profile (NC = 0; MQBench Fig. 6)", ar, kind="plain", keys=["algo"]))
    sd = algo_std(c)
    if not sd.empty:
        out.append(Table(f"algo_std_{bits}", f"Spread of top-1 across algorithms {bits.upper()} (population std, "
                         "NC = 0; MQBench Fig. 5)", sd, kind="plain", keys=["arch"]))
    best = best_algo(c)
    if not best.empty:
        out.append(Table(f"best_algo_{bits}", f"Best algorithm per arch and profile {bits.upper()} (ties share the "
                         "point, as the paper's footnote 4)", best, kind="plain", keys=["arch", "hw"],
                         extra={"counts": best_counts(best)}))
    return out
