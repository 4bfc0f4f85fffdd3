"""The audit: re-run committed cells at the current commit, from a clean cache, and compare with the committed numbers.

The committed ``results/<track>/cells.csv`` holds, per record, its ``config_hash``, top-1, seed, the Hydra overrides it
was launched with and its torch thread count. :func:`draw` picks cells at random (seeded), :func:`rerun` runs one
exactly as it ran (``python -m bench run <overrides> threads=<n>``, in a fresh process, with an empty cache) and
:func:`compare` puts the new top-1 next to the committed one: a cell is within tolerance when
``|new - committed| <= max(2 * std of the cell's committed seeds, 0.5)`` and its config_hash is unchanged.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.results import cpu_of

MIN_TOLERANCE = 0.5  # points: below this a seed spread is no measure of noise (PTQ cells often have std 0)
SPREAD_FACTOR = 2.0
# overrides that say where and how a cell ran, not what it computes (bench.config.NON_RESULT_KEYS and Hydra's own)
RUN_ONLY = ("runs_dir", "cache_dir", "progress", "threads", "skip_existing", "hydra.", "hydra/", "data.num_workers")
COLUMNS = ("config_hash", "cell_id", "seed", "status", "top1", "overrides", "torch_threads", "kind", "wall_s")


@dataclass
class Outcome:
    """One audited record: the committed and the re-run numbers, and whether they agree."""

    config_hash: str
    command: str
    committed: float
    tolerance: float
    spread: float
    seeds: int
    new: float = math.nan
    status: str = ""  # the re-run's status (ok / nc / failed)
    new_hash: str = ""
    wall_s: float = math.nan
    verdict: str = ""  # within / outside / config changed / failed
    detail: str = ""
    committed_cpu: str = ""  # where the committed record ran ("" when it predates the CPU in the launch info)
    new_cpu: str = ""


def read_cells(results: str | Path) -> pd.DataFrame:
    """The committed records of ``results`` (its cells.csv); BenchError when it is missing or lacks the audit's
    columns."""
    path = Path(results) / "cells.csv"
    if not Path(results).is_dir():
        raise BenchError(f"results={results} is not a directory; accepted: a results folder with a cells.csv "
                         "(e.g. results/fmnist-mini)")
    if not path.is_file():
        raise BenchError(f"results={results} has no cells.csv; accepted: a folder written by `python -m bench "
                         "aggregate`")
    cells = pd.read_csv(path, dtype={"config_hash": str, "cell_id": str, "overrides": str})
    missing = [c for c in COLUMNS if c not in cells.columns]
    if missing:
        raise BenchError(f"{path} lacks the column(s) {', '.join(missing)} that the audit needs (written by "
                         "`python -m bench aggregate` since the audit exists); re-aggregate the records")
    return cells


def spread_of(cells: pd.DataFrame) -> pd.Series:
    """Per ``cell_id``: the sample std of its committed seeds' top-1 (NaN for a single seed)."""
    live = cells[cells["status"].isin(["ok", "nc"])]
    return live.groupby("cell_id")["top1"].std(ddof=1)


def candidates(cells: pd.DataFrame, kind: str = "all", max_wall: float | None = None) -> pd.DataFrame:
    """The records that can be audited: ok or nc, with their launch overrides, of ``kind`` (qat / ptq / all) and at
    most ``max_wall`` seconds of committed wall time, sorted by config_hash (the draw's order)."""
    c = cells[cells["status"].isin(["ok", "nc"]) & cells["overrides"].notna() & (cells["overrides"] != "")]
    if kind != "all":
        c = c[c["kind"] == kind]
    if max_wall is not None:
        c = c[pd.to_numeric(c["wall_s"], errors="coerce") <= max_wall]
    return c.sort_values("config_hash").reset_index(drop=True)


