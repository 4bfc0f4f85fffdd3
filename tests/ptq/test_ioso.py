"""IOSO (seed 002) against formulas written here: the rectified softmax and eq. 9's input scale, the quantized weight
``|gamma^z| s (w_int) gamma^y`` for plain and grouped convs, the frozen deployable form, the output offset, block
reconstruction beating round-to-nearest, and App. F's integer-operation count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.models.tiny import TinyNet
from bench.ptq.calibrate import calibrate
from bench.ptq.frozen import FrozenWeightQuantizer
from bench.ptq.ioso import (
    GROUP_VALUES,
    IOSOQuantizer,
    groups_regularizer,
    harden_groups,
    isg_int_ops,
    make_quantizer,
    oso_parameters,
    output_bias,
    rectified_softmax,
)
from bench.ptq.recon import ReconSettings, Stage, freeze, reconstruct
from bench.ptq.units import capture, partition, quant_enabled
from bench.quant.insert import prepare, weighted_modules
from bench.quant.observers import build_observer
from bench.quant.profiles import load_profile
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec


def _fq(w: torch.Tensor, bits: int = 3) -> FakeQuantize:
    spec = QuantSpec(bits=bits, per_channel=True)
    fq = FakeQuantize(spec, "weight", build_observer("minmax", spec))
    fq.observing = True
    fq(w)
    fq.observing = False
    fq.compute_qparams()
    return fq


def test_rectified_softmax_and_initial_input_scale():
    r = torch.randn(5, 3)
    ref = torch.clamp(torch.softmax(r, -1) * 1.2 - 0.1, 0, 1)
    assert torch.equal(rectified_softmax(r), ref)
    assert GROUP_VALUES == (1.0, 1 - 1 / 16, 1 + 1 / 16)
    w = torch.randn(4, 6, 3, 3)
    q = IOSOQuantizer(_fq(w), w)
    assert torch.allclose(q.in_scale(), torch.ones(6))  # equal probabilities: the mean group value, 1


@pytest.mark.parametrize("groups", [1, 2])
def test_ioso_weight_is_scaled_codes_times_group_factors(groups):
    torch.manual_seed(0)
    w = torch.randn(4, 6 // groups, 3, 3)
    fq = _fq(w)
    q = IOSOQuantizer(fq, w, groups=groups)
    with torch.no_grad():
        q.out_scale.copy_(torch.tensor([1.1, -0.9, 1.0, 0.5]))
        q.group_logits.copy_(torch.randn(6, 3) * 3)
    q.soft, q.hard_groups = False, True
    s = fq.scale.reshape(-1, 1, 1, 1)
    codes = torch.clamp(torch.floor(w / s) + (q.alpha >= 0).float(), -4, 3)
    gy = torch.tensor(GROUP_VALUES)[q.group_logits.argmax(-1)]  # per input channel of the layer
    in_idx = torch.stack([torch.arange(6 // groups) + (o // (4 // groups)) * (6 // groups) for o in range(4)])
    ref = codes * s * q.out_scale.abs().reshape(-1, 1, 1, 1) * gy[in_idx].reshape(4, 6 // groups, 1, 1)
    assert torch.allclose(q(w), ref, atol=1e-6)
    frozen = q.freeze(w)
    assert isinstance(frozen, FrozenWeightQuantizer) and torch.allclose(frozen(w), ref, atol=1e-6)
    assert torch.equal(frozen.int_repr.float(), codes)
    counts = q.group_counts()
    assert sum(counts) == 6 and counts == torch.bincount(q.group_logits.argmax(-1), minlength=3).tolist()


def test_group_regulariser_vanishes_on_hard_assignments():
    w = torch.randn(4, 6, 1, 1)
    q = IOSOQuantizer(_fq(w), w)
    with torch.no_grad():
        q.group_logits.copy_(torch.tensor([[30.0, 0, 0]] * 6))
    assert q.group_regularizer(2.0).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        q.group_logits.zero_()
    p = 1.2 / 3 - 0.1
    assert q.group_regularizer(2.0).item() == pytest.approx(18 * (1 - (2 * p - 1) ** 2), rel=1e-5)


@pytest.mark.parametrize("strategy", [-1, 0, 4])
def test_output_bias_shifts_the_layer_output_one_to_one(strategy):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    fq = FakeQuantize(QuantSpec(bits=32), "weight")
    for m in (QuantConvBn2d(conv, bn, strategy, fq).eval(), QuantConv2d(nn.Conv2d(3, 4, 3, bias=False), fq),
              QuantLinear(nn.Linear(5, 4, bias=False), fq)):
        x = torch.randn(2, 5) if isinstance(m, QuantLinear) else torch.randn(2, 3, 6, 6)
        before = m(x).detach()
        p = output_bias(m)
        delta = torch.tensor([0.5, -1.0, 2.0, 0.0])
        with torch.no_grad():
            p.add_(delta)
        shape = [1, -1] + [1] * (before.dim() - 2)
        assert torch.allclose(m(x), before + delta.reshape(shape), atol=1e-5)


def test_ioso_block_reconstruction_beats_nearest_rounding(trained):
    gm = prepare(trained(TinyNet(), 16), load_profile("tensorrt"), w_bits=2, a_bits=4, first_last_bits=None)
    x = torch.randn(128, 1, 16, 16, generator=torch.Generator().manual_seed(3)).abs()
    calibrate(gm, x)
    block = next(u for u in partition(gm, "block") if len(u.layers) == 2)

    def err() -> float:
        with quant_enabled(gm, weights=False, acts=False):
            (y_fp,) = capture(gm, [block.output], x)
        with quant_enabled(gm, weights=True, acts=False):
            (y_q,) = capture(gm, [block.output], x)
        return (y_q - y_fp).pow(2).mean().item()

    before = err()
    stage = Stage("ioso", quantizer=make_quantizer(), extra=lambda mods: oso_parameters(mods, groups=True),
                  extra_reg=groups_regularizer)
    reconstruct(gm, x, stage, ReconSettings(iters=150, lr=1e-2), progress=False, only=[block.name])
    layers = [m for n, m in weighted_modules(gm) if n in block.layers]
    assert all(isinstance(m.weight_fq, IOSOQuantizer) for m in layers)
    assert any(not torch.allclose(m.weight_fq.out_scale, torch.ones_like(m.weight_fq.out_scale)) for m in layers)
    harden_groups(gm)
    assert freeze(gm) == 2
    after = err()
    assert after < before, (after, before)


def test_integer_operation_count_follows_appendix_f():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ReLU()
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.dw(self.act(self.bn(self.c1(x))))
            return self.fc(torch.flatten(self.pool(y), 1))

    gm = prepare(Net().eval(), load_profile("tensorrt"), w_bits=4, a_bits=8)
    calibrate(gm, torch.randn(4, 1, 8, 8))
    ops = isg_int_ops(gm, torch.randn(1, 1, 8, 8))
    c1 = 4 * 8 * 8 * (2 * 9 - 1)  # outputs x (k mul + k - 1 add), k = 1 x 3 x 3
    dw = 4 * 8 * 8 * (2 * 9 - 1)  # depthwise: k = 1 x 3 x 3 per output
    fc = 3 * (2 * 4 - 1)
    assert ops["int_ops"] == c1 + dw + fc
    assert ops["isg_ops"] == (4 * 8 * 8 + 3) * 4  # 2 non-unit groups: a shift and an add each; no ISG on dw
    assert ops["isg_ops_ratio"] == pytest.approx(ops["isg_ops"] / ops["int_ops"])
