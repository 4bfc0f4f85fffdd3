"""Reduced ("mini") variants of the five archs for the ``fmnist-mini`` track (1x32x32 input, 10 classes).

Each mini is built from the same timm model class and block type as its ImageNet parent, so the graph
patterns that quantization cares about are kept (BasicBlock / Bottleneck residual adds, inverted residuals
with depthwise conv and ReLU6, RegNetX group convs). What changes, and why:

- stem: the ResNet ImageNet stem (7x7 stride 2 + max-pool) reduces 32 px to 8 px before the first stage;
  every mini uses one 3x3 stride-2 conv (no max-pool), so the stages run at 16, 8, 4 and 2 px. The
  stride-1 stems we tried (stages at 32..4 px) trained 3-11x slower per step on 2 CPU cores;
- depth: one block per stage (two in the last stage of the mobile nets so an inverted residual with a
  skip add remains), because on 2 CPU cores per-layer overhead, not MACs, dominates the step time;
- width: reduced so the FP32 baseline (``bench/conf/baseline/fashion_mnist.yaml``: 6 epochs, lr 0.1, wd 5e-4)
  reaches >= 90% Fashion-MNIST top-1 in about 2-4 minutes; ``benchmarks/mini_arch_speed.py`` times them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet
from timm.models.regnet import RegNet, RegNetCfg
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from bench.models.base import register_arch


def resnet_mini(
    block: type[nn.Module],
    channels: Sequence[int],
    layers: Sequence[int],
    stem_stride: int,
    num_classes: int,
    in_chans: int,
) -> ResNet:
    """timm ``ResNet`` with a single 3x3 conv stem (stride ``stem_stride``) and no stem max-pool.

    ``channels`` are the per-stage planes (block outputs are ``expansion`` times wider for Bottleneck).
    """
    # stem_type="deep" is only used to make timm size the stem output (= layer1 input) as channels[0];
    # the deep 3-conv stem itself is replaced by one 3x3 conv just below.
    model = ResNet(
        block=block,
        layers=tuple(layers),
        channels=tuple(channels),
        num_classes=num_classes,
        in_chans=in_chans,
        stem_type="deep",
        stem_width=channels[0] // 2,
    )
    model.conv1 = nn.Conv2d(in_chans, channels[0], 3, stride=stem_stride, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm's init_weights
    model.maxpool = nn.Identity()
    return model


def effnet_mini(
    arch_def: list[list[str]],
    stem_size: int,
    num_features: int,
    stem_stride: int,
    num_classes: int,
    in_chans: int,
) -> EfficientNet:
    """timm ``EfficientNet`` (the class behind MobileNetV2 and EfficientNet-Lite) with ReLU6, no SE."""
    model = EfficientNet(
        block_args=decode_arch_def(arch_def, fix_first_last=True),
        num_classes=num_classes,
        num_features=num_features,
        in_chans=in_chans,
        stem_size=stem_size,
        fix_stem=True,
        act_layer=nn.ReLU6,
        norm_layer=nn.BatchNorm2d,
    )
    # timm hard-codes a stride-2 stem; the 3x3 conv has symmetric padding 1, so only the stride changes.
    model.conv_stem.stride = (stem_stride, stem_stride)
    return model


@dataclass
class MiniRegNetCfg(RegNetCfg):
    """RegNetCfg with explicit per-stage widths, depths and strides instead of the w0/wa/wm generator."""

    stage_widths: tuple[int, ...] = (16, 32, 64, 128)
    stage_depths: tuple[int, ...] = (1, 1, 1, 1)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)
    stem_stride: int = 2


class MiniRegNet(RegNet):
    """timm ``RegNet`` whose stages come from :class:`MiniRegNetCfg` (the generator cannot make 1-block stages)."""

    def __init__(self, cfg: MiniRegNetCfg, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.stem.conv.stride = (cfg.stem_stride, cfg.stem_stride)

    def _get_stage_args(
        self,
        cfg: MiniRegNetCfg,
        default_stride: int = 2,
        output_stride: int = 32,
        drop_path_rate: float = 0.0,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        per_stage = [
            dict(
                out_chs=w,
                stride=s,
                dilation=1,
                depth=d,
                bottle_ratio=cfg.bottle_ratio,
                group_size=cfg.group_size,
                drop_path_rates=[0.0] * d,
            )
            for w, d, s in zip(cfg.stage_widths, cfg.stage_depths, cfg.stage_strides, strict=True)
        ]
        common = dict(
            downsample=cfg.downsample,
            se_ratio=cfg.se_ratio,
            linear_out=cfg.linear_out,
            act_layer=cfg.act_layer,
            norm_layer=cfg.norm_layer,
        )
        return per_stage, common


@register_arch("resnet18_mini", family="resnet", track="fmnist-mini", base="resnet18")
def resnet18_mini(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """ResNet-18 mini: BasicBlock, one block per stage (ResNet-18: 2), widths 16-32-64-128 (1/4 of
    64-512), 3x3 stride-2 stem without max-pool; stages at 16, 8, 4, 2 px (ImageNet stem: 8, 4, 2, 1)."""
    return resnet_mini(BasicBlock, (16, 32, 64, 128), (1, 1, 1, 1), 2, num_classes, in_chans)


@register_arch("resnet50_mini", family="resnet", track="fmnist-mini", base="resnet50")
def resnet50_mini(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """ResNet-50 mini: Bottleneck (1x1-3x3-1x1, expansion 4), one block per stage (ResNet-50: 3-4-6-3),
    planes 8-16-32-64 (1/8; block outputs 32-256) so the 4x wider bottleneck outputs stay as cheap as the
    ResNet-18 mini; 3x3 stride-2 stem without max-pool; stages at 16, 8, 4, 2 px."""
    return resnet_mini(Bottleneck, (8, 16, 32, 64), (1, 1, 1, 1), 2, num_classes, in_chans)


@register_arch("mobilenetv2_mini", family="mobile", track="fmnist-mini", base="mobilenetv2")
def mobilenetv2_mini(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """MobileNetV2 mini: the DS block and inverted residuals (expansion 6, 3x3 depthwise, ReLU6, linear
    bottleneck) of MobileNetV2; 4 of its 7 stages with widths 8-16-32-64 (16-24-32-64-96-160-320), one
    block per stage except two in the last so a residual add remains; 3x3 stride-2 stem of 16 channels
    (32); head 256 (1280). Expanded tensors at 16 px are the costly part on CPU, hence the narrow start."""
    arch_def = [
        ["ds_r1_k3_s1_c8"],
        ["ir_r1_k3_s2_e6_c16"],
        ["ir_r1_k3_s2_e6_c32"],
        ["ir_r2_k3_s2_e6_c64"],
    ]
    return effnet_mini(arch_def, 16, 256, 2, num_classes, in_chans)


@register_arch("efficientnet_lite0_mini", family="mobile", track="fmnist-mini", base="efficientnet_lite0")
def efficientnet_lite0_mini(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """EfficientNet-Lite0 mini: Lite0's DS block and inverted residuals (expansion 6, ReLU6, no SE), 4 of
    its 7 stages with widths 8-16-32-64, one block per stage except two in the last (residual add kept),
    Lite0's 5x5 depthwise kernel in the third stage (one stage only: the variants with more 5x5 depthwise
    layers we timed were up to 2x slower per step); 3x3 stride-2 stem of 16 channels (32); head 256 (1280)."""
    arch_def = [
        ["ds_r1_k3_s1_e1_c8"],
        ["ir_r1_k3_s2_e6_c16"],
        ["ir_r1_k5_s2_e6_c32"],
        ["ir_r2_k3_s2_e6_c64"],
    ]
    return effnet_mini(arch_def, 16, 256, 2, num_classes, in_chans)


@register_arch("regnetx_600mf_mini", family="regnet", track="fmnist-mini", base="regnetx_600mf")
def regnetx_600mf_mini(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """RegNetX-600MF mini: RegNetX bottleneck (1x1, 3x3 group conv, 1x1, bottleneck ratio 1, no SE), one
    block per stage (600MF: 1-3-5-7), widths 16-32-64-128 (48-96-240-528), group width 8 (24), 3x3 stride-2
    stem of 16 channels (32); first stage at stride 1 so stages run at 16, 8, 4, 2 px."""
    cfg = MiniRegNetCfg(
        group_size=8,
        stem_width=16,
        stage_widths=(16, 32, 64, 128),
        stage_depths=(1, 1, 1, 1),
        stage_strides=(1, 2, 2, 2),
        stem_stride=2,
    )
    return MiniRegNet(cfg, in_chans=in_chans, num_classes=num_classes)
