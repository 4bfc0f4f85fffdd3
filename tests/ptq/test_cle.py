"""Cross-layer equalization against references written here: BN folded by hand (Eq. 4), pair scales
``sqrt(r1 / r2)``, depthwise triples at ``cbrt(r1 r2 r3)``, ReLU6 bounds ``6 / s``, absorbed biases
``max(0, beta - 3 gamma)``; function preserved on TinyNet and the five minis; per-tensor W8 error reduced."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
from torch import nn

from bench.models import build_model, trace
from bench.models.tiny import TinyNet
from bench.ptq.calibrate import calibrate
from bench.ptq.cle import ChannelClip, FoldedConv2d, equalize
from bench.quant.debug import set_mode, sqnr_db
from bench.quant.insert import prepare
from bench.quant.profiles import load_profile
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d

PROFILES = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]
MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


def with_bn_stats(model: nn.Module, shape: tuple[int, ...], seed: int = 0, gamma: tuple[float, float] = (0.5, 1.5),
                  beta: float = 0.5) -> nn.Module:
    """Random affine BN parameters, then running statistics of the data distribution (cumulative average of a few
    train-mode batches), so each BN's output is roughly N(beta, gamma^2) on inputs like ``randn(shape)``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(*gamma, generator=g)
                m.bias.uniform_(-beta, beta, generator=g)
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for _ in range(3):
            model(torch.randn(*shape, generator=g))
    return model.eval()


