"""Quantization report and the debugging workflow (bypass, weights / activations only, SQNR, per-layer sensitivity)
on a small calibrated conv-bn-relu net, checked against the modules themselves and formulas written here."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

from bench.engine.evaluate import evaluate
from bench.ptq.calibrate import calibrate
from bench.quant.debug import quantizer_sqnr, sensitivity, set_mode, sqnr_db
from bench.quant.insert import TiedRequant, prepare, quantizers, weighted_modules
from bench.quant.profiles import load_profile
from bench.quant.quantizer import FakeQuantize
from bench.quant.report import COLUMNS, count_quantizers, format_report, quant_report, write_report

PROFILES = ["academic", "tensorrt", "snpe"]
LAYERS = ["conv1", "conv2", "fc"]


class Net(nn.Module):
    """conv-bn-relu -> conv-bn-relu -> global average pool -> flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(self.relu2(self.bn2(self.conv2(y))))))


def fp_model() -> nn.Module:
    torch.manual_seed(0)
    model = Net()
    model.train()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for _ in range(3):
            model(torch.randn(16, 1, 6, 6) * 2 + 0.5)
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def images() -> torch.Tensor:
    return torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def prepared(profile: str, w_bits: int = 4, a_bits: int = 4) -> tuple[nn.Module, fx.GraphModule]:
    model = fp_model()
    gm = prepare(model, load_profile(profile), w_bits=w_bits, a_bits=a_bits)
    calibrate(gm, images(), 8)
    gm.eval()
    return model, gm


def loader(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches labelled with the FP32 model's predictions (FP32 top-1 = 100%)."""
    x = images()
    with torch.no_grad():
        y = model(x).argmax(1)
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def module_of(gm: fx.GraphModule, name: str) -> FakeQuantize:
    m = gm.get_submodule(name)
    return m.source if isinstance(m, TiedRequant) else m


def enabled_state(gm: nn.Module) -> dict[str, bool]:
    return {n: fq.enabled for n, fq in quantizers(gm)}


# ---------------------------------------------------------------- report


@pytest.mark.parametrize("profile", PROFILES)
def test_report_rows_match_the_modules(profile: str) -> None:
    _, gm = prepared(profile)
    rows = quant_report(gm)
    assert [r["quantizer"] for r in rows if r["kind"] == "weight"] == [f"{n}.weight_fq" for n in LAYERS]
    for r in rows:
        assert set(r) == set(COLUMNS)
        fq = module_of(gm, r["quantizer"])
        assert isinstance(fq, FakeQuantize)
        assert r["bits"] == fq.spec.bits
        assert (r["qmin"], r["qmax"]) == fq.qrange
        assert r["signed"] == fq.signed and r["symmetric"] == fq.spec.symmetric
        assert r["scale_min"] == fq.scale.min().item() and r["scale_max"] == fq.scale.max().item()
        assert r["zero_point_min"] == fq.zero_point.min().item()
        assert r["zero_point_max"] == fq.zero_point.max().item()
        assert r["enabled"] is True
        assert r["granularity"] == ("per-channel(axis 0)" if fq.spec.per_channel else "per-tensor")
    by_tensor = {r["tensor"]: r for r in rows}
    # first / last layer weights and the image input at 8 bits, the middle layer at the cell's 4
    assert by_tensor["conv1.weight"]["bits"] == 8 and by_tensor["fc.weight"]["bits"] == 8
    assert by_tensor["conv2.weight"]["bits"] == 4 and by_tensor["x"]["bits"] == 8
    assert by_tensor["relu1"]["bits"] == 4
    if profile == "academic":  # adaptive signedness: unsigned after ReLU, signed on the image
        assert (by_tensor["relu1"]["qmin"], by_tensor["relu1"]["qmax"]) == (0, 15)
        assert (by_tensor["x"]["qmin"], by_tensor["x"]["qmax"]) == (-128, 127)
    if profile == "snpe":  # asymmetric uint8 grid with a zero point
        assert by_tensor["x"]["qmin"] == 0 and by_tensor["x"]["zero_point_min"] > 0


def test_report_of_an_uncalibrated_and_a_bypass_model() -> None:
    gm = prepare(fp_model(), load_profile("academic"), w_bits=4, a_bits=4)
    rows = quant_report(gm)
    assert all(r["scale_min"] is None and r["zero_point_max"] is None for r in rows)
    gm16 = prepare(fp_model(), load_profile("academic"), w_bits=16, a_bits=16, first_last_bits=16)
    calibrate(gm16, images(), 8)
    rows = quant_report(gm16)
    assert all(r["bits"] == 16 and r["scale_min"] is None and r["enabled"] is False for r in rows)


@pytest.mark.parametrize(("profile", "counts"), [
    ("academic", {"weight": 3, "act": 3, "requant": 0}),  # x, relu1, flatten
    ("tensorrt", {"weight": 3, "act": 3, "requant": 1}),  # x, relu1, relu2; pool re-quantized
])
def test_count_quantizers(profile: str, counts: dict[str, int]) -> None:
    _, gm = prepared(profile)
    assert count_quantizers(gm) == counts
    kinds = [fq.kind for _, fq in quantizers(gm)]
    assert counts["weight"] == kinds.count("weight") and counts["act"] == kinds.count("act")
    assert counts["requant"] == sum(isinstance(m, TiedRequant) for m in gm.modules())


def test_format_report_one_line_per_row() -> None:
    _, gm = prepared("tensorrt")
    rows = quant_report(gm)
    lines = format_report(rows).splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[0].split()[:4] == ["quantizer", "kind", "tensor", "bits"]
    for line, r in zip(lines[1:], rows, strict=True):
        assert line.startswith(r["quantizer"])
        assert f"{r['scale_max']:.4g}" in line
    assert format_report([]).splitlines()[0].startswith("quantizer")


def test_write_report_csv_round_trip(tmp_path: Path) -> None:
    _, gm = prepared("snpe")
    rows = quant_report(gm)
    rows[0]["scale_min"] = None  # None is written as an empty field
    path = write_report(rows, tmp_path / "quant_report.csv")
    assert path == tmp_path / "quant_report.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        back = list(reader)
    assert len(back) == len(rows)
    for r, b in zip(rows, back, strict=True):
        for c in COLUMNS:
            v = r[c]
            assert b[c] == ("" if v is None else str(v)), c
            if isinstance(v, float):
                assert float(b[c]) == v  # floats survive exactly


# ---------------------------------------------------------------- set_mode


@pytest.mark.parametrize("profile", PROFILES)
def test_bypass_equals_fp32(profile: str) -> None:
    model, gm = prepared(profile)
    x = images()
    set_mode(gm, bypass=True)
    assert not any(fq.enabled for _, fq in quantizers(gm))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), atol=1e-5, rtol=1e-5)
        set_mode(gm)
        assert all(fq.enabled for _, fq in quantizers(gm))
        assert not torch.allclose(gm(x), model(x), atol=1e-3)


