"""The aggregator reads records only: importing it and aggregating old and new records never imports torch or the
registries (bench.algos ...), checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "bench.algos", "bench.models", "bench.data", "bench.quant", "bench.ptq",
         "bench.engine", "bench.deploy", "bench.runner")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_importing_the_aggregator_imports_no_torch(tmp_path: Path) -> None:
    p = _python("import bench.aggregate, sys; assert 'torch' not in sys.modules", ROOT)
    assert p.returncode == 0, p.stderr


def _write(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_aggregating_schema_1_and_2_records_imports_no_torch_nor_registry(tmp_path: Path, rec) -> None:
    runs = tmp_path / "runs"
    described = {"labels": {"algo": "LSQ", "hw": "TVM", "arch": "resnet18_mini", "calib_weight": "MinMax",
                            "calib_act": "MinMax"},
                 "order": {"algo": 10, "hw": 40, "arch": 10, "calib_weight": 10, "calib_act": 10}}
    for i, hw in enumerate(("academic", "tvm", "snpe")):  # schema 1: kinds and classes from the legacy maps
        _write(runs / f"old{i}" / "result.json", rec(algo="pact", hw=hw, top1=70.0 - i))
        _write(runs / f"new{i}" / "result.json",  # schema 2, hand-written as the runner writes it
               rec(algo="lsq", hw=hw, top1=71.0 - i, kind="qat", num_classes=10, **described))
        _write(runs / f"ptq{i}" / "result.json", rec(algo="ptq", hw=hw, w=8, a=8, kind="ptq", num_classes=10))
    code = f"""
        import sys
        from bench.aggregate import aggregate
        aggregate({str(runs)!r}, out={str(tmp_path / 'out')!r}, plots=True, ref_dir=None, log=lambda s: None)
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r}))
        assert not heavy, heavy
        """
    p = _python(code, ROOT)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out"
    assert (out / "table7_hw_w4a4.md").is_file() and (out / "fig6_robustness_w4a4.png").is_file()
    assert (out / "ptq_w8a8.md").is_file()  # the schema-2 records' mini views
