"""scripts/imagenet_cost.py: cells counted from the experiment files, images and hours from the recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "imagenet_cost.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_cells_images_and_hours() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import imagenet_cost as C
    finally:
        sys.path.pop(0)
    cells = C.sweep_cells(ROOT / "bench/conf/experiment/table7_hw_imagenet.yaml")
    assert len(cells) == 4 * 6 * 5 and {c["algo"] for c in cells} == {"lsq", "dsq", "pact", "dorefa"}
    assert C.algo_name("ptq_bncalib") == "ptq"
    p = _run("--throughput", "resnet18=1000")
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if "`table6_graph_imagenet`" in line)
    # 12 QAT cells of 100 epochs: 12 x 100 x 1,281,167 images; half resnet18 (1000/s), half mobilenetv2 (500/s)
    images = 12 * 100 * 1_281_167
    hours = (6 * (100 * 1_281_167 + 50_000 / 3) / 1000 + 6 * (100 * 1_281_167 + 50_000 / 3) / 500) / 3600
    assert f"| 12 | 12 | 0 | {images / 1e9:,.2f} G | {hours:,.0f} |" in row


def test_bad_throughput_is_one_line() -> None:
    p = _run("--throughput", "vgg=3")
    assert p.returncode != 0 and "accepted: ARCH=IMAGES_PER_S" in p.stderr and p.stderr.count("\n") == 1
