"""SGD with the parameter groups of the unified pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def norm_parameters(model: nn.Module) -> set[int]:
    """ids of the affine parameters of normalisation layers (BatchNorm and friends)."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, _NORM_TYPES):
            ids.update(id(p) for p in m.parameters(recurse=False))
    return ids


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    bn_weight_decay: bool = True,
    extra_groups: Sequence[dict[str, Any]] = (),
) -> torch.optim.SGD:
    """SGD over the model's parameters.

    ``bn_weight_decay=False`` puts BN parameters in a group without weight decay (MQBench Table 3, mobile family).
    ``extra_groups`` are algorithm parameter groups (e.g. quantizer scales with their own weight decay); their
    parameters are taken out of the default groups. Group dicts may set ``lr`` and ``weight_decay``; each gets a
    ``name`` for logging.
    """
    claimed: set[int] = set()
    groups: list[dict[str, Any]] = []
    for g in extra_groups:
        params = [p for p in g["params"] if p.requires_grad]
        claimed.update(id(p) for p in params)
        groups.append({"weight_decay": weight_decay, **g, "params": params})
    norm_ids = norm_parameters(model) if not bn_weight_decay else set()
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in claimed:
            continue
        (no_decay if id(p) in norm_ids else decay).append(p)
    groups.insert(0, {"name": "weights", "params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.insert(1, {"name": "norm_no_decay", "params": no_decay, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
