"""``tiny``: a few-thousand-parameter net with the block patterns of the real archs, for fast unit tests."""

from __future__ import annotations

import torch
from torch import nn

from bench.models.base import register_arch


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout)


class TinyNet(nn.Module):
    """conv-bn-relu stem (stride 2) -> ResNet basic block -> inverted residual with skip (depthwise, ReLU6)
    -> strided inverted residual without skip -> global average pool -> linear."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.stem_conv, self.stem_bn = _conv_bn(in_chans, 8, stride=2)
        self.stem_act = nn.ReLU()
        # basic block: conv-bn-relu-conv-bn + identity shortcut, relu
        self.b1_conv1, self.b1_bn1 = _conv_bn(8, 8)
        self.b1_act1 = nn.ReLU()
        self.b1_conv2, self.b1_bn2 = _conv_bn(8, 8)
        self.b1_act2 = nn.ReLU()
        # inverted residual, stride 1: pw expand, dw, pw project (linear) + shortcut
        self.ir1_pw, self.ir1_bn1 = _conv_bn(8, 16, k=1)
        self.ir1_act1 = nn.ReLU6()
        self.ir1_dw, self.ir1_bn2 = _conv_bn(16, 16, groups=16)
        self.ir1_act2 = nn.ReLU6()
        self.ir1_pwl, self.ir1_bn3 = _conv_bn(16, 8, k=1)
        # inverted residual, stride 2, no shortcut
        self.ir2_pw, self.ir2_bn1 = _conv_bn(8, 32, k=1)
        self.ir2_act1 = nn.ReLU6()
        self.ir2_dw, self.ir2_bn2 = _conv_bn(32, 32, stride=2, groups=32)
        self.ir2_act2 = nn.ReLU6()
        self.ir2_pwl, self.ir2_bn3 = _conv_bn(32, 16, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of ``in_chans`` x H x W images."""
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        y = self.b1_act1(self.b1_bn1(self.b1_conv1(x)))
        x = self.b1_act2(self.b1_bn2(self.b1_conv2(y)) + x)
        y = self.ir1_act1(self.ir1_bn1(self.ir1_pw(x)))
        y = self.ir1_act2(self.ir1_bn2(self.ir1_dw(y)))
        x = self.ir1_bn3(self.ir1_pwl(y)) + x
        y = self.ir2_act1(self.ir2_bn1(self.ir2_pw(x)))
        y = self.ir2_act2(self.ir2_bn2(self.ir2_dw(y)))
        x = self.ir2_bn3(self.ir2_pwl(y))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_arch("tiny", family="test", track="test")
def tiny(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """The ``tiny`` test arch (about 3k parameters)."""
    return TinyNet(num_classes=num_classes, in_chans=in_chans)
