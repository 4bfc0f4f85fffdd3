"""ONNX export of a quantized model with QuantizeLinear / DequantizeLinear pairs (the QDQ format onnxruntime and
TensorRT read), plus the deployment parameters of every quantizer as JSON.

:func:`export_form` turns a prepared, calibrated model into plain modules: BN folded (``convert_folded``), every
activation quantizer (and average-pooling re-quantizer) a :class:`QDQ` with its scale / zero point, every weight
replaced by the grid values the fake-quant model computes with, behind a per-channel or per-tensor :class:`QDQ`.
The TorchScript exporter writes each ``QDQ`` as QuantizeLinear + DequantizeLinear (per-channel with ``axis`` from
opset 13); onnxruntime fuses QDQ around conv / matmul into integer kernels where it can.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from bench.engine import distributed
from bench.errors import BenchError
from bench.quant.insert import TiedRequant, convert_folded
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize
from bench.results import write_atomic

OPSET = 13
ONNX_RANGES = ((-128, 127), (0, 255))  # int8 / uint8: what QuantizeLinear holds at opset 13


class ExportError(BenchError):
    """A model that cannot be written as an 8-bit QDQ ONNX graph (named in the one-line message)."""


class QDQ(nn.Module):
    """Fixed fake quantization written by the ONNX exporter as QuantizeLinear + DequantizeLinear."""

    def __init__(self, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, ch_axis: int | None) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().float().reshape(-1).clone())
        self.register_buffer("zero_point", zero_point.detach().to(torch.int32).reshape(-1).clone())
        self.qmin, self.qmax, self.ch_axis = qmin, qmax, ch_axis
        # per tensor: Python numbers, so the exporter writes constants (no tensor -> float conversion in the trace)
        self.s, self.z = float(self.scale[0]), int(self.zero_point[0])

    def forward(self, x: Tensor) -> Tensor:
        if self.ch_axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.s, self.z, self.qmin, self.qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.ch_axis, self.qmin,
                                                      self.qmax)


def export_refusal(bn_fold: int, bits: dict[str, int | None]) -> str | None:
    """Why a cell with BN-folding strategy ``bn_fold`` and these bit-widths (``w`` / ``a`` / ``first_last``; None:
    the cell's) cannot be exported, known before any work; None when it can."""
    if bn_fold == -1:
        return "BN kept in float (bn_fold=-1) is not a deployable graph; accepted: quant.bn_fold=0..4"
    wrong = {k: b for k, b in bits.items() if b is not None and b != 8}
    if wrong:
        given = ", ".join(f"{k}={b}" for k, b in wrong.items())
        return f"ONNX QDQ at opset {OPSET} holds int8 / uint8 only ({given}); accepted: bits=w8a8"
    return None


def _qdq(fq: FakeQuantize, name: str) -> QDQ:
    qmin, qmax = fq.qrange
    if (qmin, qmax) not in ONNX_RANGES:
        raise ExportError(f"cannot export {name}: grid [{qmin}, {qmax}] ({fq.spec.describe()}); ONNX QDQ at opset "
                          f"{OPSET} holds int8 [-128, 127] or uint8 [0, 255] (the 8-bit profiles)")
    if not fq.active or not fq.calibrated:
        raise ExportError(f"cannot export {name}: the quantizer is off or not calibrated")
    return QDQ(fq.scale, fq.zero_point, qmin, qmax, fq.ch_axis)


class _WeightedExport(nn.Module):
    """A conv / linear with its deployed (grid) weight behind a weight QDQ, and its float bias."""

    def __init__(self, m: nn.Module, name: str) -> None:
        super().__init__()
        w, b = m.folded_weight_bias()
        fq = m.weight_fq
        if not isinstance(fq, FakeQuantize):
            raise ExportError(f"cannot export {name}: its weight quantizer is {type(fq).__name__}")
        self.weight_qdq = _qdq(fq, f"{name}.weight_fq")
        # the values the fake-quant model multiplies with: on the grid, so the QDQ below leaves them unchanged
        self.weight = nn.Parameter(fq(w.detach()).detach().clone(), requires_grad=False)
        b = m.int_bias(b, w) if b is not None else None  # the integer bias the fake-quant model adds (s_x s_w grid)
        self.bias = None if b is None else nn.Parameter(b.detach().clone(), requires_grad=False)
        self.conv = {"stride": m.conv.stride, "padding": m.conv.padding, "dilation": m.conv.dilation,
                     "groups": m.conv.groups} if isinstance(m, QuantConv2d) else None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_qdq(self.weight)
        if self.conv is None:
            return nn.functional.linear(x, w, self.bias)
        return nn.functional.conv2d(x, w, self.bias, **self.conv)


def export_form(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` made of :class:`QDQ` and plain conv / linear modules (see the module docstring)."""
    out = convert_folded(copy.deepcopy(gm)).eval()
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantConvBn2d):
            raise ExportError(f"cannot export {name}: BN kept in float (bn_fold=-1) is not a deployable graph")
    for node in list(out.graph.nodes):
        if node.op != "call_module":
            continue
        target = str(node.target)
        m = out.get_submodule(target)
        if isinstance(m, FakeQuantize):
            new: nn.Module = _qdq(m, target)
        elif isinstance(m, TiedRequant):
            # QuantizeLinear of the averaged float: the same as the integer sum requantized by 1 / N up to ties
            new = _qdq(m.source, target)
            node.args = node.args[:1]
        elif isinstance(m, QuantConv2d | QuantLinear):
            new = _WeightedExport(m, target)
        else:
            continue
        parent, _, leaf = target.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, leaf, new)
    out.recompile()
    return out


def torchscript_export(model: nn.Module, example: Tensor, path: str | Path) -> None:
    """``torch.onnx.export`` with the TorchScript exporter (opset 13, dynamic batch). The torch.export-based
    exporter (torch's default since 2.9) fails on fx GraphModules with fake-quant ops in torch 2.14; the TorchScript
    one writes them as QuantizeLinear / DequantizeLinear, so its deprecation warning is silenced here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), opset_version=OPSET, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def qparams_json(gm: fx.GraphModule) -> dict[str, Any]:
    """Every quantizer's deployment parameters: kind, grid, scale(s), zero point(s), per-channel axis."""
    data: dict[str, Any] = {}
    for name, m in gm.named_modules():
        if isinstance(m, FakeQuantize):
            qmin, qmax = m.qrange
            data[name] = {"kind": m.kind, "spec": m.spec.describe(), "bits": m.spec.bits, "qmin": qmin, "qmax": qmax,
                          "axis": m.ch_axis, "scale": m.scale.reshape(-1).tolist(),
                          "zero_point": m.zero_point.reshape(-1).tolist()}
    return data


def export_onnx(gm: fx.GraphModule, example: Tensor, path: str | Path) -> dict[str, Any]:
    """Write ``path`` (ONNX, QDQ, opset 13, dynamic batch) and ``path`` with ``.qparams.json``; returns a summary
    (ops by type, quantizers)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = export_form(gm).cpu()  # a copy: exported on the CPU (the same initializers) wherever the model runs
    example = example.detach().cpu()
    write_atomic(path, lambda tmp: torchscript_export(model, example, tmp))
    params = qparams_json(gm)
    side = path.with_suffix(".qparams.json")
    text = json.dumps(params, indent=1)
    write_atomic(side, lambda tmp: tmp.write_text(text))
    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"onnx": str(path), "qparams": str(side), "ops": ops, "quantizers": len(params)}


def ort_variant(path: str | Path) -> Path:
    """Write ``<stem>.ort.onnx`` next to the exported ``path``: the same model rewritten exactly for onnxruntime's x86
    integer kernels (:func:`bench.deploy.ort_graph.optimize_for_ort`: int8 weight initializers, clamps behind their
    quantizers, int8 activation codes stored as uint8 + 128). ``path`` itself stays the portable QDQ graph of the
    profile's grid (TensorRT reads only symmetric int8 QDQ, for one)."""
    import onnx

    from bench.deploy.ort_graph import optimize_for_ort

    path = Path(path)
    model = onnx.load(str(path))
    optimize_for_ort(model)
    out = path.with_name(path.name.removesuffix(".onnx") + ".ort.onnx")
    write_atomic(out, lambda tmp: onnx.save(model, str(tmp)))
    return out


def ort_session(path: str | Path, threads: int = 1, optimize: bool = True, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads; ``optimize``: full graph optimizations, which fuse
    QDQ + Conv into QLinearConv / integer kernels where onnxruntime can)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: the optimizer's notes on removed initializers are not for the user
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def ort_check(gm: fx.GraphModule, path: str | Path, loader: Any, max_batches: int | None = None,
              threads: int = 1) -> dict[str, Any]:
    """The exported model run by onnxruntime next to the fake-quant model: both top-1, prediction agreement and the
    largest absolute logit difference. ``ort_float_top1`` is the same ONNX model with onnxruntime's graph
    optimizations off: QDQ then runs as float Dequantize + Conv, so a gap between it and ``ort_top1`` lies in the
    fused integer kernels (QLinearConv & co.), not in the exported graph."""
    sess, ref = ort_session(path, threads), ort_session(path, threads, optimize=False)
    gm.eval()
    dev = distributed.current().device  # where the fake-quant model runs; onnxruntime gets the batch on the CPU
    n = fake_hit = ort_hit = float_hit = agree = 0
    max_diff = 0.0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        fake = gm(x.to(dev))
        feed = {"input": x.cpu().numpy()}
        out = torch.from_numpy(sess.run(None, feed)[0])
        emulated = torch.from_numpy(ref.run(None, feed)[0])
        max_diff = max(max_diff, float((out - fake.cpu()).abs().max()))
        fp, op, yc = fake.argmax(1).cpu(), out.argmax(1), y.cpu()
        fake_hit += int((fp == yc).sum())
        ort_hit += int((op == yc).sum())
        float_hit += int((emulated.argmax(1) == yc).sum())
        agree += int((fp == op).sum())
        n += int(y.numel())
    return {"status": "ok", "n": n, "fake_top1": 100.0 * fake_hit / max(n, 1), "ort_top1": 100.0 * ort_hit / max(n, 1),
            "ort_float_top1": 100.0 * float_hit / max(n, 1), "agreement": 100.0 * agree / max(n, 1),
            "max_abs_logit_diff": max_diff, "onnxruntime": _ort_version()}


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)
