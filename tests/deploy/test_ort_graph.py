"""The exact onnxruntime rewrites of a QDQ graph: quantization computed like onnxruntime's, each rewrite leaves the
numbers unchanged, and the rewritten graphs run on integer kernels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.deploy.onnx_export import export_onnx, ort_session, ort_variant
from bench.deploy.ort_graph import (
    clamp_after_quantize,
    gemm_int32_bias,
    optimize_for_ort,
    quantize_like_ort,
    reshape_before_dequantize,
    unsigned_activations,
)

HW = ["tensorrt", "tvm", "acl", "snpe", "fbgemm"]


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = False) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _model(nodes, inits, out_type=TensorProto.FLOAT, shape=(2, 3, 4, 4)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", out_type, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantization_is_computed_like_onnxruntime(dtype, per_channel):
    rng = np.random.default_rng(0)
    scale = np.array([0.05, 0.1, 0.25], np.float32) if per_channel else np.array(0.1, np.float32)
    zp = (np.array([3, -7, 0]) if dtype == np.int8 else np.array([3, 128, 250])).astype(dtype)
    zp = zp if per_channel else zp[:1].reshape(())
    x = rng.normal(0, 8, (2, 3, 4, 4)).astype(np.float32)
    x[0, :, 0, :] = (np.arange(4) + 0.5) * 0.1  # exact half-way points: half to even
    model = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)], {"s": scale, "z": zp},
                   out_type=TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8)
    np.testing.assert_array_equal(quantize_like_ort(x, scale, zp, axis=1), _run(model, x))


def _conv_act_q(act: str, zp: np.ndarray, second_reader: bool = False):
    """x -> Conv -> act -> QuantizeLinear -> DequantizeLinear -> y (and act -> Identity -> z with a second reader)."""
    rng = np.random.default_rng(1)
    inits = {"w": rng.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32), "s": np.array(0.05, np.float32), "z": zp,
             "lo": np.array(0.0, np.float32), "hi": np.array(2.0, np.float32)}
    act_node = (helper.make_node("Relu", ["c"], ["a"]) if act == "relu"
                else helper.make_node("Clip", ["c", "lo", "hi"], ["a"]))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), act_node,
             helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    if second_reader:
        nodes.append(helper.make_node("Identity", ["a"], ["z_out"]))
    model = _model(nodes, inits)
    if second_reader:
        model.graph.output.append(helper.make_tensor_value_info("z_out", TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("act", ["relu", "clip"])
@pytest.mark.parametrize("zp", [np.array(0, np.int8), np.array(-20, np.int8), np.array(0, np.uint8),
                                np.array(40, np.uint8)])
def test_a_clamp_moved_behind_its_quantizer_gives_the_same_numbers(act, zp):
    model = _conv_act_q(act, zp)
    x = np.random.default_rng(2).normal(0, 3, (2, 3, 4, 4)).astype(np.float32)
    x[0, 0, 0, :] = [0.0, 1e-3, -1e-3, 100.0]  # at, near and far beyond the clamp's bounds
    want = _run(model, x)
    assert clamp_after_quantize(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Relu" not in ops and ops.index("QuantizeLinear") == 1  # the quantizer follows the conv directly
    # a ReLU before an unsigned grid with zero point 0 cannot bind after quantization: no clamp is left
    assert ("Clip" in ops) == (act == "clip" or zp.dtype == np.int8 or int(zp) != 0)
    np.testing.assert_array_equal(_run(model, x), want)
    assert unsigned_activations(model) == (1 if zp.dtype == np.int8 else 0)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    shift = 128 if zp.dtype == np.int8 else 0
    assert inits[q.input[2]].dtype == np.uint8 and int(inits[q.input[2]]) == int(zp) + shift
    np.testing.assert_array_equal(_run(model, x), want)  # int8 codes stored as uint8 + 128: the same values


def test_a_clamp_read_by_another_node_stays():
    model = _conv_act_q("relu", np.array(0, np.int8), second_reader=True)
    assert clamp_after_quantize(model) == 0 and [n.op_type for n in model.graph.node][1] == "Relu"


@pytest.mark.parametrize("profile", HW)
def test_the_onnxruntime_variant_computes_what_the_export_computes(profile, tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated(profile, 8)
    x = torch.randn(16, 1, 16, 16)
    export_onnx(gm, x[:1], tmp_path / "m.onnx")
    variant = ort_variant(tmp_path / "m.onnx")
    assert variant == tmp_path / "m.ort.onnx"
    feed = {"input": x.numpy()}
    plain = ort_session(tmp_path / "m.onnx", optimize=False).run(None, feed)[0]
    rewritten = ort_session(variant, optimize=False).run(None, feed)[0]
    # the same arithmetic; a float layer whose weights became a constant may sum in another order (prepacked)
    np.testing.assert_allclose(rewritten, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    if profile == "tvm":  # power-of-two scales: every product and sum is exact in float32
        np.testing.assert_array_equal(rewritten, plain)
    model = onnx.load(str(variant))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        # what onnxruntime's x86 kernels take: int8 weights (int32 biases), uint8 activations
        want = (np.int8, np.int32) if dq.input[0] in inits else (np.uint8,)
        assert inits[dq.input[2]].dtype in want, dq.name
    acts = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(i.name != n.input[0] for n in acts for i in model.graph.initializer)  # no weight quantized at runtime


@pytest.mark.parametrize("profile", ["tensorrt", "tvm"])
def test_signed_grids_run_on_integer_kernels_in_the_variant(profile, tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated(profile, 8)
    x = torch.randn(4, 1, 16, 16)
    export_onnx(gm, x[:1], tmp_path / "m.onnx")

    def ops(path: Path) -> dict[str, int]:
        sess = ort_session(path, profile_prefix=str(tmp_path / path.stem))
        sess.run(None, {"input": x.numpy()})
        events = json.loads(Path(sess.end_profiling()).read_text())
        out: dict[str, int] = {}
        for e in events:
            op = (e.get("args") or {}).get("op_name")
            if e.get("cat") == "Node" and op and e["name"].endswith("_kernel_time"):
                out[op] = out.get(op, 0) + 1
        return out

    before, after = ops(tmp_path / "m.onnx"), ops(ort_variant(tmp_path / "m.onnx"))
    assert after.get("QLinearConv", 0) > before.get("QLinearConv", 0)
    assert after.get("FusedConv", 0) + after.get("Conv", 0) < before.get("FusedConv", 0) + before.get("Conv", 0)


def test_optimize_reports_what_it_changed(tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated("tensorrt", 8)
    export_onnx(gm, torch.randn(1, 1, 16, 16), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    stats = optimize_for_ort(model)
    assert stats["weights_quantized"] >= 3 and stats["activations_unsigned"] >= 3 and stats["clamps_moved"] >= 1
    assert not [n for n in model.graph.node if n.op_type == "Constant" and not any(
        n.output[0] in m.input for m in model.graph.node)]  # nothing left that no node reads


@pytest.mark.parametrize("zp", [np.array(0, np.int8), np.array(5, np.uint8)])
def test_a_max_pool_between_a_relu_and_its_quantizer_runs_on_the_codes(zp):
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(0, 0.5, (3, 3, 3, 3)).astype(np.float32), "s": np.array(0.04, np.float32), "z": zp}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = _model(nodes, inits, shape=(2, 3, 9, 9))
    x = rng.normal(0, 2, (2, 3, 9, 9)).astype(np.float32)
    want = _run(model, x)
    assert clamp_after_quantize(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Conv", "QuantizeLinear", "MaxPool", "Clip", "DequantizeLinear"]
    np.testing.assert_array_equal(_run(model, x), want)
    unsigned_activations(model)
    np.testing.assert_array_equal(_run(model, x), want)
    np.testing.assert_array_equal(_run(model, x, optimize=True), want)


def _classifier(bias: np.ndarray):
    """x -> Q -> DQ -> Flatten -> Gemm(DQ(int8 weight), float bias) -> y: a classifier with a float output."""
    rng = np.random.default_rng(4)
    s_x, s_w = np.array(0.125, np.float32), np.array([0.25, 0.5, 0.0625], np.float32)
    inits = {"sx": s_x, "zx": np.array(3, np.uint8), "wq": rng.integers(-128, 128, (3, 8)).astype(np.int8),
             "sw": s_w, "zw": np.zeros(3, np.int8), "b": bias}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "sx", "zx"], ["d"]),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=0),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    return _model(nodes, inits, shape=(2, 2, 2, 2)), s_x * s_w


def test_a_float_output_classifier_gets_an_int32_bias_where_that_is_exact():
    on_grid = np.array([-7, 0, 1000], np.float32) * np.array(0.125, np.float32) * np.array([0.25, 0.5, 0.0625],
                                                                                           np.float32)
    model, _ = _classifier(on_grid)
    x = np.random.default_rng(5).normal(0, 1, (2, 2, 2, 2)).astype(np.float32)
    want = _run(model, x)
    assert reshape_before_dequantize(model) == 1 and gemm_int32_bias(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "Flatten", "DequantizeLinear",
                                                     "DequantizeLinear", "DequantizeLinear", "Gemm"]
    np.testing.assert_array_equal(_run(model, x), want)
    off_grid, _ = _classifier(on_grid + np.float32(1e-3))
    reshape_before_dequantize(off_grid)
    assert gemm_int32_bias(off_grid) == 0  # a bias off the accumulator grid stays a float bias
