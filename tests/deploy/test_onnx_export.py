"""QDQ ONNX export: the graph holds QuantizeLinear/DequantizeLinear with the quantizers' parameters, onnxruntime
reproduces the fake-quant logits, and what ONNX cannot hold is refused with a reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from bench.deploy.onnx_export import ExportError, export_form, export_onnx, ort_check, ort_session
from bench.quant.insert import quantizers

HW = ["tensorrt", "tvm", "acl", "snpe", "fbgemm"]


@pytest.mark.parametrize("profile", HW)
def test_onnxruntime_matches_fake_quant(profile, tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated(profile, 8)
    x = torch.randn(32, 1, 16, 16)
    info = export_onnx(gm, x[:1], tmp_path / "m.onnx")
    assert info["ops"]["QuantizeLinear"] == info["ops"]["DequantizeLinear"] >= 10
    fake = gm(x).detach()
    # the export form computes what fake quantization does, except at exact half-way points: ONNX QuantizeLinear
    # rounds half to even (TVM's and SNPE's targets round half up / away) and rounds the float average of a pooling
    # (fake quantization requantizes the integer sum of its codes, as the targets do)
    form = export_form(gm)(x)
    assert (form - fake).abs().max() < 0.02 * fake.abs().max()
    assert (form.argmax(1) == fake.argmax(1)).float().mean() >= 0.95
    y = torch.from_numpy(ort_session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})[0])
    assert (y - fake).abs().max() < 0.02 * fake.abs().max()
    assert (y.argmax(1) == fake.argmax(1)).float().mean() >= 0.95
    res = ort_check(gm, tmp_path / "m.onnx", [(x, fake.argmax(1))])
    assert res["n"] == 32 and res["fake_top1"] == 100.0 and res["agreement"] == res["ort_top1"]


def test_qdq_parameters_are_the_quantizers(tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated("fbgemm", 8)  # per-channel asymmetric weights
    info = export_onnx(gm, torch.randn(1, 1, 16, 16), tmp_path / "m.onnx")
    model = onnx.load(info["onnx"])
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    scales = [consts[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1] in consts]
    per_channel = [s for s in scales if s.size > 1]
    weight_scales = sorted(fq.scale.numel() for _, fq in quantizers(gm) if fq.kind == "weight")
    assert sorted(s.size for s in per_channel) == [w for w in weight_scales if w > 1]
    side = json.loads((tmp_path / "m.qparams.json").read_text())
    assert len(side) == len(quantizers(gm)) and all({"scale", "zero_point", "qmin", "qmax"} <= set(v)
                                                     for v in side.values())
    act = next(v for k, v in side.items() if k.startswith("act_fq"))
    assert any(np.isclose(s.reshape(-1)[0], act["scale"][0]) for s in scales if s.size == 1)


def test_what_onnx_cannot_hold_is_refused(tiny_calibrated, tmp_path):
    gm, _ = tiny_calibrated("tensorrt", 4)
    with pytest.raises(ExportError, match=r"grid \[-8, 7\].*int8 \[-128, 127\] or uint8"):
        export_onnx(gm, torch.randn(1, 1, 16, 16), tmp_path / "m.onnx")
    gm, _ = tiny_calibrated("academic", 8)
    with pytest.raises(ExportError, match="BN kept in float"):
        export_onnx(gm, torch.randn(1, 1, 16, 16), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
