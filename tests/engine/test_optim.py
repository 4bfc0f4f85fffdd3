import torch
from torch import nn

from bench.engine.optim import build_optimizer


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_bn_no_decay_group_and_nesterov():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = build_optimizer(m, lr=0.1, weight_decay=1e-4, bn_weight_decay=False)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["norm_no_decay"]["weight_decay"] == 0.0
    assert {id(p) for p in groups["norm_no_decay"]["params"]} == {id(m[1].weight), id(m[1].bias)}
    assert len(groups["weights"]["params"]) == 4 and groups["weights"]["weight_decay"] == 1e-4
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_bn_decay_by_default_and_extra_groups_claim_params():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    scale = nn.Parameter(torch.ones(1))
    m.register_parameter("scale", scale)
    opt = build_optimizer(
        m, lr=0.1, weight_decay=1e-4, extra_groups=[{"name": "quant", "params": [scale], "weight_decay": 0.0}]
    )
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"weights", "quant"}
    assert groups["quant"]["weight_decay"] == 0.0 and groups["quant"]["params"] == [scale]
    assert all(p is not scale for p in groups["weights"]["params"])
    assert len(groups["weights"]["params"]) == 4  # conv w, b, bn w, b
