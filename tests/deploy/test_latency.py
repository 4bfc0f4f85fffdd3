"""The latency harness: both models timed, the INT8 one running onnxruntime's integer kernels; CLI arguments."""

from __future__ import annotations

import pytest

from bench.cli.latency import parse
from bench.deploy.latency import measure_arch


def test_fp32_and_int8_are_timed_and_int8_runs_integer_kernels(tmp_path):
    rows = measure_arch("resnet18_mini", image_size=32, batch_sizes=(1, 2), warmup=1, repeats=3, num_classes=10,
                        workdir=tmp_path)
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["fp32_ms"] > 0 and r["int8_ms"] > 0 and r["speedup"] == pytest.approx(r["fp32_ms"] / r["int8_ms"],
                                                                                         rel=1e-2)
        assert "QLinearConv" in r["int8_kernels"] and r["integer_kernels"] >= 10
    assert list(tmp_path.iterdir()) == []  # the ONNX files lived in a temporary directory


@pytest.mark.parametrize("arg, needle", [
    ("archs=resnet19", "unknown arch 'resnet19'; accepted: "), ("batch=0", "batch sizes must be >= 1"),
    ("profile=academic", "unknown profile 'academic'"), ("repeats=x", "repeats=x is not an integer"),
    ("speed=3", "unknown argument 'speed=3'; accepted: archs="),
])
def test_bad_arguments_are_one_line_errors(arg, needle):
    err = parse([arg])
    assert isinstance(err, str) and needle in err and "\n" not in err


def test_defaults_are_the_imagenet_archs_at_224():
    args = parse([])
    assert isinstance(args, dict) and args["image_size"] == 224 and args["batch"] == [1, 8]
    assert args["archs"] == ["resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf"]
