"""FP32 vs INT8 latency with onnxruntime on this CPU (MQBench App. B.3, Table 9 analogue).

For each arch: the FP32 model and its 8-bit QDQ form (a profile's quantizers, calibrated on random data: latency
needs no dataset) are exported to ONNX and timed side by side in one process, batch by batch: the median of
``repeats`` runs after ``warmup`` runs, both sessions interleaved so that machine noise hits them alike. The kernels
onnxruntime actually ran (from its profiler) say whether the INT8 model used integer kernels (``QLinearConv``,
``ConvInteger``, ``MatMulInteger``...) or fell back to float.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.deploy.onnx_export import export_onnx, ort_session, torchscript_export
from bench.models import build_model
from bench.ptq.calibrate import calibrate
from bench.quant.insert import prepare
from bench.quant.profiles import load_profile

INTEGER_KERNELS = ("QLinear", "Integer", "DynamicQuantize")  # substrings of onnxruntime's int8 kernels


def export_fp32(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The FP32 model as ONNX (same exporter, opset and dynamic batch as the QDQ export)."""
    torchscript_export(model, example, path)


def ran_kernels(profile_json: str | Path) -> dict[str, int]:
    """Op types of the nodes onnxruntime executed, with counts per run, from its profiler output."""
    events = json.loads(Path(profile_json).read_text())
    ops: Counter[str] = Counter()
    runs = max(1, sum(1 for e in events if e.get("name") == "model_run"))
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") == "Node" and "op_name" in args and str(e.get("name", "")).endswith("_kernel_time"):
            ops[str(args["op_name"])] += 1
    return {k: v // runs for k, v in sorted(ops.items())}


def time_pair(sessions: dict[str, Any], x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per run of each session on ``x``, runs interleaved."""
    feed = {"input": x.numpy()}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append(1000.0 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def measure_arch(arch: str, *, profile: str = "fbgemm", image_size: int = 224, batch_sizes: tuple[int, ...] = (1, 8),
                 warmup: int = 5, repeats: int = 20, threads: int = 1, num_classes: int = 1000,
                 workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per batch size: FP32 and INT8 median latency (ms), the speed-up and the INT8 kernels that ran."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=num_classes, in_chans=3).eval()
    prof = load_profile(profile)
    gm = prepare(model, prof, w_bits=8, a_bits=8, first_last_bits=prof.first_last_bits)
    calibrate(gm, torch.randn(8, 3, image_size, image_size), 8)
    gm.eval()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        example = torch.randn(1, 3, image_size, image_size)
        export_fp32(model, example, d / "fp32.onnx")
        export_onnx(gm, example, d / "int8.onnx")
        sessions = {"fp32": ort_session(d / "fp32.onnx", threads), "int8": ort_session(d / "int8.onnx", threads)}
        prof_sess = ort_session(d / "int8.onnx", threads, profile_prefix=str(d / "ort_profile"))
        prof_sess.run(None, {"input": example.numpy()})
        kernels = ran_kernels(prof_sess.end_profiling())
        rows = []
        for bs in batch_sizes:
            x = torch.randn(bs, 3, image_size, image_size)
            t = time_pair(sessions, x, warmup, repeats)
            rows.append({
                "arch": arch, "profile": profile, "image_size": image_size, "batch": bs, "threads": threads,
                "fp32_ms": round(t["fp32"], 3), "int8_ms": round(t["int8"], 3),
                "speedup": round(t["fp32"] / t["int8"], 3),
                "int8_kernels": " ".join(f"{k}x{v}" for k, v in kernels.items()),
                "integer_kernels": sum(v for k, v in kernels.items() if any(s in k for s in INTEGER_KERNELS)),
                "repeats": repeats,
            })
    return rows
