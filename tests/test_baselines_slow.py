"""The fmnist-mini FP32 baselines reach the track's bar (>= 90% top-1). Minutes per arch: marked slow."""

import pytest

from bench.baselines import load_or_train
from bench.data import build_data
from bench.engine import evaluate

MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", MINIS)
def test_mini_baseline_reaches_90(make_cfg, arch):
    cfg = make_cfg(f"arch={arch}")
    data = build_data("fashion_mnist", root=None, batch_size=128, eval_batch_size=512, seed=0)
    model, meta = load_or_train(cfg, data)
    assert meta["source"] == "trained"
    assert evaluate(model, data.test)["top1"] >= 90.0
