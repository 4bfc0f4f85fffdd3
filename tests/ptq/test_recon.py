"""Reconstruction units, AdaRound rounding and the reconstruction loop, against references written here: the
rectified sigmoid and its regulariser, round-to-nearest recovered from the initial rounding variables, and single
layers / blocks whose output reconstruction error (computed directly with F.conv2d) beats round-to-nearest on the
same grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.models.tiny import TinyNet
from bench.ptq.calibrate import calibrate
from bench.ptq.frozen import FrozenWeightQuantizer
from bench.ptq.recon import ReconActQuantizer, ReconSettings, Stage, beta_at, freeze, rec_loss, reconstruct
from bench.ptq.rounding import AdaRoundQuantizer, inverse_rectified_sigmoid, rectified_sigmoid, round_regularizer
from bench.ptq.units import capture, partition, quant_enabled, subgraph_module
from bench.quant.insert import prepare, weighted_modules
from bench.quant.observers import build_observer
from bench.quant.profiles import load_profile
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec
from tests.quant.compiler import needs_compiler


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).abs()


def test_rectified_sigmoid_and_regulariser_match_the_formulas():
    v = torch.linspace(-8, 8, 101)
    ref = torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1)
    assert torch.equal(rectified_sigmoid(v), ref)
    h = torch.tensor([0.0, 1.0, 0.5, 0.25])
    assert round_regularizer(h, 2.0).item() == pytest.approx(0 + 0 + 1 + (1 - 0.25))
    frac = torch.rand(1000) * 0.98 + 0.01
    assert torch.allclose(rectified_sigmoid(inverse_rectified_sigmoid(frac)), frac, atol=1e-5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_adaround_starts_at_the_float_weight_and_hardens_to_nearest(per_channel):
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    spec = QuantSpec(bits=4, per_channel=per_channel)
    fq = FakeQuantize(spec, "weight", build_observer("minmax", spec))
    fq.observing = True
    fq(w)
    fq.observing = False
    fq.compute_qparams()
    q = AdaRoundQuantizer(fq, w)
    s = fq.scale.reshape(-1, 1, 1, 1) if per_channel else fq.scale
    inside = (w / s >= -8) & (w / s < 7)
    assert torch.allclose(q(w)[inside], w[inside], atol=1e-5)  # soft rounding = the float weight on the grid
    q.soft = False
    rtn = torch.clamp(torch.floor(w / s + 0.5), -8, 7) * s  # round half up, as V >= 0 <=> h >= 0.5
    assert torch.allclose(q(w), rtn, atol=1e-6)
    frozen = q.freeze(w)
    assert isinstance(frozen, FrozenWeightQuantizer) and torch.allclose(frozen(w), rtn, atol=1e-6)
    assert frozen.int_repr.min() >= -8 and frozen.int_repr.max() <= 7


def test_beta_schedule_and_loss():
    s = ReconSettings(iters=100, warmup=0.2, beta_start=20, beta_end=2)
    assert beta_at(0, s) is None and beta_at(19, s) is None
    assert beta_at(20, s) == pytest.approx(20) and beta_at(100, s) == pytest.approx(2)
    assert beta_at(60, s) == pytest.approx(11)
    pred, tgt = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    assert rec_loss(pred, tgt).item() == pytest.approx(((pred - tgt) ** 2).sum(1).mean().item(), rel=1e-6)


def test_units_of_the_tiny_net_and_their_subgraphs(trained):
    gm = prepare(trained(TinyNet()), load_profile("tensorrt"), w_bits=4, a_bits=4)
    layers = partition(gm, "layer")
    assert [u.layers[0] for u in layers] == [n for n, _ in weighted_modules(gm)]
    blocks = partition(gm, "block")
    sizes = [len(u.layers) for u in blocks]
    assert sorted(sum((u.layers for u in blocks), [])) == sorted(n for n, _ in weighted_modules(gm))
    assert 2 in sizes and 3 in sizes  # the basic block and the inverted residual with its skip
    x = _images(8, 0)
    calibrate(gm, x)
    for unit in blocks:
        inp, out = capture(gm, [unit.input, unit.output], x)
        sub = subgraph_module(gm, [unit.input], [unit.output])
        assert torch.allclose(sub(inp), out, atol=1e-6)
    with pytest.raises(ValueError, match="unit mode"):
        partition(gm, "network")


def _layer_error(gm, unit, x_fp, x_q, y_fp):
    with torch.no_grad():
        return rec_loss(subgraph_module(gm, [unit.input], [unit.output])(x_q), y_fp).item()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_adaround_single_layer_beats_nearest_rounding(bits):
    """A conv + ReLU: ||relu(W x) - relu(W~ x)||^2 after AdaRound < with round-to-nearest on the same grid."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), conv, nn.ReLU()).eval()
    gm = prepare(model, load_profile("tensorrt"), w_bits=bits, a_bits=32, first_last_bits=None)
    x = _images(128, 2)[:, :, :12, :12]
    calibrate(gm, x)
    layer = dict(weighted_modules(gm))["2"]
    w_rtn = layer.weight_fq(layer.conv.weight).detach()
    h = torch.relu(F.conv2d(x, model[0].weight, model[0].bias, padding=1))
    # the first layer is quantized too: the second sees its quantized output as input
    with torch.no_grad():
        first = dict(weighted_modules(gm))["0"]
        hq = torch.relu(F.conv2d(x, first.weight_fq(first.conv.weight), first.conv.bias, padding=1))
    target = torch.relu(F.conv2d(h, conv.weight, conv.bias, padding=1))
    err_rtn = (torch.relu(F.conv2d(hq, w_rtn, conv.bias, padding=1)) - target).pow(2).mean().item()
    stats = reconstruct(gm, x, Stage("adaround", units="layer"), ReconSettings(iters=300, lr=1e-2),
                        progress=False)
    assert len(stats) == 2
    freeze(gm)
    with torch.no_grad():
        hq = torch.relu(F.conv2d(x, first.weight_fq(first.conv.weight), first.conv.bias, padding=1))
        w_ada = layer.weight_fq(layer.conv.weight)
    codes = torch.round(w_ada / layer.weight_fq.scale.reshape(-1, 1, 1, 1))
    assert torch.allclose(codes * layer.weight_fq.scale.reshape(-1, 1, 1, 1), w_ada, atol=1e-6)  # on the grid
    assert ((codes - torch.round(w_rtn / layer.weight_fq.scale.reshape(-1, 1, 1, 1))).abs() <= 1).all()
    err_ada = (torch.relu(F.conv2d(hq, w_ada, conv.bias, padding=1)) - target).pow(2).mean().item()
    assert err_ada < 0.9 * err_rtn, (err_ada, err_rtn)


