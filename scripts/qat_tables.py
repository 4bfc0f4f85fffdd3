#!/usr/bin/env python
"""Run the QAT grids of the QAT-algorithms issue on the fmnist-mini track (W4A4, ``train=mini_qat``) and write tables.

Tables (CSV + Markdown in ``results/fmnist-mini/``):
- ``qat_w4a4_hw`` (MQBench Table 7 analogue): every QAT algorithm on every profile where it is deployable
  (QIL / APoT: academic only) on ``resnet18_mini``: top-1, ``init_top1`` (after calibration, before QAT), the hardware
  gap to the academic cell, and the wall time of the cell;
- ``qat_w4a4_academic`` (MQBench Table 4 analogue): the seven algorithms in the academic setting on ``resnet18_mini``
  and ``mobilenetv2_mini``, with FP32, ``init_top1``, top-1 and the gain of QAT over its own initialisation;
- ``qat_w4a4_academic_3ep``: the ``mobilenetv2_mini`` academic cells with ``train.epochs=3`` (900 steps).

Each grid is one Hydra multirun into ``--runs``; cells already recorded there are skipped, so an interrupted run
resumes. ``--tables-only`` rebuilds the tables from the records.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import collect  # noqa: E402
from scripts.ptq_tables import latest, write  # noqa: E402

HWS = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]
UNIFORM = ["lsq", "lsqplus", "pact", "dsq", "dorefa"]
ACADEMIC_ONLY = ["qil", "apot"]
ALGOS = UNIFORM + ACADEMIC_ONLY
GRIDS = {
    "qat_w4a4_hw": [
        ["bits=w4a4", "arch=resnet18_mini", f"algo={','.join(UNIFORM)}", f"hw={','.join(HWS)}"],
        ["bits=w4a4", "arch=resnet18_mini", f"algo={','.join(ACADEMIC_ONLY)}", "hw=academic"],
    ],
    "qat_w4a4_academic": [["bits=w4a4", "arch=mobilenetv2_mini", f"algo={','.join(ALGOS)}", "hw=academic"]],
    # the same mobilenetv2_mini cells with 3x the steps: how much of the gap to FP32 is the mini budget
    "qat_w4a4_academic_3ep": [["bits=w4a4", "arch=mobilenetv2_mini", f"algo={','.join(ALGOS)}", "hw=academic",
                               "train.epochs=3"]],
}


def run_grid(overrides: list[str], runs: Path) -> None:
    cmd = [sys.executable, "-m", "bench", "run", "-m", *overrides, f"runs_dir={runs}", "progress=false"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def tables(runs: Path, out: Path) -> None:
    df = collect(runs)
    if df.empty:
        raise SystemExit(f"no records under {runs}")
    df = latest(df[(df["track"] == "fmnist-mini") & df["algo"].isin(ALGOS) & (df["w_bits"] == 4)
                   & (df["a_bits"] == 4)])
    long = df[df["train_epochs"] == 3]
    df = df[df["train_epochs"] == 1]
    r18 = df[df["arch"] == "resnet18_mini"]
    if not r18.empty:
        rows = []
        for algo in ALGOS:
            acad = r18[(r18["algo"] == algo) & (r18["hw"] == "academic")]["top1"]
            for hw in HWS:
                cell = r18[(r18["algo"] == algo) & (r18["hw"] == hw)]
                if cell.empty:
                    continue
                c = cell.iloc[0]
                gap = None if acad.empty or hw == "academic" else float(acad.iloc[0]) - float(c["top1"])
                rows.append({"algo": algo, "hw": hw, "fp32": c["fp32_top1"], "init_top1": c["init_top1"],
                             "top1": c["top1"], "hw_gap": gap, "wall_s": c["wall_s"]})
        write(pd.DataFrame(rows), out, "qat_w4a4_hw",
              "QAT W4A4 on resnet18_mini per hardware profile (MQBench Table 7 analogue; train=mini_qat), top-1 %")
    acad = df[(df["hw"] == "academic") & df["arch"].isin(["resnet18_mini", "mobilenetv2_mini"])]
    if not acad.empty:
        t = acad[["arch", "algo", "fp32_top1", "init_top1", "top1", "wall_s"]].copy()
        t["qat_gain"] = t["top1"] - t["init_top1"]
        t["drop_from_fp32"] = t["fp32_top1"] - t["top1"]
        t["algo"] = pd.Categorical(t["algo"], ALGOS)
        t = t.sort_values(["arch", "algo"])
        write(t, out, "qat_w4a4_academic",
              "QAT W4A4, academic setting (MQBench Table 4 analogue; train=mini_qat), top-1 %")
    if not long.empty:
        short = acad.set_index(["arch", "algo"])["top1"]
        t = long[["arch", "algo", "fp32_top1", "init_top1", "top1", "wall_s"]].copy()
        t.insert(4, "top1_300_steps", [short.get((a, g)) for a, g in zip(t["arch"], t["algo"], strict=True)])
        t["drop_from_fp32"] = t["fp32_top1"] - t["top1"]
        t["algo"] = pd.Categorical(t["algo"], ALGOS)
        write(t.sort_values(["arch", "algo"]).rename(columns={"top1": "top1_900_steps"}), out,
              "qat_w4a4_academic_3ep", "QAT W4A4, academic, train=mini_qat with train.epochs=3 (900 steps), top-1 %")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "runs" / "qat_tables"))
    p.add_argument("--out", default=str(ROOT / "results" / "fmnist-mini"))
    p.add_argument("--grids", default=",".join(GRIDS), help=f"subset of {','.join(GRIDS)}")
    p.add_argument("--tables-only", action="store_true")
    args = p.parse_args()
    runs = Path(args.runs)
    if not args.tables_only:
        for name in args.grids.split(","):
            for overrides in GRIDS[name]:
                run_grid(overrides, runs)
    tables(runs, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
