#!/usr/bin/env python
"""Run the advanced-PTQ grid of the fmnist-mini track and write its table.

Methods (rows), on the five ``*_mini`` archs at W4A8, W3A8, W2A4 and W4A4, on ``hw=academic`` and ``hw=tensorrt``:
nearest rounding with MinMax and with MSE ranges, + BN re-calibration, + CLE, + CLE and empirical bias correction,
AdaRound, BRECQ, QDrop (all with MSE ranges), Bit-Split and IOSO (per-channel profiles only: the tensorrt column).

Tables (``results/fmnist-mini/``):
- ``ptq_advanced.csv``: one row per cell (hw, arch, bits, method, fp32, init_top1, top1, wall time, reconstruction
  time, the reconstruction preset);
- ``ptq_advanced.md``: per profile, methods x (arch, bits) top-1, then the median wall time per method and arch.

Every cell is a ``python -m bench run -m`` multirun into ``--runs``; recorded cells are skipped, so an interrupted run
resumes. ``--archs`` / ``--bits`` / ``--hws`` / ``--methods`` restrict the grid, ``--extra`` adds overrides that do not
change results (``threads=1`` to run two single-threaded grids side by side on 2 cores); ``--tables-only`` only
rebuilds the tables from the records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.algos import ALGOS  # noqa: E402
from bench.results import collect  # noqa: E402
from scripts.ptq_tables import latest, markdown, run_grid  # noqa: E402

ARCHS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]
BITS = ["w4a8", "w3a8", "w2a4", "w4a4"]
HWS = ["academic", "tensorrt"]
PER_CHANNEL_ONLY = {"bitsplit", "ioso"}
# label -> overrides (row order of the tables)
METHODS: dict[str, list[str]] = {
    "RTN MinMax": ["algo=ptq", "calib=minmax"],
    "RTN MSE": ["algo=ptq", "calib=mse"],
    "+BN re-calib": ["algo=ptq", "calib=mse", "ptq.bn_recalib=true"],
    "+CLE": ["algo=ptq", "calib=mse", "ptq.cle=true"],
    "+CLE +bias corr.": ["algo=ptq", "calib=mse", "ptq.cle=true", "ptq.bias_correction=empirical"],
    "AdaRound": ["algo=adaround", "calib=mse"],
    "BRECQ": ["algo=brecq", "calib=mse"],
    "QDrop": ["algo=qdrop", "calib=mse"],
    "Bit-Split": ["algo=bitsplit", "calib=mse"],
    "IOSO": ["algo=ioso", "calib=mse"],
}


def label(rec: dict) -> str | None:
    """The method row of a record (None: not a cell of this grid)."""
    c = rec["config"]
    algo, ptq, calib = c["algo"]["name"], c["ptq"], (c["calib"]["weight"], c["calib"]["act"])
    if c["quant"]["only"] != "all" or c["quant"]["bypass"] or c["data"]["calib_size"] != 1024:
        return None
    if algo == "ptq":
        flags = (ptq["bn_recalib"], ptq["cle"], ptq["bias_correction"])
        if calib == ("minmax", "minmax") and flags == (False, False, "none"):
            return "RTN MinMax"
        if calib != ("mse", "mse"):
            return None
        return {(False, False, "none"): "RTN MSE", (True, False, "none"): "+BN re-calib",
                (False, True, "none"): "+CLE", (False, True, "empirical"): "+CLE +bias corr."}.get(flags)
    names = {"adaround": "AdaRound", "brecq": "BRECQ", "qdrop": "QDrop", "bitsplit": "Bit-Split", "ioso": "IOSO"}
    if algo not in names or calib != ("mse", "mse") or ptq["cle"] or ptq["bias_correction"] != "none":
        return None
    params = {**ALGOS.get(algo).defaults, **c["algo"].get("params", {})}
    return names[algo] if params == ALGOS.get(algo).defaults else None  # the methods' default parameters only


def run_cells(methods: list[str], archs: list[str], bits: list[str], hws: list[str], runs: Path,
              extra: list[str]) -> None:
    for name in methods:
        algo = METHODS[name][0].removeprefix("algo=")
        hw = [h for h in hws if not (algo in PER_CHANNEL_ONLY and h == "academic")]
        if not hw:
            continue
        run_grid([*METHODS[name], f"hw={','.join(hw)}", f"arch={','.join(archs)}", f"bits={','.join(bits)}",
                  *extra], runs)


def tables(runs: Path, out: Path) -> None:
    df = collect(runs)
    if df.empty:
        raise SystemExit(f"no records under {runs}")
    df = latest(df[df["track"] == "fmnist-mini"]).reset_index(drop=True)
    recs = [json.loads(Path(p).read_text()) for p in df["path"]]
    df["method"] = [label(r) for r in recs]
    df["recon_s"] = [r["extra"].get("recon_s", r["extra"].get("bitsplit_s")) for r in recs]
    df["recon_preset"] = [r["extra"].get("recon", {}).get("preset") for r in recs]
    df["bits"] = "w" + df["w_bits"].astype(str) + "a" + df["a_bits"].astype(str)
    df = df[df["method"].notna() & df["bits"].isin(BITS) & df["arch"].isin(ARCHS) & df["hw"].isin(HWS)]
    if df.empty:
        raise SystemExit(f"no cell of the advanced PTQ grid under {runs}")
    order = {m: i for i, m in enumerate(METHODS)}
    cols = ["hw", "arch", "bits", "method", "fp32_top1", "init_top1", "top1", "wall_s", "recon_s", "recon_preset"]
    long = df[cols].assign(o=df["method"].map(order), a=df["arch"].map(ARCHS.index), b=df["bits"].map(BITS.index))
    long = long.sort_values(["hw", "a", "b", "o"]).drop(columns=["o", "a", "b"])
    out.mkdir(parents=True, exist_ok=True)
    long.to_csv(out / "ptq_advanced.csv", index=False, float_format="%.2f")
    parts = ["# Advanced PTQ on the fmnist-mini track: top-1 % (FP32 in the first row)\n",
             "Nearest rounding (RTN) with MinMax / MSE ranges, BN re-calibration, CLE, bias correction, and the "
             "reconstruction methods with MSE-initialised ranges; reconstruction budget `recon=fashion_mnist` "
             "(see `bench/conf/recon/fashion_mnist.yaml`). Bit-Split and IOSO need per-channel weights (tensorrt only). "
             "Generated by `scripts/ptq_advanced_tables.py` from the records.\n"]
    for hw in HWS:
        sub = long[long["hw"] == hw]
        if sub.empty:
            continue
        pivot = sub.pivot_table(index="method", columns=["arch", "bits"], values="top1", aggfunc="first")
        fp32 = sub.groupby(["arch", "bits"])["fp32_top1"].first()
        pivot.loc["FP32"] = fp32
        rows = ["FP32"] + [m for m in METHODS if m in pivot.index]
        ordered = [(a, b) for a in ARCHS for b in BITS if (a, b) in pivot.columns]
        pivot = pivot.loc[rows, ordered]
        pivot.columns = [f"{a.removesuffix('_mini')} {b}" for a, b in ordered]
        parts.append(f"## hw={hw}\n\n{markdown(pivot.reset_index())}")
    ops = [{"arch": a, "int_ops_M": r["extra"]["ioso_int_ops"] / 1e6, "isg_ops_M": r["extra"]["ioso_isg_ops"] / 1e6,
            "total_M": (r["extra"]["ioso_int_ops"] + r["extra"]["ioso_isg_ops"]) / 1e6,
            "isg_percent": 100 * r["extra"]["ioso_isg_ops_ratio"]}
           for a, m, r in zip(df["arch"], df["method"], recs, strict=True) if m == "IOSO"]
    if ops:
        t = pd.DataFrame(ops).drop_duplicates("arch")
        t = t.assign(o=t["arch"].map(ARCHS.index)).sort_values("o").drop(columns="o")
        parts.append("## IOSO: integer operations per 1x32x32 image without and with ISG (seed 002 Table 5 "
                     f"analogue; 3 groups, 2 shift-adds per output feature of non-depthwise layers)\n\n{markdown(t)}")
    times = long.pivot_table(index="method", columns="arch", values="wall_s", aggfunc="median")
    times = times.loc[[m for m in METHODS if m in times.index], [a for a in ARCHS if a in times.columns]]
    parts.append(f"## Median wall time per cell (s, whole cell incl. calibration and two evaluations; one thread per "
                 f"cell, two cells side by side on the 2 CPU cores)\n\n"
                 f"{markdown(times.reset_index())}")
    (out / "ptq_advanced.md").write_text("\n".join(parts))
    print(f"wrote {out / 'ptq_advanced'}.csv/.md ({len(long)} cells)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "runs" / "ptq_advanced"))
    p.add_argument("--out", default=str(ROOT / "results" / "fmnist-mini"))
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--bits", default=",".join(BITS))
    p.add_argument("--hws", default=",".join(HWS))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated labels of METHODS")
    p.add_argument("--extra", default="", help="overrides that do not change results, e.g. threads=1")
    p.add_argument("--tables-only", action="store_true")
    args = p.parse_args()
    runs = Path(args.runs)
    if not args.tables_only:
        methods = args.methods.split(",")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise SystemExit(f"unknown method {unknown[0]!r}; accepted: {', '.join(METHODS)}")
        run_cells(methods, args.archs.split(","), args.bits.split(","), args.hws.split(","), runs, args.extra.split())
    tables(runs, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
