"""The five ImageNet architectures of the MQBench benchmark, built by timm with random weights."""

from __future__ import annotations

import timm
from torch import nn

from bench.models.base import register_arch

# bench name -> (timm name, family)
IMAGENET_ARCHS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18", "resnet"),
    "resnet50": ("resnet50", "resnet"),
    "mobilenetv2": ("mobilenetv2_100", "mobile"),
    "efficientnet_lite0": ("efficientnet_lite0", "mobile"),
    "regnetx_600mf": ("regnetx_006", "regnet"),
}


def _timm_factory(timm_name: str):
    def factory(num_classes: int, in_chans: int) -> nn.Module:
        # Never pretrained: the harness has no network access and trains its own baselines.
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    factory.__name__ = f"build_{timm_name}"
    factory.__doc__ = f"timm ``{timm_name}`` with random weights (``pretrained=False``)."
    return factory


for _name, (_timm_name, _family) in IMAGENET_ARCHS.items():
    register_arch(_name, family=_family, track="imagenet", timm_name=_timm_name)(_timm_factory(_timm_name))