def _block_error(gm, unit, x, acts):
    with quant_enabled(gm, weights=False, acts=False):
        (y_fp,) = capture(gm, [unit.output], x)
    with quant_enabled(gm, weights=True, acts=acts):
        (y_q,) = capture(gm, [unit.output], x)
    return (y_q - y_fp).pow(2).mean().item()


@pytest.mark.parametrize("stage", ["brecq", "qdrop"])
def test_block_reconstruction_beats_nearest_rounding(stage, trained):
    gm = prepare(trained(TinyNet()), load_profile("tensorrt"), w_bits=3, a_bits=4, first_last_bits=None)
    x = _images(128, 3)[:, :, :16, :16]
    calibrate(gm, x)
    blocks = partition(gm, "block")
    block = next(u for u in blocks if len(u.layers) == 2)  # the basic block
    acts = stage == "qdrop"
    before = _block_error(gm, block, x, acts)
    st = (Stage("qdrop", acts_on=True, learn_acts=True, drop_prob=0.5) if acts else Stage("brecq"))
    stats = reconstruct(gm, x, st, ReconSettings(iters=150, lr=1e-2, act_lr=1e-3), progress=False,
                        only=[block.name])
    assert [s["unit"] for s in stats] == [block.name] and stats[0]["loss_after"] < stats[0]["loss_before"]
    freeze(gm)
    after = _block_error(gm, block, x, acts)
    assert after < before, (after, before)


