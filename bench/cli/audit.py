"""``python -m bench audit [n=10] [results=DIR] [runs=DIR] [out=DIR] [seed=N] [kind=all|qat|ptq] [max_wall=S]
[timeout=S]``: re-run committed cells at the current commit and compare them with the committed numbers."""

from __future__ import annotations

ACCEPTED = ("n", "results", "runs", "out", "seed", "kind", "max_wall", "timeout")
KINDS = ("all", "qat", "ptq")
USAGE = ("usage: python -m bench audit [n=10] [results=results/fmnist-mini] [runs=DIR] [out=DIR] [seed=0] "
         "[kind=all|qat|ptq] [max_wall=S] [timeout=S]")
HELP = f"""{USAGE}

Draws n committed records of a results folder at random (seeded), re-runs each exactly as it was launched (its Hydra
overrides and torch thread count, from cells.csv) in a fresh process with an empty cache, at the current commit, and
reports each record's difference from its committed top-1 against its cell's seed spread. A record is within
tolerance when |re-run - committed| <= max(2 x the sample std of its cell's committed seeds, 0.5 points) and its
config_hash is unchanged. Exit status: 0 when every record is within tolerance, 1 otherwise, 2 on bad arguments.

arguments:
  n=N           records to draw (default 10)
  results=DIR   the committed results folder (default results/fmnist-mini); its cells.csv lists the records
  runs=DIR      where the re-runs and their empty caches go (default runs/audit/<UTC time>)
  out=DIR       where audit.md and audit.csv are written (default: runs=DIR)
  seed=N        seed of the draw (default 0)
  kind=K        draw only qat or ptq records (default all)
  max_wall=S    draw only records whose committed wall time is at most S seconds (CI: a one-cell PTQ audit)
  timeout=S     give up on a re-run after S seconds (default: none)

examples:
  python -m bench audit n=10 out=results/fmnist-mini/audit
  python -m bench audit n=1 kind=ptq max_wall=30 out=/tmp/audit      # seconds: what CI runs"""


def parse(argv: list[str]) -> dict[str, object] | str:
    """The arguments with defaults, or the one-line error of the first bad one."""
    from bench.cli.args import key_values

    args = key_values(argv, ACCEPTED)
    if isinstance(args, str):
        return args
    out: dict[str, object] = {"n": 10, "results": "results/fmnist-mini", "seed": 0, "kind": "all",
                              "max_wall": None, "timeout": None, "runs": None, "out": None}
    for key in ("n", "seed"):
        if key in args:
            v = args[key]
            if not v.isdigit() or (key == "n" and int(v) < 1):
                return f"{key}={v} is not {'a positive' if key == 'n' else 'a non-negative'} integer"
            out[key] = int(v)
    for key in ("max_wall", "timeout"):
        if key in args:
            try:
                out[key] = float(args[key])
            except ValueError:
                return f"{key}={args[key]} is not a number of seconds"
            if out[key] <= 0:  # type: ignore[operator]
                return f"{key}={args[key]} must be positive"
    if "kind" in args:
        if args["kind"] not in KINDS:
            return f"unknown kind {args['kind']!r}; accepted: {', '.join(KINDS)}"
        out["kind"] = args["kind"]
    for key in ("results", "runs", "out"):
        if key in args:
            out[key] = args[key]
    return out


def main(argv: list[str]) -> int:
    """Entry of the ``audit`` verb: 0 when every audited record is within tolerance, 1 when one is not, 2 on bad
    arguments."""
    from bench.cli.args import fail, help_or_args

    args = help_or_args(argv, HELP, parse)
    if isinstance(args, int):
        return args
    import platform
    import time
    from pathlib import Path

    from bench import audit as A
    from bench.aggregate.render import csv_text, write_text
    from bench.errors import BenchError
    from bench.results import cpu_model, git_sha

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs = Path(str(args["runs"] or f"runs/audit/{stamp}"))
    out = Path(str(args["out"] or runs))
    try:
        A.read_cells(str(args["results"]))  # a bad results folder is a one-line error before anything is created
        t0 = time.perf_counter()
        outcomes = A.audit(str(args["results"]), int(args["n"]), int(args["seed"]), runs,  # type: ignore[arg-type]
                           kind=str(args["kind"]), max_wall=args["max_wall"],  # type: ignore[arg-type]
                           timeout=args["timeout"])  # type: ignore[arg-type]
    except BenchError as e:
        return fail(str(e))
    meta = {"results": str(args["results"]), "commit": git_sha(), "drawn": f"{len(outcomes)} records, seed "
            f"{args['seed']}, kind {args['kind']}" + (f", max_wall {args['max_wall']:g} s" if args["max_wall"] else ""),
            "machine": f"{platform.machine()}, {_cores()} cores ({cpu_model()})", "cache": "empty per record",
            "wall time": f"{time.perf_counter() - t0:.0f} s",
            "command": "python -m bench audit " + " ".join(argv)}
    write_text(out / "audit.md", A.markdown(outcomes, meta))
    write_text(out / "audit.csv", csv_text(A.frame(outcomes)))
    ok = sum(o.verdict == "within" for o in outcomes)
    print(f"audit: {ok} of {len(outcomes)} records within tolerance -> {out / 'audit.md'}")
    return 0 if ok == len(outcomes) else 1


def _cores() -> int:
    import os

    return os.cpu_count() or 0

