"""Shared helpers of the PTQ tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


def trained_like(model: nn.Module, size: int = 32) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (a random-init net has gamma = 1, beta = 0 everywhere, and
    timm zero-initialises the last BN of a residual block), in eval mode."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, 1, size, size).abs())
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.4)
    return model.eval()


@pytest.fixture
def trained() -> Callable[..., nn.Module]:
    """:func:`trained_like` as a fixture."""
    return trained_like