def data(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (4) by hand, in float64."""
    f = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = conv.weight.detach().double() * f.reshape(-1, 1, 1, 1)
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    return w, bn.bias.detach().double() + (b - bn.running_mean.double()) * f


def out_range(w: torch.Tensor) -> torch.Tensor:
    return w.detach().double().abs().flatten(1).amax(1)


def in_range(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """max |W| over the weights reading each input channel, written with an explicit loop over channels."""
    w = w.detach().double().abs()
    cin_g = w.shape[1]
    cout_g = w.shape[0] // groups
    out = []
    for i in range(cin_g * groups):
        g, j = divmod(i, cin_g)
        out.append(w[g * cout_g : (g + 1) * cout_g, j].max())
    return torch.stack(out)


def spread(w: torch.Tensor) -> float:
    r = out_range(w)
    return float(r.max() / r.min())


def assert_same_function(a: nn.Module, b: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> float:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    scale = ya.abs().max().item()
    torch.testing.assert_close(yb, ya, rtol=tol, atol=tol * scale)
    return (ya - yb).abs().max().item() / scale


class Pair(nn.Module):
    """conv-bn-relu -> conv(k, groups)-bn."""

    def __init__(self, k: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = act()
        self.conv2 = nn.Conv2d(8, 6 if groups == 1 else 8, k, padding=k // 2, groups=groups)
        self.bn2 = nn.BatchNorm2d(self.conv2.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class Triple(nn.Module):
    """pw-bn-relu6 -> dw-bn-relu6 -> pw-bn (a MobileNetV2 block without the skip)."""

    def __init__(self, shared_act: bool = False) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = self.act1 if shared_act else nn.ReLU6()
        self.pwl = nn.Conv2d(8, 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.pw(x)))
        return self.bn3(self.pwl(self.act2(self.bn2(self.dw(y)))))


SMALL = (16, 3, 8, 8)


# ---------------------------------------------------------------- BN folding, pairs, triples


def test_pair_folds_bn_and_equalises_ranges_to_reference() -> None:
    torch.manual_seed(0)
    model = with_bn_stats(Pair(), SMALL, gamma=(0.05, 3.0))
    gm, rep = equalize(model, absorb_bias=False)
    assert isinstance(gm, fx.GraphModule) and not gm.training and model.bn1.running_mean is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    a, b = gm.get_submodule("conv1"), gm.get_submodule("conv2")
    assert isinstance(a, FoldedConv2d) and isinstance(b, FoldedConv2d)
    assert (rep["folded_bn"], rep["cle_pairs"], rep["cle_triples"], rep["cle_chains"]) == (2, 1, 0, 1)
    wa, ba = folded(model.conv1, model.bn1)
    wb, bb = folded(model.conv2, model.bn2)
    s = torch.sqrt(out_range(wa) / in_range(wb))
    assert s.max() / s.min() > 3  # the BN parameters made the ranges unequal
    torch.testing.assert_close(a.weight.double(), wa / s.reshape(-1, 1, 1, 1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.bias.double(), ba / s, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.weight.double(), wb * s.reshape(1, -1, 1, 1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.bias.double(), bb, rtol=1e-6, atol=1e-7)
    # r1' == r2' per channel, and the BN description of conv1's output is scaled with it
    torch.testing.assert_close(out_range(a.weight), in_range(b.weight), rtol=1e-5, atol=0)
    torch.testing.assert_close(a.bn_beta.double(), model.bn1.bias.double() / s, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.bn_gamma.double(), model.bn1.weight.double() / s, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.bn_gamma, model.bn2.weight.detach())  # the last layer's output is not scaled
    assert_same_function(model, gm, data(SMALL))
    assert spread(a.weight) < spread(wa)


def test_grouped_conv_pair_uses_the_group_column_of_each_input_channel() -> None:
    torch.manual_seed(1)
    model = with_bn_stats(Pair(k=3, groups=2), SMALL, gamma=(0.05, 3.0))
    gm, rep = equalize(model, absorb_bias=False)
    assert rep["cle_pairs"] == 1
    a, b = gm.get_submodule("conv1"), gm.get_submodule("conv2")
    wa, _ = folded(model.conv1, model.bn1)
    wb, _ = folded(model.conv2, model.bn2)
    s = torch.sqrt(out_range(wa) / in_range(wb, groups=2))
    torch.testing.assert_close(out_range(a.weight), out_range(wa) / s, rtol=1e-5, atol=0)
    torch.testing.assert_close(in_range(b.weight, groups=2), out_range(a.weight), rtol=1e-5, atol=0)
    assert_same_function(model, gm, data(SMALL))


def test_depthwise_triple_closed_form_and_relu6_bounds() -> None:
    torch.manual_seed(2)
    model = with_bn_stats(Triple(), SMALL, gamma=(0.05, 3.0))
    gm, rep = equalize(model, absorb_bias=False)
    assert (rep["cle_pairs"], rep["cle_triples"], rep["relu6_to_clip"]) == (0, 1, 2)
    r1 = out_range(folded(model.pw, model.bn1)[0])
    r2 = out_range(folded(model.dw, model.bn2)[0])
    r3 = in_range(folded(model.pwl, model.bn3)[0])
    cb = (r1 * r2 * r3) ** (1 / 3)
    for name in ("pw", "dw"):
        torch.testing.assert_close(out_range(gm.get_submodule(name).weight), cb, rtol=1e-5, atol=0)
    torch.testing.assert_close(in_range(gm.get_submodule("pwl").weight), cb, rtol=1e-5, atol=0)
    # ReLU6 -> ChannelClip with 6 / s: s12 = r1 / cb after pw, s23 = cb / r3 after dw
    c1, c2 = gm.get_submodule("act1"), gm.get_submodule("act2")
    assert isinstance(c1, ChannelClip) and isinstance(c2, ChannelClip)
    torch.testing.assert_close(c1.upper.double(), 6 * cb / r1, rtol=1e-5, atol=0)
    torch.testing.assert_close(c2.upper.double(), 6 * r3 / cb, rtol=1e-5, atol=0)
    assert_same_function(model, gm, data(SMALL) * 3)  # large inputs: the clips are active


def test_shared_relu6_module_gets_one_channel_clip_per_call_site() -> None:
    torch.manual_seed(3)
    model = with_bn_stats(Triple(shared_act=True), SMALL, gamma=(0.05, 3.0))
    gm, rep = equalize(model, absorb_bias=False)
    clips = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), ChannelClip)]
    assert len(clips) == 2 and clips[0].target != clips[1].target
    assert not torch.equal(gm.get_submodule(clips[0].target).upper, gm.get_submodule(clips[1].target).upper)
    assert_same_function(model, gm, data(SMALL) * 3)


def test_channel_clip_is_relu6_scaled() -> None:
    clip = ChannelClip(3)
    s = torch.tensor([0.5, 2.0, 7.0])
    clip.upper.div_(s)
    x = torch.randn(4, 3, 5, 5) * 10
    torch.testing.assert_close(clip(x / s.reshape(1, -1, 1, 1)), nn.ReLU6()(x) / s.reshape(1, -1, 1, 1))
    torch.testing.assert_close(clip(x[:, :, 0, 0] / s), nn.ReLU6()(x[:, :, 0, 0]) / s)  # (N, C) input
    gm = trace(nn.Sequential(clip))
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_module", "output"]  # a leaf for the graph pass


def test_silu_and_residual_adds_are_not_equalised() -> None:
    torch.manual_seed(4)
    model = with_bn_stats(Pair(act=nn.SiLU), SMALL)
    gm, rep = equalize(model)
    assert (rep["cle_pairs"], rep["cle_triples"], rep["absorbed_channels"]) == (0, 0, 0)
    assert rep["folded_bn"] == 2
    assert_same_function(model, gm, data(SMALL))


def test_linear_pair() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-1, 1, 8).reshape(-1, 1))
    gm, rep = equalize(model)
    assert rep["cle_pairs"] == 1 and rep["folded_bn"] == 0
    torch.testing.assert_close(out_range(gm.get_submodule("0").weight), in_range(gm.get_submodule("2").weight),
                               rtol=1e-5, atol=0)
    assert_same_function(model, gm, torch.randn(10, 6))


# ---------------------------------------------------------------- TinyNet and the minis


def test_tinynet_chains_stop_at_adds_and_keep_the_function() -> None:
    torch.manual_seed(6)
    model = with_bn_stats(TinyNet(), (16, 1, 16, 16), gamma=(0.2, 2.0))
    gm, rep = equalize(model, absorb_bias=False)
    # basic block conv1 -> conv2 (conv2 feeds the add); ir1 triple (pwl feeds the add); ir2 triple, then its
    # pwl -> global pool -> flatten -> fc; the stem (its ReLU output also feeds the add) and ir*_pw (read an add) stay
    assert (rep["cle_chains"], rep["cle_pairs"], rep["cle_triples"], rep["folded_bn"]) == (3, 2, 2, 9)
    assert set(rep["range_spread"]) == {
        "b1_conv1", "b1_conv2", "ir1_pw", "ir1_dw", "ir1_pwl", "ir2_pw", "ir2_dw", "ir2_pwl", "fc"
    }
    assert rep["relu6_to_clip"] == 4
    torch.testing.assert_close(gm.get_submodule("stem_conv").weight.double(), folded(model.stem_conv, model.stem_bn)[0])
    assert_same_function(model, gm, data((8, 1, 16, 16)) * 2)
    assert rep["range_spread_after"] < rep["range_spread_before"]


@pytest.fixture(scope="module")
def minis() -> dict[str, nn.Module]:
    out = {}
    for i, name in enumerate(MINIS):
        torch.manual_seed(i)
        out[name] = with_bn_stats(build_model(name, num_classes=10, in_chans=1), (8, 1, 32, 32), seed=i)
    return out


def _folded_named(model: nn.Module) -> dict[str, torch.Tensor]:
    """Folded weights by hand, keyed by the conv's module path (the traced model keeps those paths)."""
    convs = dict(model.named_modules())
    out = {}
    gm = trace(copy.deepcopy(model))
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(convs.get(node.target), nn.Conv2d):
            users = list(node.users)
            bn = convs.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
            if isinstance(bn, nn.BatchNorm2d):
                out[node.target] = folded(convs[node.target], bn)[0]
        elif node.op == "call_module" and isinstance(convs.get(node.target), nn.Linear):
            out[node.target] = convs[node.target].weight.detach().double()
    return out


@pytest.mark.parametrize("name", MINIS)
def test_minis_same_function_and_smaller_range_spread(name: str, minis: dict[str, nn.Module]) -> None:
    model = minis[name]
    before = copy.deepcopy(model.state_dict())
    gm, rep = equalize(model, absorb_bias=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    rel = assert_same_function(model, gm, data((8, 1, 32, 32)) * 2, tol=2e-5)
    assert rel < 2e-5
    assert rep["cle_pairs"] + rep["cle_triples"] >= 4
    # spread of the per-output-channel ranges of the equalised layers, from the weights themselves
    ref = _folded_named(model)
    layers = list(rep["range_spread"])
    sb = [spread(ref[n]) for n in layers]
    sa = [spread(gm.get_submodule(n).weight) for n in layers]
    # (random weights with BN gamma in [0.5, 1.5]: ResNet/RegNet 0.6-0.8x, the depthwise minis about 0.3x)
    assert sum(sa) / len(sa) < (0.5 if "net_" in name and "res" not in name else 0.9) * sum(sb) / len(sb)
    assert rep["range_spread_before"] == pytest.approx(sum(sb) / len(sb), rel=1e-4)
    assert rep["range_spread_after"] == pytest.approx(sum(sa) / len(sa), rel=1e-4)


@pytest.mark.parametrize(("name", "min_db"), [("mobilenetv2_mini", 25), ("resnet50_mini", 40)])
def test_minis_absorption_changes_outputs_only_slightly(name: str, min_db: float) -> None:
    torch.manual_seed(10)
    # high biases: beta up to 3 with gamma down to 0.2, so beta - 3 gamma > 0 in many channels; statistics from
    # larger batches, since absorption trusts N(beta, gamma^2) to describe the eval-mode pre-activations (with
    # 8-image batches the 2x2 px stages of the mobile mini are described badly and SQNR drops to about 20 dB)
    model = with_bn_stats(build_model(name, num_classes=10, in_chans=1), (64, 1, 32, 32), gamma=(0.2, 1.0), beta=3.0)
    x = torch.randn(16, 1, 32, 32)  # the distribution the BN statistics were taken on
    plain, _ = equalize(model, absorb_bias=False)
    gm, rep = equalize(model, absorb_bias=True)
    assert rep["absorbed_channels"] >= 20
    with torch.no_grad():
        y, y0, ya = model(x), plain(x), gm(x)
    assert sqnr_db(y, y0) > 100  # equalisation alone: float rounding
    assert min_db < sqnr_db(y, ya) < 100  # absorption: an approximation, close


# ---------------------------------------------------------------- high-bias absorption


def test_absorbed_bias_is_max_beta_minus_3_gamma() -> None:
    torch.manual_seed(7)
    model = with_bn_stats(Pair(k=1), SMALL)
    with torch.no_grad():  # high biases on half the channels: beta - 3 gamma > 0 there
        model.bn1.bias.copy_(torch.tensor([3.0, -1.0, 2.0, 0.5, 4.0, 0.0, 1.0, 2.5]))
        model.bn1.weight.copy_(torch.tensor([0.5, 1.0, 0.2, 1.0, 0.8, 0.3, 0.1, 2.0]))
    with_bn_stats_keep_affine(model)
    plain, _ = equalize(model, absorb_bias=False)
    gm, rep = equalize(model, absorb_bias=True)
    a0, b0 = plain.get_submodule("conv1"), plain.get_submodule("conv2")
    a, b = gm.get_submodule("conv1"), gm.get_submodule("conv2")
    # the equalised BN parameters are beta / s, gamma / s (s > 0): c = max(0, beta - 3 gamma) / s
    s = torch.sqrt(out_range(folded(model.conv1, model.bn1)[0]) / in_range(folded(model.conv2, model.bn2)[0]))
    c = (model.bn1.bias.double() - 3 * model.bn1.weight.double()).clamp_min(0) / s
    assert int((c > 0).sum()) == rep["absorbed_channels"] == 4
    torch.testing.assert_close(a.bias.double(), a0.bias.double() - c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.bn_beta.double(), a0.bn_beta.double() - c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.weight, a0.weight)
    expected = b0.bias.double() + b0.weight.double()[:, :, 0, 0] @ c
    torch.testing.assert_close(b.bias.double(), expected, rtol=1e-5, atol=1e-6)
    # exact where the pre-activation stays above c; on data like the statistics' the change is small
    x = data(SMALL)
    with torch.no_grad():
        y0, y = plain(x), gm(x)
    assert 0 < (y - y0).abs().max() and sqnr_db(y0, y) > 30


def with_bn_stats_keep_affine(model: nn.Module) -> None:
    """Re-estimate running statistics for the current affine parameters (inputs like ``data(SMALL)``)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
        model.train()
        for _ in range(3):
            model(torch.randn(*SMALL, generator=g))
    model.eval()


def test_absorption_into_padded_conv_only_on_request() -> None:
    torch.manual_seed(8)
    model = with_bn_stats(Pair(k=3), SMALL)
    with torch.no_grad():
        model.bn1.bias.fill_(2.0)
        model.bn1.weight.fill_(0.3)
    with_bn_stats_keep_affine(model)
    gm, rep = equalize(model)
    assert rep["absorbed_channels"] == 0 and rep["absorb_skipped_padded"] == 8
    gm2, rep2 = equalize(model, absorb_into_padded=True)
    assert rep2["absorbed_channels"] == 8
    plain, _ = equalize(model, absorb_bias=False)
    x = data(SMALL)
    with torch.no_grad():
        y0, y, y2 = plain(x), gm(x), gm2(x)
    torch.testing.assert_close(y, y0, rtol=0, atol=0)  # nothing absorbed
    # interior pixels mostly agree (where the pre-activations read stay above c), every border pixel moves
    err = (y2 - y0).abs()
    interior = err[:, :, 1:-1, 1:-1]
    assert interior.median() < 1e-5 and (interior > 1e-4).float().mean() < 0.25
    assert err[:, :, 0].min() > 1e-3 and err[:, :, 0].mean() > 100 * interior.mean()


def test_absorption_through_channel_clip_lowers_the_bound() -> None:
    torch.manual_seed(9)
    model = Triple()
    with torch.no_grad():
        model.bn1.bias.uniform_(2.0, 3.0)
        model.bn1.weight.fill_(0.2)
    with_bn_stats_keep_affine(model)
    plain, _ = equalize(model, absorb_bias=False)
    gm, rep = equalize(model, absorb_into_padded=True)  # pw -> dw absorbs into the (padded) dw
    c = plain.get_submodule("pw").bn_beta - 3 * plain.get_submodule("pw").bn_gamma.abs()
    c = torch.minimum(c.clamp_min(0), plain.get_submodule("act1").upper)
    assert (c > 0).all() and rep["absorbed_channels"] >= 8
    torch.testing.assert_close(gm.get_submodule("act1").upper, plain.get_submodule("act1").upper - c)
    x = data(SMALL)
    with torch.no_grad():
        y0, y = plain(x), gm(x)
    interior = (y - y0)[:, :, 1:-1, 1:-1].abs()
    assert interior.median() < 1e-5 and (interior > 1e-4).float().mean() < 0.05


# ---------------------------------------------------------------- the quantized pipeline


@pytest.mark.parametrize("profile", PROFILES)
def test_prepare_and_calibrate_equalised_mini(profile: str, minis: dict[str, nn.Module]) -> None:
    model = minis["mobilenetv2_mini"]
    gm, _ = equalize(model)
    q = prepare(gm, load_profile(profile), w_bits=8, a_bits=8)
    mods = dict(q.named_modules())
    assert not any(isinstance(m, QuantConvBn2d) for m in mods.values())  # BN gone: plain quantized convs
    assert isinstance(mods["blocks.1.0.conv_dw"], QuantConv2d)
    assert isinstance(mods["blocks.1.0.conv_dw"].conv, FoldedConv2d)
    clips = [n for n in q.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], ChannelClip)]
    assert len(clips) == 11  # still call_modules after prepare's re-trace
    x = data((16, 1, 32, 32))
    calibrate(q, x, 8)
    with torch.no_grad():
        yq = q(x)
        set_mode(q, bypass=True)
        yf = q(x)
        y = gm(x)
    torch.testing.assert_close(yf, y, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(yq).all() and sqnr_db(yf, yq) > 10


def test_equalisation_reduces_per_tensor_w8_error_on_mobilenetv2_mini(minis: dict[str, nn.Module]) -> None:
    """The point of CLE: per-tensor weight quantization (SNPE: asymmetric per-tensor uint8 weights of the folded
    convs) of the equalised model is more accurate. Weights only; SQNR of the logits against each model's own FP32
    output."""
    model = minis["mobilenetv2_mini"]
    gm, _ = equalize(model, absorb_bias=False)
    x = data((32, 1, 32, 32))
    result = {}
    for name, m in (("orig", model), ("cle", gm)):
        q = prepare(m, load_profile("snpe"), w_bits=8, a_bits=8)
        calibrate(q, x, 32)
        with torch.no_grad():
            set_mode(q, bypass=True)
            yf = q(x)
            set_mode(q, only="weights")
            yw = q(x)
        result[name] = sqnr_db(yf, yw)
        w_sqnr = [sqnr_db(w := mod.folded_weight_bias()[0].detach(), mod.weight_fq(w))
                  for mod in q.modules() if isinstance(mod, QuantConv2d | QuantConvBn2d)]
        result[name + "_w"] = sum(w_sqnr) / len(w_sqnr)
    # observed: logits 21.7 -> 26.6 dB, mean weight SQNR 40.0 -> 43.8 dB
    assert result["cle"] > result["orig"] + 3, result
    assert result["cle_w"] > result["orig_w"] + 2, result
