"""check_real: fake-quant vs integer evaluation over a loader."""

from __future__ import annotations

import torch

from bench.deploy.check import check_real, format_check
from bench.engine import evaluate
from bench.quant.insert import quantizers


def _batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(32, 1, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(n)]


def test_fake_side_is_the_ordinary_evaluation_and_counts_add_up(tiny_calibrated):
    gm, p = tiny_calibrated("tensorrt", 8)
    data = _batches()
    res = check_real(gm, p, data)
    assert res["status"] == "ok" and res["n"] == 96 and (res["requant"], res["rounding"]) == ("float32", "half_even")
    assert res["fake_top1"] == evaluate(gm, data)["top1"]
    assert res["agreement"] >= 90.0 and res["int32_overflows"] == 0
    assert 0 <= res["mean_abs_logit_diff_units"] <= res["max_abs_logit_diff_units"]
    assert check_real(gm, p, data, max_batches=1)["n"] == 32
    assert "agreement" in format_check(res)


def test_a_model_the_executor_refuses_is_reported_not_raised(tiny_calibrated):
    gm, p = tiny_calibrated("tvm", 4)
    next(m for n, m in quantizers(gm) if n.startswith("act_fq")).enabled = False
    res = check_real(gm, p, _batches(1))
    assert res["status"] == "not_executable" and "is off" in res["reason"]
    assert format_check(res).startswith("deploy check: not_executable")
