"""GPU readiness: ``scripts/gpu_check.sh`` refuses a machine without CUDA in one line (exit 1, nothing written), and
the QAT step benchmark it runs takes ``--device`` (exercised here on the CPU; on CUDA only on a GPU machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check instead")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "BENCH_CACHE": str(tmp_path / "cache"),
            "PY": sys.executable}


@no_gpu
def test_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False): nothing to check here"]
    assert list(tmp_path.iterdir()) == []


def test_qat_step_benchmark_runs_on_a_device(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "qat_step_speed.py"), "--arch", "tiny", "--batch", "8",
           "--steps", "1", "--rounds", "1", "--algos", "lsq", "--threads", "1", "--device", "cpu", "--no-torch-ao"]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[2:]}
    assert set(rows) == {"fp32", "fp32-control", "lsq/tensorrt"} and float(rows["fp32"][1]) == 1.0


def test_qat_step_benchmark_isolates_each_algorithm(tmp_path):
    # --isolate: one process per algorithm (and torch.ao), each row's ratio against its own process's fp32
    cmd = [sys.executable, str(ROOT / "benchmarks" / "qat_step_speed.py"), "--arch", "tiny", "--batch", "8",
           "--steps", "1", "--rounds", "1", "--algos", "lsq,dorefa", "--threads", "1", "--isolate"]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line.rsplit(maxsplit=4) for line in p.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["lsq/tensorrt", "dorefa/tensorrt", "torch.ao prepare_qat_fx"]
    for _, ms, ratio, control, fp32 in rows:
        assert float(ratio) == pytest.approx(float(ms) / float(fp32), rel=0.05) and float(control) > 0


def test_qat_step_benchmark_names_an_unknown_algorithm(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "qat_step_speed.py"), "--algos", "lsq,brecq", "--isolate"]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip() == (
        "error: --algos: unknown QAT algorithm 'brecq'; accepted: lsq, lsqplus, pact, dsq, dorefa, qil, apot")


@no_gpu
def test_qat_step_benchmark_refuses_cuda_without_a_gpu(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "qat_step_speed.py"), "--device", "cuda"]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip() == (
        "error: --device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
