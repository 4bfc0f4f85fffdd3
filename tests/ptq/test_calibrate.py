"""PTQ calibration against references written here: weight scales from the Eq. 4-folded weights, activation scales
from the true range of the tensors seen (forward hooks), and BN re-calibration (MQBench App. C.3)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
from torch import nn

from bench.ptq.calibrate import calibrate, calibrate_acts, calibrate_weights, recalibrate_bn
from bench.quant.insert import prepare, quantizers
from bench.quant.profiles import load_profile
from bench.quant.qmodules import QuantConvBn2d


class Net(nn.Module):
    """conv-bn-relu -> conv-bn-relu -> BN on its own (not after a conv) -> global average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.bn3 = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(self.flatten(self.pool(self.bn3(y))))


def fp_model() -> nn.Module:
    """Running statistics far from (0, 1) and from those of the calibration images, random affine BN parameters."""
    torch.manual_seed(0)
    model = Net().train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(16, 1, 6, 6) * 3 + 1)
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def images(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def prep(profile: str, bn_fold: int | None = None, **kw: int) -> tuple[nn.Module, fx.GraphModule]:
    model = fp_model()
    gm = prepare(model, load_profile(profile).with_overrides(bn_fold=bn_fold), w_bits=kw.get("w_bits", 4),
                 a_bits=kw.get("a_bits", 4))
    return model, gm


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """MQBench Eq. (4): ``w * gamma / sqrt(running_var + eps)`` per output channel."""
    f = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight.detach() * f.reshape(-1, 1, 1, 1)


def bn_stats(gm: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in gm.named_modules()
            if isinstance(m, nn.BatchNorm2d)}


# ---------------------------------------------------------------- weights


def test_calibrate_weights_tensorrt_per_channel_folded_absmax() -> None:
    model, gm = prep("tensorrt")
    calibrate_weights(gm)
    for name, bn, bits in (("conv1", model.bn1, 8), ("conv2", model.bn2, 4)):
        m = gm.get_submodule(name)
        assert isinstance(m, QuantConvBn2d) and m.strategy == 4
        fq = m.weight_fq
        qmax = 2 ** (bits - 1) - 1
        assert fq.qrange == (-qmax - 1, qmax) and fq.spec.per_channel
        expected = folded(getattr(model, name), bn).abs().amax(dim=(1, 2, 3)) / qmax
        assert fq.scale.shape == expected.shape
        torch.testing.assert_close(fq.scale, expected, rtol=1e-6, atol=0)
        assert (fq.zero_point == 0).all() and fq.calibrated and not fq.observing
        # not the unfolded weight's scale (the BN statistics are far from 1)
        assert not torch.allclose(fq.scale, getattr(model, name).weight.abs().amax(dim=(1, 2, 3)) / qmax, rtol=1e-2)
    fc = gm.get_submodule("fc").weight_fq
    assert torch.equal(fc.scale, model.fc.weight.detach().abs().amax(dim=1) / 127)
    # activation quantizers are not touched
    assert not any(fq.calibrated for _, fq in quantizers(gm) if fq.kind == "act")


def test_calibrate_weights_academic_uses_the_unfolded_weight() -> None:
    model, gm = prep("academic")
    calibrate_weights(gm)
    for name, qmax in (("conv1", 127), ("conv2", 7), ("fc", 127)):
        fq = gm.get_submodule(f"{name}.weight_fq")
        assert fq.scale.shape == (1,)
        assert fq.scale.item() == (getattr(model, name).weight.detach().abs().max() / qmax).item()


def test_calibrate_weights_forgets_earlier_statistics() -> None:
    model, gm = prep("academic")
    calibrate_weights(gm)
    m = gm.get_submodule("conv2")
    with torch.no_grad():
        m.conv.weight.mul_(0.5)
    calibrate_weights(gm)  # a fresh observer: the smaller weight gives a smaller scale
    expected = (m.conv.weight.detach().abs().max() / 7).item()
    assert m.weight_fq.scale.item() == expected
    assert expected == pytest.approx((model.conv2.weight.detach().abs().max() / 14).item(), rel=1e-6)


# ---------------------------------------------------------------- activations


def _act_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The FP32 model's tensors read by the academic profile's activation quantizers (graph 1)."""
    seen: dict[str, torch.Tensor] = {"act_fq_x": x}
    hooks = [
        model.relu1.register_forward_hook(lambda m, i, o: seen.__setitem__("act_fq_relu1", o.detach().clone())),
        model.flatten.register_forward_hook(lambda m, i, o: seen.__setitem__("act_fq_flatten", o.detach().clone())),
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("profile", ["academic", "snpe"])
def test_calibrate_acts_minmax_matches_true_range_of_fp_tensors(profile: str) -> None:
    model, gm = prep(profile, bn_fold=0 if profile == "snpe" else None)
    x = images()
    for _, fq in quantizers(gm):  # weights off: the tensors seen are the FP32 model's
        if fq.kind == "weight":
            fq.enabled = False
    gm.train()
    calibrate_acts(gm, x, batch_size=5)  # several batches, the last one smaller
    assert gm.training  # mode restored
    seen = _act_inputs(model, x)
    acts = {n: fq for n, fq in quantizers(gm) if fq.kind == "act"}
    if profile == "academic":
        assert set(acts) == set(seen)
    checked = [name for name in acts if name in seen]
    assert len(checked) >= 2
    for name in checked:
        fq = acts[name]
        assert fq.calibrated and not fq.observing
        t = seen[name]
        lo, hi = min(t.min().item(), 0.0), max(t.max().item(), 0.0)
        qmin, qmax = fq.qrange
        if profile == "academic":  # symmetric, adaptive signedness
            assert fq.signed == (t.min().item() < 0)
            expected = max(-lo, hi) / qmax if fq.signed else hi / qmax
            assert fq.zero_point.item() == 0
        else:  # asymmetric uint8
            expected = (hi - lo) / (qmax - qmin)
            assert fq.zero_point.item() == pytest.approx(qmin - lo / expected, abs=0.5 + 1e-3)
        assert fq.scale.item() == pytest.approx(expected, rel=1e-5)


def test_calibrate_acts_sees_the_quantized_weight_model_exactly() -> None:
    _, gm = prep("tensorrt")
    x = images()
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, fq in quantizers(gm):
        if fq.kind == "act":
            hooks.append(fq.register_forward_pre_hook(
                lambda m, i, name=name: captured.setdefault(name, []).append(i[0].detach().clone())))
    calibrate(gm, x, 8)
    for h in hooks:
        h.remove()
    assert len(captured) == 3
    for name, batches in captured.items():
        assert len(batches) == 2
        t = torch.cat(batches)
        fq = gm.get_submodule(name)
        qmax = fq.qrange[1]
        amax = torch.maximum(-t.min().clamp_max(0), t.max().clamp_min(0))
        assert fq.scale.item() == (amax / qmax).item()  # symmetric signed grid, bit-exact
    # the weights were quantized while the activations were observed
    xs = {n: [] for n in captured}
    for name in captured:
        gm.get_submodule(name).register_forward_pre_hook(lambda m, i, name=name: xs[name].append(i[0]))
    set_acts = [fq for _, fq in quantizers(gm) if fq.kind == "act"]
    for fq in set_acts:
        fq.enabled = False
    with torch.no_grad():
        gm.eval()(x)
    for name in captured:
        torch.testing.assert_close(xs[name][0], torch.cat(captured[name]), rtol=0, atol=0)


# ---------------------------------------------------------------- BN re-calibration


def _bn_inputs(gm: fx.GraphModule, x: torch.Tensor, batch_size: int) -> dict[str, list[torch.Tensor]]:
    """Inputs of every BN of a copy of ``gm`` run as the quantized model with BNs in training mode (batch
    statistics), without touching ``gm``."""
    ref = copy.deepcopy(gm).eval()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, m in ref.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            m.register_forward_pre_hook(lambda mod, i, name=name: seen.setdefault(name, []).append(i[0].detach()))
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            ref(x[i : i + batch_size])
    return seen


def _expected_stats(batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative average over equal-size batches: mean of batch means (= full-set mean) and of the unbiased batch
    variances."""
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    vars_ = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches])
    return means.mean(0), vars_.mean(0)


