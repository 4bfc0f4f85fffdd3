"""The findings scorecard: the source papers' claims that the records can test, each with a computed verdict.

A claim (:mod:`bench.aggregate.claims`) reduces the records to one difference ``d`` in top-1 points per matched
*unit* (the settings the claim ranges over, and the seed), or to a ranking of competitors per setting. The verdict
follows from the numbers by the rules in :data:`RULES` (written on the page too), never by hand:

- ``greater`` (A beats B): the Student-t 95% CI of the mean of ``d`` lies above 0 -> holds; below 0 -> does not hold;
  contains 0, or fewer than 2 units -> not significant.
- ``equivalent`` (A matches B within ``margin`` points): the CI lies inside ``[-margin, margin]`` -> holds; entirely
  outside it -> does not hold; else not significant.
- ``varies`` (no competitor is best in every setting): two settings rank two competitors in opposite orders, each
  significantly (Welch 95% CI of the difference of their seed means excludes 0) -> holds; one competitor has the best
  mean in every setting -> does not hold; else not significant.

Units pair seeds: a unit counts only where both sides have that seed. A cell that did not converge (NC) counts with
its measured top-1 (chance level when it is not a number). Notes that explain a verdict come from a hand-written
``findings_notes.yaml`` beside the scorecard; a note is shown only for the verdict it was written for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aggregate.stats import summarize, t975

HOLDS, FAILS, NOT_SIG, NO_DATA = "holds", "does not hold", "not significant", "no data"
VERDICTS = (HOLDS, FAILS, NOT_SIG, NO_DATA)
RULES = (
    "Each claim is reduced to a difference d in top-1 points per matched unit (the settings the claim ranges over, "
    "and the seed: a unit counts only where both sides have that seed; a cell that did not converge counts with its "
    "measured top-1, chance level when that is not a number), summarised by its mean and Student-t 95% CI.",
    "A > B claims: holds if the CI lies above 0, does not hold if it lies below 0, not significant if it contains 0 "
    "or there are fewer than 2 units.",
    "A ≈ B claims (within a margin m, stated in the claim): holds if the CI lies inside [-m, m], does not hold if it "
    "lies entirely outside, not significant otherwise.",
    "'No single X is best everywhere' claims: holds if two settings rank two X in opposite orders, each significantly "
    "(Welch 95% CI of the difference of their seed means excludes 0); does not hold if one X has the best mean in "
    "every setting; not significant otherwise.",
    "No data: the records hold none of the cells the claim needs (its experiment was not run).",
)


@dataclass(frozen=True)
class Evidence:
    """What the records say about one claim: the statistic, its CI, the verdict and a readable account."""

    verdict: str
    what: str  # the cells compared, in words
    n: int = 0  # units (or settings, for ``varies``)
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    detail: str = ""  # per-setting numbers, shares, winners


@dataclass(frozen=True)
class Claim:
    """One testable claim of a source paper: where it is made, its numbers there, and the test on our records."""

    id: str
    paper: str  # "MQBench", "White paper", "Bit-Split", "IOSO"
    where: str  # section / table
    claim: str
    paper_evidence: str
    test: Callable[[pd.DataFrame], Evidence] = field(compare=False)


# ---- the seed-level frame the tests read ----

def seed_frame(recs: pd.DataFrame) -> pd.DataFrame:
    """Deduplicated records (one per config and seed) as the claims read them: failed and smoke runs dropped,
    ``acc`` = top-1, or chance level for a run whose top-1 is not a number."""
    if recs.empty:
        return recs.assign(acc=pd.Series(dtype=float))
    df = recs[(recs["status"] != "failed") & ~recs["smoke"].fillna(False).astype(bool)].copy()
    classes = pd.to_numeric(df.get("num_classes", pd.Series(math.nan, index=df.index)), errors="coerce")
    chance = 100.0 / classes
    top1 = pd.to_numeric(df["top1"], errors="coerce")
    df["acc"] = top1.where(top1.map(_finite).astype(bool), chance)
    return df[df["acc"].map(_finite).astype(bool)] if not df.empty else df


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows whose column equals the value (a scalar), is one of the values (list/tuple/set), or is missing (None)."""
    mask = pd.Series(True, index=df.index)
    for col, want in where.items():
        if col not in df:
            return df.iloc[0:0]
        if want is None:
            mask &= df[col].isna()
        elif isinstance(want, list | tuple | set | frozenset):
            mask &= df[col].isin(list(want))
        else:
            mask &= df[col] == want
    return df[mask]


