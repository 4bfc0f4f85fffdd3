"""The latency harness: FP32, onnxruntime's own quantization and every profile timed in one run, the INT8 models
running onnxruntime's integer kernels, the speed table; CLI arguments."""

from __future__ import annotations

import pytest

from bench.cli.latency import parse
from bench.deploy.latency import diagnose, exportable_profiles, measure_arch, speed_table
from bench.quant.profiles import load_profile


def test_every_model_is_timed_and_the_int8_ones_run_integer_kernels(tmp_path):
    rows = measure_arch("resnet18_mini", profiles=("tvm", "fbgemm"), plain=True, image_size=32, batch_sizes=(1, 2),
                        warmup=1, repeats=3, num_classes=10, workdir=tmp_path)
    models = ["fp32", "onnxruntime", "tvm", "tvm/qdq", "fbgemm", "fbgemm/qdq"]
    assert [(r["batch"], r["model"]) for r in rows] == [(b, m) for b in (1, 2) for m in models]
    for b in (1, 2):
        by = {r["model"]: r for r in rows if r["batch"] == b}
        for m, r in by.items():
            # `ms` is rounded to 3 decimals and a mini model takes ~0.07 ms: the speedup (from unrounded times) lies
            # in the interval the rounded times allow, not within a fixed relative tolerance of their ratio
            f, t, h = by["fp32"]["ms"], r["ms"], 0.0005
            assert t > 0 and (f - h) / (t + h) - h <= r["speedup"] <= (f + h) / (t - h) + h
            if m == "tvm/qdq":  # the plain QDQ export of a signed grid runs mostly in float: that is what it shows
                # (its few integer kernels need not rank among the 4 slowest ops that `kernels` lists)
                assert r["integer_kernels"] >= 1
            elif m != "fp32":
                assert "QLinearConv" in r["kernels"] and r["integer_kernels"] >= 10
                assert r["vs_reference"] == pytest.approx(r["speedup"] / by["onnxruntime"]["speedup"], rel=1e-2)
        assert by["fp32"]["integer_kernels"] == 0 and by["tvm"]["grid"].startswith("a s8 sym per-tensor pot")
        # the exact rewrites put TVM's signed grid on integer kernels: no float convolution is left in the variant
        assert by["tvm"]["integer_kernels"] > by["tvm/qdq"]["integer_kernels"]
    assert list(tmp_path.iterdir()) == []  # the ONNX files lived in a temporary directory
    table = speed_table(rows)
    assert "| resnet18_mini | 32 | 1 |" in table and table.count("**") == 4  # one best profile per row
    assert "tvm/qdq" in table.splitlines()[0]


def test_the_note_names_the_kernel_and_the_grid():
    ref = {"QLinearConv": (4.0, 52), "QGemm": (0.1, 1)}
    slow = diagnose(load_profile("fbgemm"), {"QLinearConv": (96.0, 52), "Gemm": (0.2, 1)}, ref)
    assert "QLinearConv 96.00 ms" in slow and "per-channel weight zero points" in slow
    floats = diagnose(load_profile("acl"), {"QLinearConv": (3.0, 36), "FusedConv": (2.0, 11)}, ref)
    assert "11 layers in float (2.00 ms): graph 1" in floats
    assert "timing noise" in diagnose(load_profile("snpe"), {"QLinearConv": (4.2, 52)}, ref)


def test_the_default_profiles_are_the_hardware_targets_in_table_order():
    assert exportable_profiles() == ["tensorrt", "acl", "tvm", "snpe", "fbgemm"]


@pytest.mark.parametrize("arg, needle", [
    ("archs=resnet19", "unknown arch 'resnet19'; accepted: "), ("batch=0", "batch sizes must be >= 1"),
    ("profiles=academic", "unknown profile 'academic' (academic keeps BN in float"),
    ("profiles=tvm,x", "unknown profile 'x'; accepted: tensorrt, acl, tvm, snpe, fbgemm"),
    ("reference=yes", "reference=yes; accepted: true, false"), ("repeats=x", "repeats=x is not an integer"),
    ("speed=3", "unknown argument 'speed=3'; accepted: archs="),
])
def test_bad_arguments_are_one_line_errors(arg, needle):
    err = parse([arg])
    assert isinstance(err, str) and needle in err and "\n" not in err


def test_defaults_are_the_imagenet_archs_at_224():
    args = parse([])
    assert isinstance(args, dict) and args["image_size"] == 224 and args["batch"] == [1, 8]
    assert args["profiles"] is None and args["reference"] is True and args["plain"] is False
    assert args["archs"] == ["resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf"]
