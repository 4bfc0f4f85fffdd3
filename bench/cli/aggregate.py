"""``python -m bench aggregate [runs=DIR] [out=DIR] [track=NAME] [plots=true|false]``: records -> tables and plots."""

from __future__ import annotations

ACCEPTED = ("runs", "out", "track", "plots")
USAGE = "usage: python -m bench aggregate [runs=DIR] [out=DIR] [track=NAME] [plots=true|false]"
HELP = f"""{USAGE}

Turns the result records under runs/ (every result.json, with metrics.jsonl beside it) into the benchmark tables
(CSV with mean, std, 95% CI, n, status; Markdown in the paper's layout) and plots (PNG).

arguments:
  runs=DIR      where the records are (default: runs); searched recursively
  out=DIR       output root (default: results). Every track found is written into <out>/<track>/
                (results/fmnist-mini/, results/imagenet/, ...); with a single track (track= given, or only one
                track in runs=) the files go into DIR itself
  track=NAME    only this track (records carry it: fmnist-mini, imagenet, ...); default: every track found
  plots=BOOL    write the PNG figures too (default: true)

written per track: table7_hw_<bits> (accuracy and hardware gap per profile, Avg. HW), table4_academic_<bits>
(with Avg. Arch.), hw_robustness_<bits>, arch_robustness_<bits>, algo_std_<bits> (Fig. 5), best_algo_<bits>
(+ _counts), table5_bnfold_[<hw>_]<bits>, table6_graph_[<hw>_]<bits> (<hw>_ for an override on a hardware
profile), table10_ptq_<bits>, table11_init, deploy_check, onnx_runtime, cells.csv (every record),
records.jsonl.gz (per record its config, curve, quantizer ranges and deployment check, for the site), findings.md
/ findings.csv (the papers' claims tested on the records, bench/aggregate/claims.py), failed.csv,
fig5_algo_std_<bits>.png, fig6_robustness_<bits>.png, curves/<arch>_<hw>_<bits>.png and index.md; with records
of schema 2 or later also the mini track's views: ptq_<bits> (MinMax PTQ per profile, drop from FP32),
ptq_calib_<n>bit (PTQ by calibration), ptq_bn_calib_<n>bit (PTQ before / after BN re-calibration),
qat_<bits>_hw, qat_<bits>_academic, qat_<bits>_academic_<e>ep (QAT with init_top1, wall time, longer training)
and ptq_advanced (RTN, BN re-calibration, CLE, bias correction and the reconstruction methods); <n>bit where
weights and activations share the bit-width, else <bits>. A table without data is not written.
Re-runs of one config keep one record (ok/nc before failed, then the latest); records that differ only in seed
are the seeds of one cell (mean ± std, Student-t 95% CI, a mark where the CI overlaps the next-ranked
algorithm's). Where several cells land in one table slot (e.g. 1- and 3-epoch runs) the table takes a non-smoke
one, then MinMax calibration (QAT tables), the longest training, the most seeds, the latest. Display names and
order come from the records (schema 1 records: bench/aggregate/legacy.py). On track imagenet the paper's numbers
(results/reference/*.csv) are added in brackets. Corrupt result.json files are skipped with a warning.

examples:
  python -m bench aggregate
  python -m bench aggregate runs=runs/leaderboard out=/tmp/agg track=fmnist-mini plots=false"""


def parse(argv: list[str]) -> dict[str, str] | str:
    """``key=value`` arguments as a dict, or the error message of the first bad one."""
    from bench.cli.args import key_values

    args = key_values(argv, ACCEPTED)
    if isinstance(args, str):
        return args
    if "plots" in args and args["plots"].lower() not in ("true", "false", "1", "0", "yes", "no"):
        return f"plots={args['plots']} is not a boolean; accepted: true, false"
    return args


def main(argv: list[str]) -> int:
    """Entry of the ``aggregate`` verb: 0 on success, 1 when there is nothing to aggregate, 2 on bad arguments."""
    from bench.cli.args import fail, help_or_args

    args = help_or_args(argv, HELP, parse)
    if isinstance(args, int):
        return args
    from pathlib import Path

    runs = Path(args.get("runs", "runs"))
    if not runs.is_dir():
        return fail(f"runs={runs} does not exist" if not runs.exists() else f"runs={runs} is not a directory", 2)
    from bench.aggregate import aggregate

    plots = args.get("plots", "true").lower() in ("true", "1", "yes")
    try:
        aggregate(runs, out=args.get("out"), track=args.get("track"), plots=plots)
    except LookupError as e:
        return fail(str(e.args[0]), 1)
    return 0
