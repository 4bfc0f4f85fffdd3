"""The mini archs keep their parents' timm classes and block types."""

from __future__ import annotations

import torch
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.efficientnet import EfficientNet
from timm.models.regnet import Bottleneck as RegBottleneck
from timm.models.regnet import RegNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from bench.models import build_model


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, 10, 1)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_resnet_minis_use_their_block_types() -> None:
    r18, r50 = _build("resnet18_mini"), _build("resnet50_mini")
    assert isinstance(r18, ResNet) and isinstance(r50, ResNet)
    assert any(isinstance(m, BasicBlock) for m in r18.modules())
    assert not any(isinstance(m, Bottleneck) for m in r18.modules())
    assert any(isinstance(m, Bottleneck) for m in r50.modules())
    assert r18.conv1.kernel_size == (3, 3) and r18.conv1.in_channels == 1


def _depthwise(model: nn.Module) -> list[nn.Conv2d]:
    return [c for c in _convs(model) if c.groups > 1 and c.groups == c.in_channels == c.out_channels]


def test_mobile_minis_have_depthwise_inverted_residuals_with_relu6() -> None:
    for name in ("mobilenetv2_mini", "efficientnet_lite0_mini"):
        model = _build(name)
        assert isinstance(model, EfficientNet)
        irs = [m for m in model.modules() if isinstance(m, InvertedResidual)]
        assert irs and any(ir.has_skip for ir in irs)
        assert all(isinstance(ir.se, nn.Identity) for ir in irs)  # no squeeze-excite (Lite drops it)
        assert _depthwise(model)
        acts = {type(m) for m in model.modules() if isinstance(m, nn.ReLU | nn.ReLU6 | nn.SiLU)}
        assert acts == {nn.ReLU6}
    lite_kernels = {c.kernel_size for c in _depthwise(_build("efficientnet_lite0_mini"))}
    assert (5, 5) in lite_kernels  # Lite0's 5x5 depthwise stages are kept


def test_regnet_mini_has_group_conv_bottlenecks() -> None:
    model = _build("regnetx_600mf_mini")
    assert isinstance(model, RegNet)
    assert any(isinstance(m, RegBottleneck) for m in model.modules())
    grouped = [c for c in _convs(model) if 1 < c.groups < c.in_channels]
    assert grouped
    assert all(isinstance(b.se, nn.Identity) for b in model.modules() if isinstance(b, RegBottleneck))


def test_minis_keep_spatial_resolution_long_enough() -> None:
    # ImageNet stems reduce 32 px to 8 px before the first stage; the minis must not.
    for name in ("resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"):
        model = _build(name).eval()
        sizes: list[int] = []

        def record(m: nn.Module, i: tuple[torch.Tensor, ...], o: torch.Tensor, sizes: list[int] = sizes) -> None:
            sizes.append(o.shape[-1])

        for c in _convs(model):
            c.register_forward_hook(record)
        with torch.no_grad():
            model(torch.zeros(1, 1, 32, 32))
        assert sizes[0] >= 16, name  # stem output
        assert min(sizes) >= 2, name