@pytest.mark.parametrize("batch_size", [16, 8])
def test_recalibrate_bn_academic_equals_exact_statistics(batch_size: int) -> None:
    _, gm = prep("academic")
    x = images(16)
    calibrate(gm, x, 8)
    expected = _bn_inputs(gm, x, batch_size)
    assert sorted(expected) == ["bn3", "conv1.bn", "conv2.bn"]
    before = bn_stats(gm)
    n = recalibrate_bn(gm, x, batch_size)
    assert n == 3  # two strategy -1 BNs and the plain one
    after = bn_stats(gm)
    for name, batches in expected.items():
        mean, var = _expected_stats(batches)
        torch.testing.assert_close(after[name][0], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after[name][1], var, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(after[name][0], before[name][0], atol=1e-2)  # the statistics changed
        if batch_size == 16:  # one batch: the exact mean / unbiased variance of the BN input over the set
            t = batches[0]
            torch.testing.assert_close(after[name][0], t.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(after[name][1], t.var(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
        else:  # equal-size batches: the cumulative average's mean is the full-set mean
            t = torch.cat(batches)
            torch.testing.assert_close(after[name][0], t.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_recalibrate_bn_restores_momentum_mode_and_recalibrates_weights() -> None:
    model, gm = prep("tensorrt")
    x = images(16)
    calibrate(gm, x, 8)
    gm.get_submodule("conv2").bn.momentum = 0.05
    gm.get_submodule("bn3").momentum = None
    momenta = {n: m.momentum for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {"conv1.bn": 0.1, "conv2.bn": 0.05, "bn3": None}
    before = bn_stats(gm)
    gm.train()
    assert recalibrate_bn(gm, x, 8) == 3
    assert {n: m.momentum for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d)} == momenta
    assert gm.training and all(m.training for m in gm.modules())
    gm.eval()
    assert recalibrate_bn(gm, x, 8) == 3
    assert not any(m.training for m in gm.modules())
    after = bn_stats(gm)
    for name in before:
        assert not torch.allclose(after[name][1], before[name][1], rtol=1e-2)
    # weight quantizers follow the new statistics: per-channel absmax of the re-folded weight
    for name in ("conv1", "conv2"):
        m = gm.get_submodule(name)
        qmax = m.weight_fq.qrange[1]
        expected = folded(m.conv, m.bn).abs().amax(dim=(1, 2, 3)) / qmax
        torch.testing.assert_close(m.weight_fq.scale, expected, rtol=1e-6, atol=0)


def test_recalibrate_bn_strategy4_uses_the_quantized_model() -> None:
    _, gm = prep("tensorrt")
    x = images(16)
    calibrate(gm, x, 16)
    expected = _bn_inputs(gm, x, 16)  # the quantized model as calibrated: old fold, fixed weight qparams
    recalibrate_bn(gm, x, 16)
    after = bn_stats(gm)
    # (the BN statistics of the model were set on these very images, so upstream batch-statistic normalisation
    # during the pass equals the running one and every BN's input matches the calibrated model's)
    for name in ("conv1.bn", "conv2.bn"):
        t = expected[name][0]
        torch.testing.assert_close(after[name][0], t.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(after[name][1], t.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bn_fold", [0])
def test_recalibrate_bn_leaves_strategy_0_alone(bn_fold: int) -> None:
    _, gm = prep("tensorrt", bn_fold=bn_fold)
    x = images(16)
    calibrate(gm, x, 8)
    convbn = [m for m in gm.modules() if isinstance(m, QuantConvBn2d)]
    assert len(convbn) == 2 and all(m.strategy == bn_fold for m in convbn)
    before = bn_stats(gm)
    assert recalibrate_bn(gm, x, 8) == 1  # only the plain BN
    after = bn_stats(gm)
    assert sorted(after) == sorted(before)
    for name in before:
        if name == "bn3":
            assert not torch.allclose(after[name][0], before[name][0], atol=1e-2)
            continue
        assert torch.equal(after[name][0], before[name][0]) and torch.equal(after[name][1], before[name][1])
    if bn_fold == 0:
        assert all(m.bn is None for m in convbn)


def test_recalibrate_bn_without_bn_returns_zero() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(1), nn.Linear(32, 3)).eval()
    gm = prepare(model, load_profile("tensorrt"), w_bits=8, a_bits=8)
    calibrate(gm, images(4), 4)
    assert recalibrate_bn(gm, images(4)) == 0
