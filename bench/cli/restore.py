"""``python -m bench restore runs=DIR [results=DIR]``: put the committed records of a results folder back into a runs
folder, so that a regeneration resumes on another machine instead of re-running them."""

from __future__ import annotations

ACCEPTED = ("results", "runs")
USAGE = "usage: python -m bench restore runs=DIR [results=results/fmnist-mini]"
HELP = f"""{USAGE}

Writes every record of a results folder (its cells.csv and records.jsonl.gz, as `python -m bench aggregate` wrote
them) into runs=DIR as a run folder (<runs>/<track>/restored/<config_hash>_<name>/: result.json, metrics.jsonl,
.hydra/overrides.yaml, restored.json). A sweep with runs_dir=DIR then skips those cells (same config_hash), and
`python -m bench aggregate runs=DIR` gives their rows and tables back. Records whose cell is already recorded under
DIR are left as they are; a record that cannot be written back is left out and named. Exit status: 0, or 2 on bad
arguments or an unreadable results folder.

arguments:
  runs=DIR      the runs folder to restore into (required; created if missing)
  results=DIR   the committed results folder (default results/fmnist-mini)

examples:
  python -m bench restore runs=runs/leaderboard
  RUNS=runs/leaderboard bash scripts/regenerate_leaderboard.sh      # then resume the regeneration"""


def parse(argv: list[str]) -> dict[str, str] | str:
    """The arguments with defaults, or the one-line error of the first bad one."""
    from bench.cli.args import key_values

    args = key_values(argv, ACCEPTED)
    if isinstance(args, str):
        return args
    if "runs" not in args:
        return "runs=DIR is required: the runs folder to restore the records into"
    return {"results": "results/fmnist-mini", **args}


def main(argv: list[str]) -> int:
    """Entry of the ``restore`` verb: 0 when done, 2 on bad arguments or an unreadable results folder."""
    from bench.cli.args import fail, help_or_args

    args = help_or_args(argv, HELP, parse)
    if isinstance(args, int):
        return args
    from bench.errors import BenchError
    from bench.restore import restore

    try:
        done = restore(args["results"], args["runs"])
    except BenchError as e:
        return fail(str(e))
    print(f"restore: {len(done.written)} records written into {args['runs']}, {len(done.present)} already there, "
          f"{len(done.skipped)} left out")
    for h, why in done.skipped:
        print(f"  left out {h or '(no config_hash)'}: {why}")
    return 0
