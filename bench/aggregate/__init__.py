"""Result records (runs/) -> benchmark tables, metrics and plots (results/<track>/).

``aggregate(runs_dir, out, track, plots)`` is what ``python -m bench aggregate`` calls; scripts can call it too.
Pipeline: :mod:`records` (load, reject corrupt files, dedup re-runs, group seeds into cells, table filters) ->
:mod:`tables` (pure DataFrame -> DataFrame builders) -> :mod:`render` (CSV + Markdown) and :mod:`plots` (PNG);
:mod:`bundle` keeps what the run folders hold for the site's record pages (``records.jsonl.gz``);
:mod:`findings` with :mod:`claims` tests the source papers' claims on the records (``findings.md`` / ``.csv``).

The aggregator reads records only: a record says what its tables need (its algorithm's kind, its dataset's classes,
the order and display names of its axis values: :mod:`axes`), and what schema-1 records do not say comes from the
frozen :mod:`legacy` maps. So it imports neither torch nor the registries (``bench.algos`` ...).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from bench.aggregate import records as R
from bench.aggregate import render, tables
from bench.aggregate.axes import Axes
from bench.aggregate.bundle import write_bundle

REF_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"  # the papers' tables, committed


@dataclass
class TrackResult:
    """What one track's aggregation wrote, and its counts."""

    track: str
    out_dir: Path
    groups: list[tuple[str, list[Path]]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Loaded:
    """The deduplicated records of a runs dir, the files rejected, and how many re-runs dedup merged."""

    records: pd.DataFrame
    rejects: list[R.Reject]
    merged: int


def load(runs_dir: str | Path, warn: TextIO | None = None) -> Loaded:
    """Read, validate and deduplicate every record under ``runs_dir``."""
    pairs, rejects = R.load_records(runs_dir, warn=warn)
    raw = R.records_frame(pairs)
    recs = R.dedup(raw)
    return Loaded(recs, rejects, len(raw) - len(recs))


def out_dir_for(track: str, out: str | Path | None, n_tracks: int) -> Path:
    """``out`` itself for a single track given ``out=``; else ``<out or results>/<track>``."""
    if out is not None and n_tracks == 1:
        return Path(out)
    return Path(out if out is not None else "results") / track


def aggregate_track(recs: pd.DataFrame, track: str, out_dir: Path, plots: bool = True,
                    rejects: Sequence[R.Reject] = (), merged: int = 0, tracks: Sequence[str] = (),
                    ref_dir: Path | None = REF_DIR,
                    log: Callable[[str], None] = print) -> TrackResult:
    """Write one track's tables, cells.csv, records.jsonl.gz (what the site's record pages need from the run
    folders: :mod:`bundle`), failed.csv, plots and index.md into ``out_dir``."""
    recs = recs[recs["track"] == track]
    cells = R.group_seeds(recs)
    failed = R.failed_records(recs)
    res = TrackResult(track, out_dir)

    def wrote(label: str, paths: list[Path], text: str | None = None) -> None:
        res.groups.append((label, paths))
        names = ", ".join(p.name for p in paths)
        log(f"wrote {label}: " + (text or (f"{out_dir}/{{{names}}}" if len(paths) > 1 else str(paths[0]))))

    built = tables.build_all(cells, track, ref_dir=ref_dir)
    for t in built:
        wrote(t.name, render.write_table(t, out_dir))
    findings = _findings(recs, out_dir)
    if findings:
        wrote("findings", findings)
    cols = [c for c in R.RECORD_COLUMNS if c in recs.columns]
    wrote("cells", [render.write_text(out_dir / "cells.csv", render.csv_text(recs[cols]))])
    wrote("records bundle", [write_bundle(recs, out_dir)])
    wrote("failed", [render.write_text(out_dir / "failed.csv", render.csv_text(failed))])
    if plots:
        _plots(built, cells, out_dir, wrote)
    seeds = cells["n"].max() if not cells.empty else 0
    res.counts = {"records": len(recs), "cells": len(cells), "seeds per cell (max)": int(seeds),
                  "failed": len(failed), "rejected (whole runs dir)": len(rejects), "re-runs merged": merged}
    files = [str(p.relative_to(out_dir)) for _, ps in res.groups for p in ps]
    shas = recs["git_sha"].fillna("unknown").value_counts().to_dict() if "git_sha" in recs else {}
    index = render.index_markdown(track, files, res.counts, shas, [(r.path, r.reason) for r in rejects],
                                  tracks=list(tracks))
    wrote("index", [render.write_text(out_dir / "index.md", index)])
    return res


def _findings(recs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """findings.md / findings.csv: the papers' claims tested on these records (none written when no claim has data).

    Notes explaining verdicts are read from ``<out_dir>/findings_notes.yaml`` (hand-written, committed beside it)."""
    from bench.aggregate import findings as F
    from bench.aggregate.claims import CLAIMS

    found = F.evaluate(recs, CLAIMS, F.load_notes(out_dir / "findings_notes.yaml"))
    if all(f.evidence.verdict == F.NO_DATA for f in found):
        return []
    track = str(recs["track"].iloc[0]) if not recs.empty else ""
    return [render.write_text(out_dir / "findings.md", F.markdown(found, track)),
            render.write_text(out_dir / "findings.csv", render.csv_text(F.frame(found)))]


def _plots(built: list[tables.Table], cells: pd.DataFrame, out_dir: Path, wrote: Callable) -> None:
    from bench.aggregate import plots as P  # matplotlib only when plots are asked for

    axes = Axes.of(cells)
    by_name = {t.name: t.frame for t in built}
    hw_cells = cells[R.is_hardware_cell(cells)] if not cells.empty else cells
    for bits, c in tables.by_bits(hw_cells):
        std = by_name.get(f"algo_std_{bits}")
        if std is not None and (p := P.fig5_heatmap(std, out_dir / f"fig5_algo_std_{bits}.png",
                                                    f"Std of top-1 across algorithms, {bits.upper()}", axes)):
            wrote(f"fig5_algo_std_{bits}", [p])
        hwr, ar = by_name.get(f"hw_robustness_{bits}"), by_name.get(f"arch_robustness_{bits}")
        if hwr is not None or ar is not None:
            p = P.fig6_robustness(hwr if hwr is not None else pd.DataFrame(), ar if ar is not None else pd.DataFrame(),
                                  out_dir / f"fig6_robustness_{bits}.png", f"Mean top-1 of algorithms, {bits.upper()}",
                                  axes)
            if p:
                wrote(f"fig6_robustness_{bits}", [p])
        curves = P.training_curves(c, out_dir, bits, axes)
        if curves:
            wrote(f"training curves {bits}", curves, f"{len(curves)} PNG in {out_dir / 'curves'}/")


def aggregate(runs_dir: str | Path = "runs", out: str | Path | None = None, track: str | None = None,
              plots: bool = True, ref_dir: Path | None = REF_DIR, warn: TextIO | None = None,
              log: Callable[[str], None] = print) -> list[TrackResult]:
    """Aggregate ``runs_dir`` into ``<out>/<track>/`` per track (or ``out`` itself for a single track).

    Raises LookupError when there is no record (of ``track``, if given).
    """
    warn = sys.stderr if warn is None else warn
    loaded = load(runs_dir, warn=warn)
    recs = loaded.records
    found = sorted(set(recs["track"].dropna())) if not recs.empty else []
    if not found:
        raise LookupError(f"no result records under {runs_dir}" + (f" ({len(loaded.rejects)} rejected)"
                                                                   if loaded.rejects else ""))
    if track is not None and track not in found:
        raise LookupError(f"no records of track {track!r} under {runs_dir}; tracks found: {', '.join(found)}")
    chosen = [track] if track is not None else found
    results = []
    for t in chosen:
        out_dir = out_dir_for(t, out, len(chosen))
        res = aggregate_track(recs, t, out_dir, plots=plots, rejects=loaded.rejects, merged=loaded.merged,
                              tracks=chosen, ref_dir=ref_dir, log=log)
        c = res.counts
        log(f"aggregated {c['records']} records ({c['cells']} cells, {c['failed']} failed, "
            f"{len(loaded.rejects)} rejected) -> {out_dir}/")
        results.append(res)
    return results
