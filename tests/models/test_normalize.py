"""Normalisation replaces timm's fused BatchNorm+act modules without changing any output."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import BatchNormAct2d, ConvNormAct
from torch import nn

from bench.models import ARCHS, normalize_model, trace, unpaired_convs
from bench.models.normalize import NormalizeError, split_norm_act

TIMM_MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    # Fresh BNs are identities in eval mode; random affine params and stats make the comparison meaningful.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def _raw_and_normalised(name: str, in_chans: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    raw = ARCHS.get(name)(num_classes=10, in_chans=in_chans)
    _randomise_bn(raw)
    return raw, normalize_model(copy.deepcopy(raw))


@pytest.mark.parametrize("name", TIMM_MINIS + ["efficientnet_lite0", "regnetx_600mf"])
def test_outputs_unchanged_eval_and_train(name: str) -> None:
    in_chans = 1 if name.endswith("_mini") else 3
    raw, norm = _raw_and_normalised(name, in_chans)
    assert any(isinstance(m, BatchNormAct2d) for m in raw.modules()) == ("resnet" not in name)
    assert not any(isinstance(m, BatchNormAct2d) for m in norm.modules())
    # 32 px exercises every layer of the ImageNet nets too, far cheaper than 224
    x = torch.randn(4, in_chans, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(norm.eval()(x), raw.eval()(x), rtol=0, atol=0)
        torch.testing.assert_close(norm.train()(x), raw.train()(x), rtol=0, atol=0)
    raw_bn = [m for m in raw.modules() if isinstance(m, nn.BatchNorm2d)]
    norm_bn = [m for m in norm.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(raw_bn) == len(norm_bn)
    for a, b in zip(raw_bn, norm_bn, strict=True):
        assert torch.equal(a.running_mean, b.running_mean)
        assert torch.equal(a.running_var, b.running_var)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1


def test_split_norm_act_shares_params_and_keeps_act() -> None:
    fused = BatchNormAct2d(4, act_layer=nn.ReLU6, momentum=0.2, eps=1e-3)
    out = split_norm_act(fused)
    assert isinstance(out, nn.Sequential)
    assert type(out.bn) is nn.BatchNorm2d and isinstance(out.act, nn.ReLU6)
    assert out.bn.weight is fused.weight and out.bn.running_var is fused.running_var
    assert (out.bn.eps, out.bn.momentum) == (1e-3, 0.2)
    plain = split_norm_act(BatchNormAct2d(4, apply_act=False))
    assert type(plain) is nn.BatchNorm2d


def test_conv_norm_act_traces_to_conv_bn_pair() -> None:
    block = nn.Sequential(ConvNormAct(3, 8, 3), ConvNormAct(8, 8, 1, apply_act=False))
    assert unpaired_convs(trace(block)) == ["0.conv", "1.conv"]  # fused BN hides the pairs
    normalize_model(block)
    assert unpaired_convs(trace(block)) == []


def test_inplace_activations_are_switched_off() -> None:
    torch.manual_seed(0)
    model = normalize_model(ARCHS.get("resnet18_mini")(num_classes=10, in_chans=1))
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_unsupported_fused_norm_raises() -> None:
    from timm.layers import GroupNormAct

    with pytest.raises(NormalizeError, match="GroupNormAct"):
        normalize_model(nn.Sequential(nn.Conv2d(1, 4, 1), GroupNormAct(4, 2)))