def test_only_weights_or_acts() -> None:
    _, gm = prepared("tensorrt")
    set_mode(gm, only="weights")
    for _, fq in quantizers(gm):
        assert fq.enabled == (fq.kind == "weight")
    set_mode(gm, only="acts")
    for _, fq in quantizers(gm):
        assert fq.enabled == (fq.kind == "act")
    set_mode(gm, bypass=True, only="acts")  # bypass wins
    assert not any(fq.enabled for _, fq in quantizers(gm))
    set_mode(gm, only="all")
    assert all(fq.enabled for _, fq in quantizers(gm))


def test_only_weights_output_equals_fp_model_with_quantized_weights() -> None:
    # academic: BN kept in float; weights quantized with per-tensor symmetric scales written out here
    model, gm = prepared("academic")
    set_mode(gm, only="weights")
    ref = fp_model()
    with torch.no_grad():
        for name in LAYERS:
            w = getattr(ref, name).weight
            fq = gm.get_submodule(f"{name}.weight_fq")
            qmax = fq.qrange[1]
            s = (w.abs().max() / qmax).reshape(())
            assert fq.scale.item() == s.item()
            w.copy_(s * torch.clamp(torch.round(w / s), -qmax - 1, qmax))
        x = images()
        torch.testing.assert_close(gm(x), ref(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- SQNR


def test_sqnr_db_hand_formula() -> None:
    x = torch.randn(1000)
    xq = x + 0.01 * torch.randn(1000)
    xd, nd = x.double().numpy(), (x - xq).double().numpy()
    ref = 10 * np.log10(np.sum(xd**2) / np.sum(nd**2))
    assert sqnr_db(x, xq) == pytest.approx(ref, rel=1e-12)
    assert sqnr_db(x, x.clone()) == math.inf
    assert sqnr_db(x, torch.zeros_like(x)) == pytest.approx(0.0, abs=1e-9)  # all signal lost: 0 dB
    assert math.isfinite(sqnr_db(torch.zeros(4), torch.ones(4)))


@pytest.mark.parametrize("only", ["all", "weights", "acts"])
def test_quantizer_sqnr_one_entry_per_active_quantizer(only: str) -> None:
    _, gm = prepared("tensorrt")
    gm.train()
    set_mode(gm, only=only)
    out = quantizer_sqnr(gm, images())
    active = {n for n, fq in quantizers(gm) if fq.enabled}
    assert set(out) == active
    assert all(math.isfinite(v) and v > 0 for v in out.values())
    assert gm.training  # mode restored
    assert all(not fq._forward_hooks for _, fq in quantizers(gm))  # hooks removed


def test_quantizer_sqnr_values() -> None:
    _, gm = prepared("tensorrt")
    x = images()
    out = quantizer_sqnr(gm, x)
    # the image quantizer sees the images themselves
    fq = gm.get_submodule("act_fq_x")
    s = fq.scale.item()
    xq = s * torch.clamp(torch.round(x / s), -128, 127)
    num, den = x.double().pow(2).sum().item(), (x - xq).double().pow(2).sum().item()
    assert out["act_fq_x"] == pytest.approx(10 * math.log10(num / den), rel=1e-9)
    # a folded conv weight: w * gamma / sqrt(var + eps) (MQBench Eq. 4), per-channel quantized
    m = gm.get_submodule("conv2")
    bn = m.bn
    w = m.conv.weight.detach() * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().reshape(-1, 1, 1, 1)
    wfq = m.weight_fq
    sc = wfq.scale.reshape(-1, 1, 1, 1)
    qmin, qmax = wfq.qrange
    wq = sc * torch.clamp(torch.round(w / sc), qmin, qmax)
    ref = 10 * math.log10(w.double().pow(2).sum().item() / (w - wq).double().pow(2).sum().item())
    assert out["conv2.weight_fq"] == pytest.approx(ref, rel=1e-4)
    # the weights of a layer quantized at 8 bits have a higher SQNR than at 4 bits
    assert out["conv1.weight_fq"] > out["conv2.weight_fq"]


# ---------------------------------------------------------------- sensitivity


@pytest.mark.parametrize("profile", ["academic", "tensorrt"])
def test_sensitivity_rows_and_restored_state(profile: str) -> None:
    model, gm = prepared(profile)
    test = loader(model)
    gm.get_submodule("act_fq_relu1").enabled = False  # a non-default state that must come back
    before = enabled_state(gm)
    rows = sensitivity(gm, images()[:8], test)
    assert enabled_state(gm) == before
    assert [r["layer"] for r in rows] == [n for n, _ in weighted_modules(gm)] == LAYERS
    assert [r["weight_bits"] for r in rows] == [8, 4, 8]
    inputs = {r["layer"]: r["input_quantizers"] for r in rows}
    assert inputs["conv1"] == "act_fq_x" and inputs["conv2"] == "act_fq_relu1"
    # hardware graphs: fc reads the re-quantized pooling of act_fq_relu2's tensor
    assert inputs["fc"] == ("act_fq_flatten" if profile == "academic" else "act_fq_relu2")
    for r in rows:
        assert 0.0 <= r["top1_only_this_layer"] <= 100.0
        assert r["weight_sqnr_db"] is not None and r["weight_sqnr_db"] > 0
    # SQNRs are measured with every quantizer on, whatever the debug state (act_fq_relu1 was disabled)
    assert rows[1]["input_sqnr_db"] is not None and rows[0]["input_sqnr_db"] is not None


def test_sensitivity_accuracy_equals_one_layer_quantized_by_hand() -> None:
    model, gm = prepared("academic", w_bits=2, a_bits=2)
    test = loader(model)
    rows = sensitivity(gm, images()[:8], test)
    for r in rows:
        set_mode(gm, bypass=True)
        gm.get_submodule(f"{r['layer']}.weight_fq").enabled = True
        for name in r["input_quantizers"].split(","):
            gm.get_submodule(name).enabled = True
        assert r["top1_only_this_layer"] == evaluate(gm, test)["top1"]
    set_mode(gm)
    # with all quantizers off the model is the FP32 one: 100% against its own predictions
    set_mode(gm, bypass=True)
    assert evaluate(gm, test)["top1"] == 100.0


def test_sensitivity_sqnr_does_not_depend_on_the_debug_mode() -> None:
    model, gm = prepared("academic")
    test = loader(model)
    full = sensitivity(gm, images()[:8], test)
    set_mode(gm, only="acts")
    acts_only = sensitivity(gm, images()[:8], test)
    assert [r["weight_sqnr_db"] for r in acts_only] == [r["weight_sqnr_db"] for r in full]
