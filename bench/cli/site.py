"""``python -m bench site [results=DIR] [runs=DIR] [out=DIR]``: a static site of a results folder."""

from __future__ import annotations

ACCEPTED = ("results", "runs", "out")
USAGE = "usage: python -m bench site [results=results/fmnist-mini] [runs=DIR] [out=site]"
HELP = f"""{USAGE}

Builds a static site of a results folder (what `python -m bench aggregate` wrote): an index (the run's commit,
machine and cost, the findings scorecard when there is one, every table, the figures), one page per table (columns
sort, select boxes keep one arch / profile / algorithm / bit-width, hardware gaps shaded by size, seed spread and 95%
CI, the paper's ImageNet numbers beside ours where results/reference/ has them) and one page per record (its row,
the command that re-runs it, its seeds and its neighbours in the grid; with runs= also its config, training curve,
learned quantizer ranges and deployment check). Plain HTML, CSS and a little JavaScript (DataTables from the
itables package): it works opened from file:// and from any static web server, and requests nothing from another
host. Pages read without JavaScript; sorting and filtering need it.

arguments:
  results=DIR   the results folder (default: results/fmnist-mini); it must hold cells.csv with records
  runs=DIR      the runs folder of those records (default: none; committed results have no runs): cell pages then
                show each record's config, curve, quantizer ranges and deployment check
  out=DIR       where the site goes (default: site); a new or empty folder, or an earlier site (replaced whole)

examples:
  python -m bench site
  python -m bench site results=/tmp/agg runs=runs/leaderboard out=/tmp/site
  make site   # then open site/index.html"""


def parse(argv: list[str]) -> dict[str, str] | str:
    """``key=value`` arguments as a dict, or the error message of the first bad one."""
    from bench.cli.args import key_values

    return key_values(argv, ACCEPTED)


def main(argv: list[str]) -> int:
    """Entry of the ``site`` verb: 0 on success, 2 on a bad argument or results folder (nothing written)."""
    from bench.cli.args import fail, help_or_args

    args = help_or_args(argv, HELP, parse)
    if isinstance(args, int):
        return args
    from bench.errors import BenchError
    from bench.site import build_site

    try:
        build_site(args.get("results", "results/fmnist-mini"), out=args.get("out", "site"), runs=args.get("runs"))
    except BenchError as e:
        return fail(str(e))
    return 0
