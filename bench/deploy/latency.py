"""FP32 vs INT8 latency with onnxruntime on this CPU, per hardware profile (MQBench Table 9, extended to every
profile), next to onnxruntime's own quantization of the same model.

For each arch: the FP32 model exported to ONNX and pre-processed by onnxruntime (``quant_pre_process``: the graph
the reference starts from, timed as the FP32 column); onnxruntime's own ``quantize_static`` of it (the reference,
:mod:`bench.deploy.ort_reference`); and each profile's 8-bit QDQ export (the profile's quantizers calibrated on random
data: latency needs no dataset; :mod:`bench.deploy.ort_graph` rewrites it exactly for onnxruntime's integer
kernels). All sessions get onnxruntime's full graph optimisation and are timed side by side in one process, runs
interleaved so that machine noise hits them alike: the median of ``repeats`` runs after ``warmup`` runs. onnxruntime's
profiler says which kernels ran and how long each op type took: integer kernels (``QLinearConv``...) or float ones
(``Conv``, ``FusedConv``, ``Gemm``); a profile slower than the reference gets a note naming the kernel and the reason
its grid gives.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from bench.config import CONF_DIR
from bench.deploy.onnx_export import ExportError, export_onnx, ort_session, ort_variant, torchscript_export
from bench.deploy.ort_reference import REFERENCE_GRID, preprocess, quantize_reference
from bench.models import build_model
from bench.ptq.calibrate import calibrate
from bench.quant.insert import prepare
from bench.quant.profiles import HardwareProfile, load_profile, profile_names

INTEGER_KERNELS = ("QLinear", "Integer", "DynamicQuantize", "QGemm")  # substrings of onnxruntime's int8 kernels
FLOAT_KERNELS = ("Conv", "FusedConv", "Gemm", "MatMul")  # float compute: a layer that did not become an integer kernel
GRAPH_FLOAT = {1: "graph 1 quantizes only the inputs of layers with weights",
               2: "graph 2 leaves a residual add's main-branch output unquantized (fused into the conv on TensorRT)"}


def exportable_profiles() -> list[str]:
    """The hardware-target profiles (8-bit QDQ ONNX holds them), in table order."""
    def order(name: str) -> int:
        return int(OmegaConf.load(CONF_DIR / "hw" / f"{name}.yaml").get("order", 1000))

    return sorted((n for n in profile_names() if load_profile(n).hardware_target), key=lambda n: (order(n), n))


def export_fp32(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The FP32 model as ONNX (same exporter, opset and dynamic batch as the QDQ export)."""
    torchscript_export(model, example, path)


def grid(p: HardwareProfile) -> str:
    """A profile's 8-bit grid in the reference's words, e.g. ``a u8 asym per-tensor, w s8 sym per-channel``."""
    def one(spec: Any, signed: bool | None) -> str:
        sign = "s8" if signed else "u8"
        return f"{sign} {'sym' if spec.symmetric else 'asym'} {'per-channel' if spec.per_channel else 'per-tensor'}" \
            + (" pot" if spec.pot_scale else "")

    return f"a {one(p.act, p.act.signed is not False)}, w {one(p.weight, p.weight.signed)}"


