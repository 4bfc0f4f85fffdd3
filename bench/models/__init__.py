"""Architectures (timm-backed, plus their ``*_mini`` variants and a ``tiny`` test net) and fx helpers.

``build_model(name, num_classes, in_chans)`` is the one entry point: it looks the name up in ``ARCHS``,
builds the model with weights drawn from torch's global RNG (seed it for determinism) and normalises it
so that ``trace(model)`` shows every conv followed by its ``BatchNorm2d`` as call_module nodes.
"""

from __future__ import annotations

from torch import nn

from bench.models import imagenet, mini, tiny  # noqa: F401  (register the archs)
from bench.models.base import ARCH_INFO, ARCHS, register_arch
from bench.models.graph import conv_bn_pairs, trace, unpaired_convs
from bench.models.normalize import normalize_model

__all__ = [
    "ARCHS",
    "ARCH_INFO",
    "build_model",
    "conv_bn_pairs",
    "normalize_model",
    "register_arch",
    "trace",
    "unpaired_convs",
]


def build_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """Build arch ``name`` with random weights and normalise it for fx (see ``bench.models.normalize``).

    Raises ``bench.registry.RegistryError`` (one line listing the accepted names) for an unknown name.
    """
    factory = ARCHS.get(name)
    return normalize_model(factory(num_classes=num_classes, in_chans=in_chans))