def draw(pool: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` records drawn without replacement by ``random.Random(seed)`` (all of them when the pool is smaller)."""
    idx = random.Random(seed).sample(range(len(pool)), min(n, len(pool)))
    return pool.iloc[idx].reset_index(drop=True)


def command(row: Any) -> list[str]:
    """The overrides that re-run a committed record: its launch overrides minus where/how it ran, plus its thread
    count (results depend on it; it is not part of config_hash)."""
    overrides = [o for o in json.loads(row["overrides"]) if not o.startswith(RUN_ONLY)]
    threads = row["torch_threads"]
    if threads is not None and not (isinstance(threads, float) and math.isnan(threads)):
        overrides.append(f"threads={int(threads)}")
    return overrides


def tolerance(spread: float) -> float:
    """max(2 std of the committed seeds, 0.5) points (0.5 where there is one seed)."""
    return max(SPREAD_FACTOR * spread, MIN_TOLERANCE) if math.isfinite(spread) else MIN_TOLERANCE


def rerun(overrides: list[str], runs_dir: Path, cache_dir: Path, python: str = sys.executable,
          timeout: float | None = None) -> tuple[dict[str, Any] | None, float, str]:
    """Run one cell in a fresh process with its own runs and cache dirs; returns (record or None, wall s, the
    last lines of its output)."""
    cmd = [python, "-m", "bench", "run", *overrides, f"runs_dir={runs_dir}", f"cache_dir={cache_dir}",
           "progress=false"]
    env = {**os.environ, "BENCH_CACHE": str(cache_dir)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        out = (proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"timed out after {timeout} s"
    wall = time.perf_counter() - t0
    found = sorted(runs_dir.rglob("result.json"), key=lambda p: p.stat().st_mtime)
    rec = json.loads(found[-1].read_text()) if found else None
    return rec, wall, "\n".join(out.strip().splitlines()[-3:])


def compare(o: Outcome, rec: dict[str, Any] | None, log_tail: str) -> Outcome:
    """Fill the re-run's numbers and the verdict into ``o``."""
    if rec is None or rec.get("status") == "failed":
        o.verdict, o.status = "failed", (rec or {}).get("status", "failed")
        o.detail = ((rec or {}).get("error") or log_tail or "no record written")[:300]
        return o
    o.status, o.new_hash = str(rec.get("status")), str(rec.get("config_hash"))
    o.new_cpu = cpu_of(rec)
    top1 = rec.get("top1")
    o.new = float(top1) if isinstance(top1, int | float) else math.nan
    if o.new_hash != o.config_hash:
        o.verdict = "config changed"
        o.detail = f"config_hash {o.config_hash} -> {o.new_hash}: the cell's config is not the committed one"
    elif (math.isfinite(o.new) and math.isfinite(o.committed) and abs(o.new - o.committed) <= o.tolerance) or (
            not math.isfinite(o.new) and not math.isfinite(o.committed)):
        o.verdict = "within"
    else:
        o.verdict = "outside"
        o.detail = cpu_note(o)
    return o


def cpu_note(o: Outcome) -> str:
    """What the CPUs say about a moved number: float reduction order (the vector ISA torch dispatches to) differs
    between CPUs, and low-bit QAT amplifies it over its steps."""
    if not o.committed_cpu:
        return (f"the committed record does not say its CPU (re-run on {o.new_cpu or 'an unrecorded CPU'}); "
                "a different CPU is a possible cause")
    if o.new_cpu and o.new_cpu != o.committed_cpu:
        return (f"committed on {o.committed_cpu}, re-run on {o.new_cpu}: float reduction order differs between "
                "these CPUs")
    return f"same CPU ({o.committed_cpu}): the cell does not reproduce on one machine"


def audit(results: str | Path, n: int, seed: int, runs_dir: Path, kind: str = "all", max_wall: float | None = None,
          timeout: float | None = None, log: Callable[[str], None] = print) -> list[Outcome]:
    """Draw ``n`` committed records of ``results`` and re-run each from an empty cache under ``runs_dir``."""
    cells = read_cells(results)
    pool = candidates(cells, kind, max_wall)
    if pool.empty:
        raise BenchError(f"no committed record of {results}/cells.csv can be audited with kind={kind}"
                         + (f" max_wall={max_wall:g}" if max_wall is not None else "")
                         + "; accepted: a results folder whose records are ok or nc and carry their overrides")
    spreads, counts = spread_of(cells), cells[cells["status"].isin(["ok", "nc"])].groupby("cell_id").size()
    picked = draw(pool, n, seed)
    out = []
    for i, row in picked.iterrows():
        overrides = command(row)
        spread = float(spreads.get(row["cell_id"], math.nan))
        o = Outcome(str(row["config_hash"]), "python -m bench run " + " ".join(overrides), float(row["top1"]),
                    tolerance(spread), spread, int(counts.get(row["cell_id"], 1)),
                    committed_cpu=_text(row.get("cpu")))
        log(f"[{i + 1}/{len(picked)}] {o.command}")
        work = runs_dir / f"{i:03d}_{o.config_hash}"
        rec, wall, tail = rerun(overrides, work / "runs", work / "cache", timeout=timeout)
        o.wall_s = wall
        compare(o, rec, tail)
        log(f"    committed {o.committed:.2f}, re-run {o.new:.2f} ({o.verdict}; tolerance {o.tolerance:.2f}, "
            f"{wall:.0f} s)")
        out.append(o)
    return out


def frame(outcomes: list[Outcome]) -> pd.DataFrame:
    """audit.csv: one row per audited record."""
    return pd.DataFrame([{
        "config_hash": o.config_hash, "command": o.command, "committed_top1": o.committed, "rerun_top1": o.new,
        "diff": o.new - o.committed, "seeds": o.seeds, "seed_std": o.spread, "tolerance": o.tolerance,
        "rerun_status": o.status, "wall_s": round(o.wall_s, 1), "verdict": o.verdict, "detail": o.detail,
        "committed_cpu": o.committed_cpu, "rerun_cpu": o.new_cpu,
    } for o in outcomes])


def _text(x: Any) -> str:
    """A cells.csv cell as text ("" for a missing value: older cells.csv files have no ``cpu`` column)."""
    return "" if pd.isna(x) else str(x)


def markdown(outcomes: list[Outcome], meta: dict[str, str]) -> str:
    """audit.md: what was run, where, and each record's committed vs re-run top-1."""
    bad = [o for o in outcomes if o.verdict != "within"]
    lines = ["# Audit: committed cells re-run at the current commit", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- rule: a record is within tolerance when |re-run - committed| <= max({SPREAD_FACTOR:g} x the sample "
              f"std of its cell's committed seeds, {MIN_TOLERANCE:g} points) and its config_hash is unchanged",
              f"- result: **{len(outcomes) - len(bad)} of {len(outcomes)} within tolerance**", "",
              "| # | command | committed | re-run | diff | seeds (std) | tolerance | wall s | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, o in enumerate(outcomes, 1):
        std = f"{o.spread:.2f}" if math.isfinite(o.spread) else "-"
        diff = f"{o.new - o.committed:+.2f}" if math.isfinite(o.new - o.committed) else "-"
        lines.append(f"| {i} | `{o.command}` | {o.committed:.2f} | {o.new:.2f} | {diff} | {o.seeds} ({std}) | "
                     f"{o.tolerance:.2f} | {o.wall_s:.0f} | {o.verdict} |")
    for o in bad:
        lines += ["", f"- `{o.config_hash}` {o.verdict}: {o.detail or 'the re-run top-1 moved beyond tolerance'}"]
    return "\n".join(lines) + "\n"