def kernel_times(profile_json: str | Path) -> dict[str, tuple[float, int]]:
    """Per op type onnxruntime executed: (milliseconds per run, nodes per run), from its profiler output."""
    events = json.loads(Path(profile_json).read_text())
    runs = max(1, sum(1 for e in events if e.get("name") == "model_run"))
    ms: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") == "Node" and "op_name" in args and str(e.get("name", "")).endswith("_kernel_time"):
            ms[str(args["op_name"])] += float(e.get("dur", 0)) / 1000.0
            count[str(args["op_name"])] += 1
    return {k: (ms[k] / runs, count[k] // runs) for k in sorted(ms, key=lambda k: -ms[k])}


def _is_integer(op: str) -> bool:
    return any(s in op for s in INTEGER_KERNELS)


def diagnose(p: HardwareProfile, kernels: dict[str, tuple[float, int]], ref: dict[str, tuple[float, int]]) -> str:
    """Why a profile's INT8 model is slower than the reference, from its grid and the kernels that ran (milliseconds
    per op type from onnxruntime's profiler, which a busy machine inflates: only gaps over 20% count)."""
    total = sum(v[0] for v in kernels.values())
    reasons = []
    qconv, ref_qconv = kernels.get("QLinearConv", (0.0, 0))[0], ref.get("QLinearConv", (0.0, 0))[0]
    if not p.weight.symmetric and qconv > 1.2 * ref_qconv:
        what = "per-channel weight zero points" if p.weight.per_channel else "a weight zero point != 0"
        reasons.append(f"QLinearConv {qconv:.2f} ms against the reference's {ref_qconv:.2f} ms: asymmetric weights "
                       f"({what}) take onnxruntime's slower integer kernels"
                       + (" (no fast depthwise kernel for them)" if p.weight.per_channel else ""))
    floats = {k: v for k, v in kernels.items() if k in FLOAT_KERNELS}
    float_ms, float_n = sum(v[0] for v in floats.values()), sum(v[1] for v in floats.values())
    ref_float_ms = sum(v[0] for k, v in ref.items() if k in FLOAT_KERNELS)
    if float_ms > ref_float_ms + 0.1 * total:
        why = GRAPH_FLOAT.get(p.graph, "their outputs are not quantized")
        reasons.append(f"{float_n} layers in float ({float_ms:.2f} ms): {why}")
    clip = kernels.get("Clip", (0.0, 0))
    if p.act.signed and clip[1]:
        reasons.append(f"{clip[1]} Clips on codes ({clip[0]:.2f} ms, {100 * clip[0] / max(total, 1e-9):.0f}% of the "
                       f"kernel time): a ReLU before a signed grid stays a clamp of the codes")
    if not reasons:
        return "no kernel over 20% slower than the reference's: timing noise or many small ones"
    return "; ".join(reasons)


def time_all(sessions: dict[str, Any], x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
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


def _profiled(path: Path, x: torch.Tensor, threads: int, prefix: Path) -> dict[str, tuple[float, int]]:
    sess = ort_session(path, threads, profile_prefix=str(prefix))
    for _ in range(2):
        sess.run(None, {"input": x.numpy()})
    return kernel_times(sess.end_profiling())


def _export_profile(model: nn.Module, name: str, image_size: int, example: torch.Tensor, path: Path) -> str | None:
    """Export ``model`` quantized with profile ``name`` at 8 bits to ``path``; the refusal, if it cannot be."""
    prof = load_profile(name)
    gm = prepare(model, prof, w_bits=8, a_bits=8, first_last_bits=prof.first_last_bits)
    calibrate(gm, torch.randn(8, 3, image_size, image_size), 8)
    try:
        export_onnx(gm.eval(), example, path)
    except ExportError as e:
        return str(e)
    return None


def measure_arch(arch: str, *, profiles: tuple[str, ...] | None = None, reference: bool = True, plain: bool = False,
                 image_size: int = 224, batch_sizes: tuple[int, ...] = (1, 8), warmup: int = 5, repeats: int = 20,
                 threads: int = 1, num_classes: int = 1000,
                 workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per batch size and model (``fp32``, ``onnxruntime`` (the reference), each profile): median latency
    (ms), speed-up over FP32, the speed-up relative to the reference's, the kernels that ran and, for a profile
    slower than the reference, why. A profile runs as its onnxruntime variant (:func:`ort_variant`); ``plain`` adds
    the portable QDQ export of each profile as it is (model ``<profile>/qdq``), timed in the same run."""
    names = list(profiles) if profiles is not None else exportable_profiles()
    torch.manual_seed(0)
    model = build_model(arch, num_classes=num_classes, in_chans=3).eval()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        example = torch.randn(1, 3, image_size, image_size)
        export_fp32(model, example, d / "raw.onnx")
        preprocess(d / "raw.onnx", d / "fp32.onnx")
        paths = {"fp32": d / "fp32.onnx"}
        grids = {"fp32": "float32"}
        refused: dict[str, str] = {}
        if reference:
            quantize_reference(d / "fp32.onnx", d / "onnxruntime.onnx", image_size)
            paths["onnxruntime"], grids["onnxruntime"] = d / "onnxruntime.onnx", REFERENCE_GRID
        for name in names:
            why = _export_profile(model, name, image_size, example, d / f"{name}.onnx")
            grids[name] = grid(load_profile(name))
            if why is not None:
                refused[name] = why
                continue
            paths[name] = ort_variant(d / f"{name}.onnx")
            if plain:
                paths[f"{name}/qdq"], grids[f"{name}/qdq"] = d / f"{name}.onnx", grids[name]
        sessions = {k: ort_session(p, threads) for k, p in paths.items()}
        for bs in batch_sizes:
            x = torch.randn(bs, 3, image_size, image_size)
            t = time_all(sessions, x, warmup, repeats)
            kernels = {k: _profiled(p, x, threads, d / f"prof_{k.replace('/', '_')}_{bs}") for k, p in paths.items()}
            ref_speedup = t["fp32"] / t["onnxruntime"] if reference else None
            for k in [*paths, *refused]:
                row: dict[str, Any] = {"arch": arch, "image_size": image_size, "batch": bs, "threads": threads,
                                       "model": k, "grid": grids[k], "repeats": repeats}
                if k in refused:
                    rows.append({**row, "ms": None, "speedup": None, "vs_reference": None, "integer_kernels": 0,
                                 "float_ms": None, "kernels": "", "note": refused[k]})
                    continue
                kern = kernels[k]
                speedup = t["fp32"] / t[k]
                vs_ref = speedup / ref_speedup if ref_speedup else None
                note = ""
                if k not in ("fp32", "onnxruntime") and vs_ref is not None and vs_ref < 1.0:
                    note = diagnose(load_profile(k.split("/")[0]), kern, kernels["onnxruntime"])
                rows.append({**row, "ms": round(t[k], 3), "speedup": round(speedup, 3),
                             "vs_reference": None if vs_ref is None else round(vs_ref, 3),
                             "integer_kernels": sum(n for op, (_, n) in kern.items() if _is_integer(op)),
                             "float_ms": round(sum(ms for op, (ms, _) in kern.items() if op in FLOAT_KERNELS), 3),
                             "kernels": " ".join(f"{op}x{n}:{ms:.2f}ms" for op, (ms, n) in list(kern.items())[:4]),
                             "note": note})
    return rows


def speed_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per arch and batch, the speed-up over FP32 of the reference and of every profile, best in bold."""
    models = list(dict.fromkeys(r["model"] for r in rows if r["model"] != "fp32"))
    head = "| arch | px | batch | FP32 ms | " + " | ".join(models) + " | best profile |"
    lines = [head, "|" + "---|" * (len(models) + 5)]
    keys = list(dict.fromkeys((r["arch"], r["image_size"], r["batch"]) for r in rows))
    for arch, px, bs in keys:
        by = {r["model"]: r for r in rows if (r["arch"], r["image_size"], r["batch"]) == (arch, px, bs)}
        prof = {m: by[m]["speedup"] for m in models if m != "onnxruntime" and "/" not in m and m in by
                and by[m]["speedup"]}
        best = max(prof, key=lambda m: prof[m]) if prof else "-"
        cells = []
        for m in models:
            s = by.get(m, {}).get("speedup")
            cells.append("-" if s is None else (f"**{s:.2f}x**" if m == best else f"{s:.2f}x"))
        fp32 = by.get("fp32", {}).get("ms")
        lines.append(f"| {arch} | {px} | {bs} | {fp32 if fp32 is not None else '-'} | " + " | ".join(cells)
                     + f" | {best} |")
    return "\n".join(lines) + "\n"
