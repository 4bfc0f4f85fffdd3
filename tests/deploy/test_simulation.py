"""Simulation = target: fake quantization computes what the integer executor computes, code for code, on every
profile (tiny: conv-BN-ReLU stem, basic block with identity shortcut, inverted residuals with depthwise convs and a
residual add, global average pooling, linear), at W8A8 and W4A4. It rounds activations like the target
(``deploy.rounding``), adds the integer bias ``round(b / (s_x s_w))`` and requantizes pooled sums as integers."""

from __future__ import annotations

import pytest
import torch

from bench.deploy.check import code_mismatches
from bench.deploy.executor import IntegerExecutor
from bench.quant.profiles import profile_names


@pytest.mark.parametrize("profile", profile_names())
@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_codes_are_the_integer_targets(profile, bits, tiny_calibrated):
    gm, p = tiny_calibrated(profile, bits)
    ex = IntegerExecutor(gm, p.requant, p.rounding, float_between=p.graph == 1)
    torch.manual_seed(1)
    x = torch.randn(128, 1, 16, 16)
    rows = code_mismatches(gm, ex, x)
    assert len(rows) >= 10  # every activation quantizer was compared
    fake, real = gm(x), ex(x)
    assert torch.equal(fake.argmax(1), real.argmax(1))
    if p.requant == "shift":
        # power-of-two scales: every product and sum is exact in float32, so the simulation is bit exact
        assert all(r["mismatch"] == 0.0 for r in rows), rows
        assert torch.equal(fake, real)
    else:
        # only float32 rounding of the simulated conv sums (and the target's 31-bit multiplier) can tip a value that
        # sits within ~1e-7 of a half-way point; such a flip then moves the layers after it by a code or two
        assert all(r["mismatch"] <= 2e-3 and r["max_code_diff"] <= 3 for r in rows), rows
        exact = ((fake - real).abs() <= 1e-6 * fake.abs().max()).all(dim=1).double().mean()
        assert exact >= 0.9  # logits equal to float precision on nearly every image (a flip moves one logit row)


def test_the_target_rounding_decides_exact_ties():
    from bench.quant.fake import fake_quantize

    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    one, zero = torch.tensor(1.0), torch.tensor(0)
    assert fake_quantize(x, one, zero, -8, 7).tolist() == [-2, -2, 0, 0, 2, 2]
    assert fake_quantize(x, one, zero, -8, 7, rounding="half_up").tolist() == [-2, -1, 0, 1, 2, 3]
    assert fake_quantize(x, one, zero, -8, 7, rounding="half_away").tolist() == [-3, -2, -1, 1, 2, 3]
    # straight-through gradient inside the grid, none where clamped
    xg = torch.tensor([0.5, 9.0, -9.0], requires_grad=True)
    fake_quantize(xg, one, zero, -8, 7, rounding="half_up").sum().backward()
    assert xg.grad.tolist() == [1.0, 0.0, 0.0]


def test_a_layer_adds_the_integer_bias_of_its_input_and_weight_grids():
    from torch import nn

    from bench.ptq.calibrate import calibrate
    from bench.quant.insert import prepare, quantizers
    from bench.quant.profiles import load_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.0123, -0.0456, 0.0789]))
    gm = prepare(model, load_profile("tensorrt"), w_bits=4, a_bits=4, first_last_bits=None)
    calibrate(gm, torch.randn(32, 2, 4, 4), 32)
    gm.eval()
    conv = gm.get_submodule("0")
    fq_x = dict(quantizers(gm))[next(n for n, f in quantizers(gm) if f.kind == "act")]
    assert conv.input_quantizer is fq_x
    x = torch.randn(4, 2, 4, 4)
    xq = fq_x(x)
    wq = conv.weight_fq(conv.conv.weight)
    step = fq_x.scale.double() * conv.weight_fq.scale.double()  # s_x s_w per output channel
    b_int = torch.round(model[0].bias.double() / step)
    want = nn.functional.conv2d(xq.double(), wq.double(), (b_int * step), padding=1)
    got = conv(xq)
    assert torch.allclose(got.double(), want, atol=1e-6)
    assert not torch.allclose(got.double(), nn.functional.conv2d(xq.double(), wq.double(), model[0].bias.double(),
                                                                 padding=1), atol=1e-6)  # not the float bias


def test_a_float_layer_clamps_the_value_of_an_unfolded_bn():
    """Academic (BN kept in float, graph 1): ReLU6 acts on the dequantized BN output in float. The accumulator grid
    ``a s_x s_w`` of a large ``gamma / sigma`` is coarser than the output grid, so clamping its codes at
    ``floor(6 / (a s_x s_w))`` would land a whole output code below 6 (efficientnet_lite0_mini's first depthwise conv:
    89% prediction agreement at W4A4 before)."""
    from torch import nn

    from bench.ptq.calibrate import calibrate
    from bench.quant.insert import prepare
    from bench.quant.profiles import load_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(), nn.Conv2d(4, 4, 1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([40.0, 55.0, 70.0, 90.0]))  # gamma / sigma ~ 50: a coarse accumulator grid
        model[1].running_var.fill_(1.0)
    p = load_profile("academic")
    assert p.bn_fold == -1 and p.graph == 1
    gm = prepare(model, p, w_bits=4, a_bits=4, first_last_bits=None)
    calibrate(gm, torch.randn(64, 1, 8, 8), 64)
    gm.eval()
    ex = IntegerExecutor(gm, p.requant, p.rounding, float_between=True)
    x = torch.randn(64, 1, 8, 8)
    trace: dict = {}
    ex.run(x, trace)
    relu6_fq = list(trace)[1]  # after the input's quantizer: the ReLU6 output's
    it = trace[relu6_fq]
    assert int(it.q.max()) == it.grid[1] and bool((it.q == it.grid[1]).double().mean() > 0.05)  # clamped at 6 often
    rows = code_mismatches(gm, ex, x)
    assert rows and all(r["mismatch"] == 0.0 for r in rows), rows
