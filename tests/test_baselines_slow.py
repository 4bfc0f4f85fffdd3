"""The shipped fmnist-mini FP32 baselines are reproducible from their recipe: retraining each (as
``python -m bench pretrain`` does, into an empty cache) lands within 0.5 points of the shipped top-1, and above the
track's 90% bar. Minutes per arch on 2 CPU cores: marked slow."""

import pytest

from bench.baselines import load_or_train, shipped_entry
from bench.data import build_data
from bench.engine import evaluate

MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", MINIS)
def test_retraining_reproduces_the_shipped_baseline(make_cfg, arch):
    cfg = make_cfg(f"arch={arch}")
    data = build_data("fashion_mnist", root=None, batch_size=128, eval_batch_size=512, seed=0)
    model, meta = load_or_train(cfg, data, train_recipe=True)
    assert meta["source"] == "trained"
    top1 = evaluate(model, data.test)["top1"]
    shipped = shipped_entry(arch, "fashion_mnist")
    assert shipped is not None and top1 >= 90.0
    assert abs(top1 - shipped["top1"]) <= 0.5, f"{arch}: retrained {top1:.2f}, shipped {shipped['top1']:.2f}"
