"""What the `imagenet` track's experiments need on a GPU cluster: cells per table from the experiment files, the
images each table pushes through training / reconstruction, and GPU-hours at a stated throughput.

    .venv/bin/python scripts/imagenet_cost.py [--throughput resnet18=800,mobilenetv2=500,...] [--out FILE.md]

Cells: the product of each `bench/conf/experiment/*_imagenet.yaml` sweep (QAT / PTQ by the algorithm registry's kind).
Images per cell: QAT = `train.epochs` (bench/conf/train/imagenet_qat.yaml) x 1,281,167 training images; PTQ =
`recon.iters` x `recon.batch_size` (bench/conf/recon/imagenet.yaml) for the reconstruction methods (every block
reconstructs once, so over all blocks about one whole-model forward + backward per iteration), 0 for calibration-only
cells; every cell also evaluates the 50,000 validation images (counted at 1/3 of a training image: forward only).
GPU-hours = images / the arch's QAT training throughput on one GPU. The default throughputs are ASSUMPTIONS (no GPU was
available to measure them; roughly an A100 in fp32/TF32 with fake quantization), not measurements: measure yours with
`bash scripts/gpu_check.sh` (its QAT step benchmark on CUDA) and pass them with --throughput; the hours scale linearly.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "bench" / "conf" / "experiment"
TRAIN_IMAGES, VAL_IMAGES = 1_281_167, 50_000
DEFAULT_ARCH = "resnet18"
# images/s of 4-bit QAT training on one GPU: assumptions (see the docstring), to be replaced by measured values
THROUGHPUT = {"resnet18": 800.0, "resnet50": 300.0, "mobilenetv2": 500.0, "efficientnet_lite0": 450.0,
              "regnetx_600mf": 600.0}


def sweep_cells(path: Path) -> list[dict[str, str]]:
    """Every cell of an experiment file: the product of its sweeper params (one empty cell when it sweeps none)."""
    doc = yaml.safe_load(path.read_text()) or {}
    params = ((doc.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    keys = list(params)
    lists = [str(params[k]).split(",") for k in keys]
    fixed = {}
    for d in doc.get("defaults") or []:
        if isinstance(d, dict):
            for k, v in d.items():
                fixed[k.replace("override /", "")] = str(v)
    return [{**fixed, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*lists)]


def algo_name(option: str) -> str:
    """The algorithm an ``algo=`` option runs (``ptq_bncalib`` is ``ptq`` with BN re-calibration)."""
    doc = yaml.safe_load((ROOT / "bench/conf/algo" / f"{option}.yaml").read_text()) or {}
    return str(doc.get("name") or (doc.get("algo") or {}).get("name") or option)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--throughput", default="", help="arch=images/s,... (QAT training on one GPU)")
    ap.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = ap.parse_args()
    from bench.algos import ALGOS

    speed = dict(THROUGHPUT)
    for item in filter(None, args.throughput.split(",")):
        arch, _, value = item.partition("=")
        if arch not in speed or not value.replace(".", "", 1).isdigit() or float(value) <= 0:
            raise SystemExit(f"error: --throughput {item!r}; accepted: ARCH=IMAGES_PER_S with ARCH one of "
                             f"{', '.join(speed)}")
        speed[arch] = float(value)
    train = yaml.safe_load((ROOT / "bench/conf/train/imagenet_qat.yaml").read_text())
    recon = yaml.safe_load((ROOT / "bench/conf/recon/imagenet.yaml").read_text())
    config = yaml.safe_load((ROOT / "bench/conf/config.yaml").read_text())
    default_algo = next(d["algo"] for d in config["defaults"] if isinstance(d, dict) and "algo" in d)
    rows, total_h, total_cells = [], 0.0, 0
    for path in sorted(EXPERIMENTS.glob("*_imagenet.yaml")):
        qat = ptq = 0
        hours = images = 0.0
        for cell in sweep_cells(path):
            arch = cell.get("arch", DEFAULT_ARCH)
            algo = ALGOS.get(algo_name(cell.get("algo", default_algo)))
            if algo.kind == "qat":
                qat += 1
                n = train["epochs"] * TRAIN_IMAGES
            else:
                ptq += 1
                n = recon["iters"] * recon["batch_size"] if getattr(algo, "uses_recon", False) else 0
            images += n
            hours += (n + VAL_IMAGES / 3) / speed[arch] / 3600
        cells = qat + ptq
        total_h += hours
        total_cells += cells
        rows.append((path.stem, cells, qat, ptq, images, hours))
    lines = ["| experiment | cells | QAT | PTQ | training / reconstruction images | GPU-hours | per cell |",
             "|---|---|---|---|---|---|---|"]
    for stem, n, q, p, im, h in rows:
        lines.append(f"| `{stem}` | {n} | {q} | {p} | {im / 1e9:,.2f} G | {h:,.0f} | {h / n:,.1f} |")
    lines.append(f"| **all** | **{total_cells}** | | | | **{total_h:,.0f}** ({total_h / 24 / 365:.2f} GPU-years) | |")
    lines += ["", "GPU-hours at these QAT training throughputs (images/s on one GPU; assumed, not measured): "
              + ", ".join(f"{a} {v:g}" for a, v in speed.items()) + "."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not math.isfinite(total_h):
        raise SystemExit("non-finite estimate")


if __name__ == "__main__":
    main()