def values(df: pd.DataFrame, keys: Sequence[str], column: str = "acc") -> pd.Series:
    """``column`` indexed by ``keys`` + seed; where several cells share a key (e.g. two calibration-set sizes), the
    one with the largest calibration set, then the latest finish."""
    if df.empty:
        return pd.Series(dtype=float)
    idx = [*keys, "seed"]
    order = df.assign(_cs=pd.to_numeric(df["calib_size"], errors="coerce").fillna(0)).sort_values(
        ["_cs", "finished_at"])
    kept = order.drop_duplicates(idx, keep="last")
    return kept.set_index(idx)[column].astype(float)


def diff(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a - b`` on the units both have (empty when either is)."""
    if a.empty or b.empty:
        return pd.Series(dtype=float)
    common = a.index.intersection(b.index)
    return (a.loc[common] - b.loc[common]).sort_index()


def stack(parts: dict[Any, pd.Series], level: str) -> pd.Series:
    """The non-empty ``parts`` as one series with a new outer index level ``level`` (empty if none is)."""
    parts = {k: v for k, v in parts.items() if not v.empty}
    return pd.concat(parts, names=[level]) if parts else pd.Series(dtype=float)


def reduce(s: pd.Series, over: str | Sequence[str], how: str = "mean", complete: bool = True) -> pd.Series:
    """Aggregate ``s`` over index level(s) ``over`` (mean, min, max or the population std). ``complete``: only the
    groups that have as many members as the largest group (a max over six algorithms is not taken over four)."""
    if s.empty:
        return s
    over = [over] if isinstance(over, str) else list(over)
    keep = [n for n in s.index.names if n not in over]
    g = s.groupby(level=keep)
    if complete:
        size = g.transform("size")
        s = s[size == size.max()]
        g = s.groupby(level=keep)
    if how == "pstd":
        return g.std(ddof=0)
    return getattr(g, how)()


# ---- verdicts ----

def _ci(d: pd.Series) -> tuple[int, float, float, float]:
    s = summarize([float(x) for x in d])
    half = s.ci95 if s.n >= 2 else math.nan
    return s.n, s.mean, s.mean - half, s.mean + half


def breakdown(d: pd.Series, limit: int = 8) -> str:
    """The mean of ``d`` per value of its first index level other than the seed (``by arch: a +1.00, b -0.50``);
    empty when there is no such level or it has more than ``limit`` values."""
    levels = [n for n in d.index.names if n not in (None, "seed")]
    if d.empty or not levels:
        return ""
    means = d.groupby(level=levels[0]).mean()
    if len(means) < 2 or len(means) > limit:
        return ""
    return f"mean by {levels[0]}: " + ", ".join(f"{k} {v:+.2f}" for k, v in means.items())


def greater(d: pd.Series, what: str, detail: str = "") -> Evidence:
    """Verdict of an A > B claim from the per-unit differences ``d`` = A - B."""
    if d.empty:
        return Evidence(NO_DATA, what)
    detail = "; ".join(x for x in (detail, breakdown(d)) if x)
    n, mean, lo, hi = _ci(d)
    verdict = NOT_SIG if n < 2 or not math.isfinite(lo) else HOLDS if lo > 0 else FAILS if hi < 0 else NOT_SIG
    return Evidence(verdict, what, n, mean, lo, hi, detail)


def equivalent(d: pd.Series, margin: float, what: str, detail: str = "") -> Evidence:
    """Verdict of an A ≈ B claim (within ``margin`` points) from the per-unit differences ``d``."""
    if d.empty:
        return Evidence(NO_DATA, what)
    detail = "; ".join(x for x in (detail, breakdown(d)) if x)
    n, mean, lo, hi = _ci(d)
    if n < 2 or not math.isfinite(lo):
        verdict = NOT_SIG
    elif -margin <= lo and hi <= margin:
        verdict = HOLDS
    elif lo > margin or hi < -margin:
        verdict = FAILS
    else:
        verdict = NOT_SIG
    return Evidence(verdict, what, n, mean, lo, hi, detail)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch 95% CI (NaN bounds with fewer than 2 values a side)."""
    sa, sb = summarize(list(a)), summarize(list(b))
    d = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return d, math.nan, math.nan
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / ((va ** 2 / (sa.n - 1)) + (vb ** 2 / (sb.n - 1)))
    half = t975(max(1, math.floor(df))) * se
    return d, d - half, d + half


def varies(s: pd.Series, competitor: str, what: str, labels: Callable[[Any], str] = str) -> Evidence:
    """Verdict of a 'no single competitor is best in every setting' claim. ``s``: top-1 indexed by the setting
    levels, ``competitor`` and seed."""
    if s.empty:
        return Evidence(NO_DATA, what)
    setting_levels = [n for n in s.index.names if n not in (competitor, "seed")]
    per: dict[Any, dict[Any, list[float]]] = {}
    for idx, v in s.items():
        key = dict(zip(s.index.names, idx, strict=True))
        setting = tuple(key[n] for n in setting_levels)
        per.setdefault(setting, {}).setdefault(key[competitor], []).append(float(v))
    per = {k: c for k, c in per.items() if len(c) >= 2}
    if not per:
        return Evidence(NO_DATA, what)
    best = {k: max(c, key=lambda x: summarize(c[x]).mean) for k, c in per.items()}
    wins = pd.Series(list(best.values())).value_counts()
    detail = "best by mean: " + ", ".join(f"{labels(a)} {n}/{len(best)}" for a, n in wins.items())
    significant: dict[tuple[Any, Any], list[Any]] = {}  # (A, B) -> settings where A beats B significantly
    for k, c in per.items():
        for a in c:
            for b in c:
                if a != b:
                    _, lo, _ = welch(c[a], c[b])
                    if math.isfinite(lo) and lo > 0:
                        significant.setdefault((a, b), []).append(k)
    reversals = [(a, b) for (a, b) in significant if (b, a) in significant and str(a) < str(b)]
    if reversals:
        a, b = reversals[0]
        ka, kb = significant[(a, b)][0], significant[(b, a)][0]
        detail += (f"; e.g. {labels(a)} > {labels(b)} on {'/'.join(map(str, ka))} and {labels(b)} > {labels(a)} on "
                   f"{'/'.join(map(str, kb))} (both significant)")
        verdict = HOLDS
    elif len(wins) == 1:
        verdict = FAILS
    else:
        verdict = NOT_SIG
    return Evidence(verdict, what, len(per), detail=detail)


# ---- the scorecard ----

@dataclass(frozen=True)
class Finding:
    """A claim with its evidence on one track, and the note that explains its verdict (if any)."""

    claim: Claim
    evidence: Evidence
    note: str = ""


def load_notes(path: str | Path) -> dict[str, dict[str, str]]:
    """``findings_notes.yaml``: ``<claim id>: {verdict: <the verdict it explains>, note: <text>}``; {} if absent."""
    p = Path(path)
    if not p.is_file():
        return {}
    import yaml

    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of claim id -> {{verdict, note}}")
    return {str(k): {"verdict": str(v.get("verdict", "")), "note": str(v.get("note", ""))}
            for k, v in data.items() if isinstance(v, dict)}


def evaluate(recs: pd.DataFrame, claims: Iterable[Claim], notes: dict[str, dict[str, str]] | None = None
             ) -> list[Finding]:
    """Every claim tested on the (deduplicated) records ``recs`` of one track."""
    df = seed_frame(recs)
    notes = notes or {}
    out = []
    for c in claims:
        ev = c.test(df)
        n = notes.get(c.id, {})
        text = n.get("note", "") if n.get("verdict") == ev.verdict else ""
        out.append(Finding(c, ev, text))
    return out


def _num(x: float, signed: bool = True) -> str:
    return "" if not math.isfinite(x) else f"{x:+.2f}" if signed else f"{x:.2f}"


def _stat(e: Evidence) -> str:
    if math.isfinite(e.mean) and math.isfinite(e.lo):
        return f"mean {_num(e.mean)} [95% CI {_num(e.lo)}, {_num(e.hi)}], n={e.n}"
    if math.isfinite(e.mean):
        return f"{_num(e.mean)}, n={e.n} (no CI)"
    return f"{e.n} settings" if e.n else "-"


def frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """findings.csv: one row per claim."""
    rows = []
    for f in findings:
        c, e = f.claim, f.evidence
        rows.append({"id": c.id, "paper": c.paper, "where": c.where, "claim": c.claim,
                     "paper_evidence": c.paper_evidence, "our_evidence": e.what, "units": e.n,
                     "mean_diff": round(e.mean, 4) if math.isfinite(e.mean) else math.nan,
                     "ci95_lo": round(e.lo, 4) if math.isfinite(e.lo) else math.nan,
                     "ci95_hi": round(e.hi, 4) if math.isfinite(e.hi) else math.nan,
                     "detail": e.detail, "verdict": e.verdict, "note": f.note})
    return pd.DataFrame(rows)


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    """How many claims got each verdict."""
    return {v: sum(f.evidence.verdict == v for f in findings) for v in VERDICTS}


def markdown(findings: Sequence[Finding], track: str) -> str:
    """findings.md: the counts, the rules, and one section per claim."""
    k = counts(findings)
    lines = [f"# Findings scorecard: {track}", "",
             "The source papers' claims that this track can test, each checked against the result records by "
             "`python -m bench aggregate` (bench/aggregate/claims.py). The papers' numbers are ImageNet numbers; "
             "ours come from the track's records, so a verdict says whether the *direction* (or the equivalence) "
             "the paper reports shows up here.", "",
             f"**{len(findings)} claims: {k[HOLDS]} hold, {k[FAILS]} do not hold, {k[NOT_SIG]} not significant"
             + (f", {k[NO_DATA]} without data" if k[NO_DATA] else "") + ".**", "", "## Verdict rules", ""]
    lines += [f"- {r}" for r in RULES]
    lines += ["", "## Summary", "", "| id | paper | claim | ours: mean [95% CI] | verdict |", "|---|---|---|---|---|"]
    for f in findings:
        e = f.evidence
        stat = _stat(e)
        lines.append(f"| [{f.claim.id}](#{f.claim.id}) | {f.claim.paper}, {f.claim.where} | {f.claim.claim} | {stat} "
                     f"| **{e.verdict}** |")
    lines += ["", "## Claims", ""]
    for f in findings:
        c, e = f.claim, f.evidence
        lines += [f'<a id="{c.id}"></a>', f"### {c.id}: {c.claim}", "",
                  f"- **Paper** ({c.paper}, {c.where}): {c.paper_evidence}",
                  f"- **Ours**: {e.what}" + (f"; {_stat(e)}" if e.n else ""),
                  ]
        if e.detail:
            lines.append(f"- **Detail**: {e.detail}")
        lines.append(f"- **Verdict**: {e.verdict}")
        if e.verdict in (FAILS, NOT_SIG):
            lines.append(f"- **Note**: {f.note or 'cause not investigated: unknown.'}")
        elif f.note:
            lines.append(f"- **Note**: {f.note}")
        lines.append("")
    return "\n".join(lines)
