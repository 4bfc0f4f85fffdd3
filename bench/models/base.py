"""The architecture registry and its metadata table, shared by the arch modules and ``bench.models``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bench.registry import Registry

ArchFactory = Callable[[int, int], nn.Module]

ARCHS: Registry[ArchFactory] = Registry("arch")
ARCH_INFO: dict[str, dict[str, Any]] = {}

_FAMILIES = ("resnet", "mobile", "regnet", "test")
_TRACKS = {"imagenet": (224, 3, 1000), "fmnist-mini": (32, 1, 10), "test": (32, 1, 10)}


# table order of the architecture families of the papers (a mini variant sorts with its base)
TABLE_ORDER = ("resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf")


def register_arch(name: str, *, family: str, track: str, **extra: Any) -> Callable[[ArchFactory], ArchFactory]:
    """Register ``factory(num_classes, in_chans) -> nn.Module`` under ``name`` and record its metadata.

    ``input_size``, ``in_chans`` and ``num_classes`` default from the track; ``extra`` adds free-form keys
    (``timm_name`` for the ImageNet archs, ``base`` for the mini variants). Tables show the name and order the archs
    as ``TABLE_ORDER`` (by ``base`` for a mini variant), others after them.
    """
    if family not in _FAMILIES:
        raise ValueError(f"family {family!r} not in {_FAMILIES}")
    input_size, in_chans, num_classes = _TRACKS[track]
    info: dict[str, Any] = {
        "family": family,
        "track": track,
        "input_size": input_size,
        "in_chans": in_chans,
        "num_classes": num_classes,
    }
    info.update(extra)

    def deco(factory: ArchFactory) -> ArchFactory:
        base = str(info.get("base", name))
        order = 10 * (TABLE_ORDER.index(base) + 1) if base in TABLE_ORDER else None
        ARCHS.register(name, order=order)(factory)
        ARCH_INFO[name] = info
        return factory

    return deco