def test_learned_step_sizes_are_written_back_and_qdrop_drops(trained):
    spec = QuantSpec(bits=4, signed=False, symmetric=False)
    src = FakeQuantize(spec, "act", None)
    src.set_qparams(torch.tensor([0.1]), torch.tensor([3]), False)
    q = ReconActQuantizer(src)
    x = torch.rand(10000) * 2
    q.drop_prob = 1.0
    assert torch.equal(q(x), x)
    q.drop_prob = 0.0
    ref = (torch.clamp(torch.round(x / 0.1) + 3, 0, 15) - 3) * 0.1
    assert torch.allclose(q(x), ref, atol=1e-6)
    q.drop_prob = 0.5
    kept = (q(x) == x).float().mean().item()
    assert 0.45 < kept < 0.6  # about half dropped (plus the elements RTN leaves unchanged)

    gm = prepare(trained(TinyNet()), load_profile("acl"), w_bits=4, a_bits=4)
    x = _images(64, 4)
    calibrate(gm, x)
    acts = {n: fq.scale.clone() for n, fq in gm.named_modules() if isinstance(fq, FakeQuantize) and fq.kind == "act"}
    reconstruct(gm, x, Stage("acts", rounding=False, acts_on=True, learn_acts=True),
                ReconSettings(iters=30, act_lr=1e-2), progress=False)
    after = {n: fq.scale for n, fq in gm.named_modules() if isinstance(fq, FakeQuantize) and fq.kind == "act"}
    assert set(after) == set(acts)  # the original quantizers are back in place
    assert all(type(gm.get_submodule(n)) is FakeQuantize for n in after)
    assert any(not torch.equal(acts[n], after[n]) for n in acts)


@needs_compiler
@pytest.mark.parametrize("hw, drop", [("tensorrt", 0.0), ("acl", 0.0), ("acl", 0.5)])
def test_learned_step_sizes_are_the_same_with_the_fused_kernels(trained, hw, drop):
    # BRECQ's / QDrop's learned activation steps (the raw step taken through abs / clamp_min inside LSQ's fused node,
    # a learned zero point on the asymmetric ACL grid, QDrop's drop on top): fused=true gives the eager numbers
    from bench.quant import fused_lsq

    res = []
    fused_lsq._checked.clear()
    try:
        for fused in (False, True):
            fused_lsq.set_enabled(fused)
            torch.manual_seed(0)  # TinyNet's initial weights
            gm = prepare(trained(TinyNet()), load_profile(hw), w_bits=4, a_bits=4)
            x = _images(64, 4)
            calibrate(gm, x)
            torch.manual_seed(1)  # QDrop's masks (torch.rand_like)
            stats = reconstruct(gm, x, Stage("acts", rounding=False, acts_on=True, learn_acts=True, drop_prob=drop),
                                ReconSettings(iters=12, batch_size=16, act_lr=1e-2), progress=False)
            res.append((stats, [(n, fq.scale, fq.zero_point) for n, fq in gm.named_modules()
                                if isinstance(fq, FakeQuantize) and fq.kind == "act"]))
        assert fused_lsq.enabled() and fused_lsq._checked  # the fused node ran, probed, and stayed on
        assert (drop > 0) == (("rand_select",) in fused_lsq._checked)  # QDrop's torch masks: the fused route
    finally:
        fused_lsq.set_enabled(False)
    (eager_stats, eager_q), (fused_stats, fused_q) = res
    assert eager_stats == fused_stats and len(eager_q) == len(fused_q)
    for (n, s, z), (m, t, y) in zip(eager_q, fused_q, strict=True):
        assert n == m and torch.equal(s, t) and torch.equal(z, y), n
    assert any(st["loss_after"] != st["loss_before"] for st in eager_stats)  # the steps did move


def test_fisher_stage_runs_and_weights_have_mean_one(trained):
    from bench.ptq.recon import _fisher_weights

    gm = prepare(trained(TinyNet()), load_profile("academic"), w_bits=3, a_bits=8)
    x = _images(32, 5)
    calibrate(gm, x)
    unit = partition(gm, "block")[1]
    w = _fisher_weights(gm, gm, unit, x, acts_on=False, batch_size=16)
    (y,) = capture(gm, [unit.output], x)
    assert w.shape == y.shape and w.mean().item() == pytest.approx(1.0, rel=1e-4) and (w >= 0).all()
    stats = reconstruct(gm, x, Stage("brecq", fisher=True), ReconSettings(iters=5), progress=False)
    assert len(stats) == len(partition(gm, "block"))
