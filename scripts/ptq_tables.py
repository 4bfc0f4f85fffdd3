#!/usr/bin/env python
"""Run the PTQ grids of the quantization-core issue on the fmnist-mini track and write their tables.

Tables (CSV + Markdown in ``results/fmnist-mini/``):
- ``ptq_w8a8``: ``algo=ptq bits=w8a8`` on every profile x every ``*_mini`` arch, with the drop from FP32;
- ``ptq_calib_8bit`` (MQBench Table 10 analogue): 8 bits on SNPE and FBGEMM, activation calibration MinMax / MSE /
  KLD / Quantile with MinMax weights, plus MSE / MSE;
- ``ptq_bn_calib_4bit`` (MQBench Table 11 analogue): 4 bits on academic and SNPE, five calibration pairs, PTQ accuracy
  (``init_top1``) and accuracy after BN re-calibration (``top1``) on 4096 calibration images, as in App. C.3.

Each grid is one Hydra multirun into ``--runs``; identical cells already recorded there are skipped, so an
interrupted run resumes. ``--tables-only`` rebuilds the tables from the records without running anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import collect  # noqa: E402

ARCHS = "resnet18_mini,resnet50_mini,mobilenetv2_mini,efficientnet_lite0_mini,regnetx_600mf_mini"
HWS = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]
CALIB_PAIRS_11 = [("quantile", "norm"), ("quantile", "meanstd"), ("norm", "norm"), ("mse", "meanstd"),
                  ("minmax", "minmax")]

BN_CALIB_ARCHS = "mobilenetv2_mini,resnet18_mini"  # MQBench Table 11 has MobileNetV2; ResNet-18 for contrast


def grids(archs: str) -> dict[str, list[list[str]]]:
    """The Hydra overrides of each grid, restricted to ``archs`` (comma-separated)."""
    bn_archs = ",".join(a for a in archs.split(",") if a in BN_CALIB_ARCHS.split(","))
    out = {
        "ptq_w8a8": [["algo=ptq", "bits=w8a8", f"hw={','.join(HWS)}", f"arch={archs}"]],
        "ptq_calib_8bit": [
            ["algo=ptq", "bits=w8a8", "hw=snpe,fbgemm", f"arch={archs}", "calib.weight=minmax",
             "calib.act=minmax,mse,kld,quantile"],
            ["algo=ptq", "bits=w8a8", "hw=snpe,fbgemm", f"arch={archs}", "calib.weight=mse", "calib.act=mse"],
        ],
        "ptq_bn_calib_4bit": [
            ["algo=ptq", "bits=w4a4", "hw=academic,snpe", f"arch={bn_archs}", "ptq.bn_recalib=true",
             "data.calib_size=4096", f"calib.act={a}", f"calib.weight={w}"]
            for a, w in CALIB_PAIRS_11
        ] if bn_archs else [],
    }
    return out


GRIDS = grids(ARCHS)


def run_grid(overrides: list[str], runs: Path) -> None:
    cmd = [sys.executable, "-m", "bench", "run", "-m", *overrides, f"runs_dir={runs}", "progress=false"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else (f"{v:.2f}" if isinstance(v, float) else str(v))
                                       for v in row) + " |")
    return "\n".join(lines) + "\n"


def write(df: pd.DataFrame, out: Path, name: str, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{name}.csv", index=False, float_format="%.2f")
    (out / f"{name}.md").write_text(f"# {title}\n\n{markdown(df)}")
    print(f"wrote {out / name}.csv/.md ({len(df)} rows)")


def latest(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"].sort_values("started_at")
    return ok.drop_duplicates("config_hash", keep="last")


def tables(runs: Path, out: Path) -> None:
    df = collect(runs)
    if df.empty:
        raise SystemExit(f"no records under {runs}")
    df = latest(df[df["track"] == "fmnist-mini"])
    cfg = pd.json_normalize(df["path"].map(lambda p: json.loads(Path(p).read_text())["config"]))
    df = df.reset_index(drop=True).assign(calib_size=cfg["data.calib_size"], bn_recalib=cfg["ptq.bn_recalib"],
                                          only=cfg["quant.only"], bypass=cfg["quant.bypass"])
    base = df[(df["calib_size"] == 1024) & (~df["bn_recalib"]) & (df["only"] == "all") & (~df["bypass"])]
    order = ARCHS.split(",")

    w8 = base[(base["w_bits"] == 8) & (base["a_bits"] == 8) & (base["calib_weight"] == "minmax")
              & (base["calib_act"] == "minmax")]
    if not w8.empty:
        t = w8.pivot_table(index="arch", columns="hw", values="top1").reindex(order).reindex(columns=HWS)
        fp = w8.groupby("arch")["fp32_top1"].first().reindex(order)
        t.insert(0, "fp32", fp)
        t["max_drop"] = (fp.values[:, None] - t[HWS].values).max(axis=1)
        write(t.reset_index(), out, "ptq_w8a8", "PTQ W8A8 (MinMax calibration), top-1 % on Fashion-MNIST test")

    t10 = base[(base["w_bits"] == 8) & (base["a_bits"] == 8) & base["hw"].isin(["snpe", "fbgemm"])]
    if not t10.empty:
        t = t10.pivot_table(index=["arch", "calib_act", "calib_weight"], columns="hw", values="top1").reset_index()
        fp = t10.groupby("arch")["fp32_top1"].first()
        t.insert(1, "fp32", t["arch"].map(fp))
        t["arch"] = pd.Categorical(t["arch"], order)
        t = t.sort_values(["arch", "calib_weight", "calib_act"]).rename(columns={"snpe": "snpe_top1",
                                                                                   "fbgemm": "fbgemm_top1"})
        write(t, out, "ptq_calib_8bit", "PTQ 8-bit by calibration method (MQBench Table 10 analogue), top-1 %")

    t11 = df[(df["w_bits"] == 4) & (df["a_bits"] == 4) & df["bn_recalib"] & (df["calib_size"] == 4096)]
    if not t11.empty:
        t = t11[["arch", "fp32_top1", "hw", "calib_act", "calib_weight", "init_top1", "top1"]].rename(
            columns={"hw": "setting", "init_top1": "ptq_top1", "top1": "bn_calib_top1"})
        t = t.sort_values(["arch", "setting", "bn_calib_top1"], ascending=[True, True, False])
        write(t, out, "ptq_bn_calib_4bit",
              "PTQ 4-bit with and without BN re-calibration (MQBench Table 11 analogue), top-1 %")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "runs" / "ptq_tables"))
    p.add_argument("--out", default=str(ROOT / "results" / "fmnist-mini"))
    p.add_argument("--grids", default=",".join(GRIDS), help=f"subset of {','.join(GRIDS)}")
    p.add_argument("--archs", default=ARCHS, help="subset of the *_mini archs to run (tables use every record)")
    p.add_argument("--tables-only", action="store_true")
    args = p.parse_args()
    runs = Path(args.runs)
    if not args.tables_only:
        chosen = grids(args.archs)
        for name in args.grids.split(","):
            for overrides in chosen[name]:
                run_grid(overrides, runs)
    tables(runs, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
