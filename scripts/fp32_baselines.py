#!/usr/bin/env python
"""Train (or load) the FP32 baselines of the five ``*_mini`` archs and write results/fmnist-mini/fp32_baselines.csv.

Each arch runs as its own ``python -m bench pretrain arch=X`` process (so peak memory is per arch). Training time is
the baseline's own measured training wall time (kept in the cache entry, so a cached baseline reports the time it
took when it was trained). Usage: ``python scripts/fp32_baselines.py [--out results/fmnist-mini/fp32_baselines.csv]
[extra overrides ...]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCHS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "results" / "fmnist-mini" / "fp32_baselines.csv"))
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides passed to every pretrain")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for arch in args.archs.split(","):
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "bench", "pretrain", f"arch={arch}", f"runs_dir={runs}", "progress=false",
                   *args.overrides]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
            summary = json.loads(max(Path(runs).rglob("baseline.json"), key=os.path.getmtime).read_text())
            rows.append(
                {
                    "arch": arch,
                    "params": summary["params"],
                    "epochs": summary["epochs"],
                    "top1": round(summary["top1"], 2),
                    "top5": round(summary["top5"], 2),
                    "train_s": round(summary["train_s"], 1),
                    "process_wall_s": round(time.perf_counter() - t0, 1),
                    "peak_rss_mb": summary["peak_rss_mb"],
                    "source": summary["source"],
                    "data_fingerprint": summary["data_fingerprint"][:16],
                }
            )
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"wrote {out} (commit {sha.strip()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
