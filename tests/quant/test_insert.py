"""Graph tests: exact quantizer count and placement per profile on a ResNet basic block, a bottleneck with
downsample and a MobileNetV2 inverted residual (MQBench Fig. 4, App. G), plus concat sharing and pooling."""

from __future__ import annotations

import pytest
import torch
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from bench.models import normalize_model
from bench.ptq.calibrate import calibrate
from bench.quant.insert import TiedRequant, prepare, quantizers
from bench.quant.profiles import load_profile, profile_names
from bench.quant.qmodules import QuantConvBn2d, QuantLinear
from bench.quant.report import quant_report

PROFILES = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]


class Net(nn.Module):
    """stem conv-bn-act -> one block -> global average pool -> flatten -> linear."""

    def __init__(self, block: nn.Module, stem_out: int, block_out: int, stem_act: type[nn.Module]) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(1, stem_out, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_out)
        self.stem_act = stem_act()
        self.block = block
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(block_out, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.block(self.stem_act(self.stem_bn(self.stem_conv(x)))))))


def basic_net() -> nn.Module:
    return normalize_model(Net(BasicBlock(8, 8), 8, 8, nn.ReLU))


def bottleneck_net() -> nn.Module:
    down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    return normalize_model(Net(Bottleneck(8, 4, stride=2, downsample=down), 8, 16, nn.ReLU))


def inverted_residual_net() -> nn.Module:
    block = InvertedResidual(8, 8, exp_ratio=4.0, act_layer=nn.ReLU6)
    return normalize_model(Net(block, 8, 8, nn.ReLU6))


# tensor (fx node name of the quantized value) of each activation quantizer, per graph variant
EXPECTED_ACTS = {
    "basic": {
        1: ["x", "stem_act", "block_act1", "flatten"],
        2: ["x", "stem_act", "block_act1", "block_act2"],
        3: ["x", "stem_act", "block_act1", "block_conv2", "block_act2"],
    },
    "bottleneck": {
        1: ["x", "stem_act", "block_act1", "block_act2", "flatten"],
        2: ["x", "stem_act", "block_act1", "block_act2", "block_downsample_0", "block_act3"],
        3: ["x", "stem_act", "block_act1", "block_act2", "block_conv3", "block_downsample_0", "block_act3"],
    },
    "inverted_residual": {
        1: ["x", "stem_act", "block_bn1_act", "block_bn2_act", "flatten"],
        2: ["x", "stem_act", "block_bn1_act", "block_bn2_act", "add"],
        3: ["x", "stem_act", "block_bn1_act", "block_bn2_act", "block_conv_pwl", "add"],
    },
}
NETS = {"basic": basic_net, "bottleneck": bottleneck_net, "inverted_residual": inverted_residual_net}
WEIGHTED = {"basic": 4, "bottleneck": 6, "inverted_residual": 5}


def _prepared(net: str, profile: str, **kw: int) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = NETS[net]().eval()
    p = load_profile(profile).with_overrides(kw.get("graph"), kw.get("bn_fold"))
    return prepare(model, p, w_bits=4, a_bits=4)


def _act_tensors(gm: torch.fx.GraphModule) -> list[str]:
    return [r["tensor"] for r in quant_report(gm) if r["kind"] == "act"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("net", list(NETS))
def test_placement_per_profile(net: str, profile: str) -> None:
    gm = _prepared(net, profile)
    graph = load_profile(profile).graph
    assert _act_tensors(gm) == EXPECTED_ACTS[net][graph]
    rows = quant_report(gm)
    assert sum(r["kind"] == "weight" for r in rows) == WEIGHTED[net]
    # average pooling is re-quantized with its input's quantizer on hardware graphs only
    tied = [m for m in gm.modules() if isinstance(m, TiedRequant)]
    assert len(tied) == (0 if graph == 1 else 1)


def test_graph1_shortcut_reads_float_and_graph3_reads_quantized() -> None:
    gm1 = _prepared("basic", "academic")
    node = next(n for n in gm1.graph.nodes if n.op == "call_module" and n.target == "act_fq_stem_act")
    assert [u.name for u in node.users] == ["block_conv1"]  # the residual add still reads the float tensor
    gm3 = _prepared("basic", "tvm")
    node = next(n for n in gm3.graph.nodes if n.op == "call_module" and n.target == "act_fq_stem_act")
    assert sorted(u.name for u in node.users) == ["add", "block_conv1"]


def test_graph1_shared_quantizer_for_conv_and_downsample() -> None:
    gm = _prepared("bottleneck", "academic")
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "act_fq_stem_act")
    assert sorted(u.name for u in node.users) == ["block_conv1", "block_downsample_0"]


def test_graph2_leaves_main_branch_of_add_unquantized() -> None:
    gm = _prepared("bottleneck", "tensorrt")
    add = next(n for n in gm.graph.nodes if n.name == "add")
    srcs = [a.name for a in add.args]
    assert srcs[0] == "block_conv3"  # fused with the add: float
    assert srcs[1].startswith("act_fq_block_downsample_0")


@pytest.mark.parametrize("graph", [1, 2, 3])
def test_quant_graph_override(graph: int) -> None:
    gm = _prepared("basic", "academic", graph=graph)
    assert _act_tensors(gm) == EXPECTED_ACTS["basic"][graph]


@pytest.mark.parametrize("profile", PROFILES)
def test_specs_follow_profile(profile: str) -> None:
    gm = _prepared("bottleneck", profile)
    p = load_profile(profile)
    rows = quant_report(gm)
    for r in rows:
        spec = p.weight if r["kind"] == "weight" else p.act
        assert r["symmetric"] == spec.symmetric
        assert r["scale_form"] == ("power-of-two" if spec.pot_scale else "fp32")
        per_channel = r["granularity"].startswith("per-channel")
        assert per_channel == spec.per_channel
    # first and last layer (inputs and weights) at 8 bits, the rest at the cell's 4
    bits = {r["tensor"]: r["bits"] for r in rows}
    assert bits["stem_conv.weight"] == 8 and bits["fc.weight"] == 8 and bits["x"] == 8
    assert bits["block.conv2.weight"] == 4 and bits["block_act1"] == 4
    if p.graph == 1:
        assert bits["flatten"] == 8


@pytest.mark.parametrize("bn_fold", [-1, 0, 1, 2, 3, 4])
def test_bn_fold_strategy_and_bypass_equals_fp32(bn_fold: int) -> None:
    torch.manual_seed(0)
    model = bottleneck_net()
    # non-trivial BN statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8))
    model.eval()
    gm = prepare(model, load_profile("tensorrt").with_overrides(bn_fold=bn_fold), w_bits=4, a_bits=4)
    convbn = [m for m in gm.modules() if isinstance(m, QuantConvBn2d)]
    assert len(convbn) == 5 and all(m.strategy == bn_fold for m in convbn)
    assert not any(isinstance(m, nn.BatchNorm2d) for n, m in gm.named_children())
    x = torch.randn(8, 1, 8, 8)
    calibrate(gm, x, 4)
    for _, fq in quantizers(gm):
        fq.enabled = False
    torch.testing.assert_close(gm(x), model(x), atol=1e-5, rtol=1e-4)
    for _, fq in quantizers(gm):
        fq.enabled = True
    assert not torch.allclose(gm(x), model(x), atol=1e-3)


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 1)
        self.c = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        return self.fc(self.c(y).mean((2, 3)))


def test_concat_branches_share_one_quantizer() -> None:
    gm = prepare(CatNet(), load_profile("snpe"), w_bits=8, a_bits=8)
    cat = next(n for n in gm.graph.nodes if n.target is torch.cat)
    targets = {a.target for a in cat.args[0]}
    assert len(targets) == 1 and str(next(iter(targets))).startswith("act_fq_")
    fq = gm.get_submodule(next(iter(targets)))
    seen: list[torch.Tensor] = []
    fq.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    x = torch.randn(4, 1, 6, 6)
    calibrate(gm, x, 4)
    assert len(seen) == 2  # both branches went through the one quantizer: one range for the concatenation
    lo = min(float(t.min()) for t in seen)
    hi = max(float(t.max()) for t in seen)
    qmin, qmax = fq.qrange
    assert float(fq.scale) * (qmax - qmin) == pytest.approx(hi - min(lo, 0.0), rel=1e-5)
    gm1 = prepare(CatNet(), load_profile("academic"), w_bits=8, a_bits=8)
    cat1 = next(n for n in gm1.graph.nodes if n.target is torch.cat)
    assert all(not str(a.target).startswith("act_fq_") for a in cat1.args[0])  # academic: concat in float


@pytest.mark.parametrize("profile", ["snpe", "tvm", "tensorrt", "fbgemm"])
def test_concat_output_is_not_quantized_a_second_time(profile: str) -> None:
    # KLD picks a range from a histogram: a second quantizer on the concatenation would get a (slightly) different
    # scale and round the already quantized tensor again (MQBench App. G: one set of qparams per concatenation)
    gm = prepare(CatNet(), load_profile(profile), w_bits=8, a_bits=8, calib_act="kld")
    cat = next(n for n in gm.graph.nodes if n.target is torch.cat)
    assert all(not isinstance(gm.get_submodule(str(u.target)), type(quantizers(gm)[0][1]))
               for u in cat.users if u.op == "call_module" and not hasattr(gm.get_submodule(str(u.target)),
                                                                           "weight_fq"))
    conv_c = gm.get_submodule("c")
    shared = gm.get_submodule(str(cat.args[0][0].target))
    assert conv_c.input_quantizer is shared  # the reading conv's integer bias uses the shared grid
    calibrate(gm, torch.randn(8, 1, 6, 6), 8)
    acts = [fq for n, fq in quantizers(gm) if fq.kind == "act"]
    assert len(acts) == 3  # network input, the shared concatenation grid, the pooled features for fc


def test_real_archs_prepare_and_calibrate() -> None:
    from bench.models import build_model

    for arch in ("resnet18_mini", "mobilenetv2_mini", "regnetx_600mf_mini"):
        torch.manual_seed(0)
        model = build_model(arch, 10, 1).eval()
        for name in profile_names():
            gm = prepare(model, load_profile(name), w_bits=8, a_bits=8)
            x = torch.randn(4, 1, 32, 32)
            calibrate(gm, x, 4)
            out = gm(x)
            assert out.shape == (4, 10) and torch.isfinite(out).all()
            assert isinstance(gm.get_submodule([n for n, m in gm.named_modules() if isinstance(m, QuantLinear)][0]),
                              QuantLinear)


def test_bn_based_activation_ranges_reach_the_observer() -> None:
    torch.manual_seed(0)
    model = basic_net().eval()
    with torch.no_grad():
        model.stem_bn.weight.uniform_(0.5, 1.5)
        model.stem_bn.bias.uniform_(-0.5, 0.5)
    gm = prepare(model, load_profile("academic"), w_bits=8, a_bits=8, calib_act="bn")
    calibrate(gm, torch.randn(4, 1, 8, 8), 4)
    fq = gm.get_submodule("act_fq_stem_act")
    assert not fq.observer.fallback  # stem_act = ReLU(BN(conv)): range from BN, not from data
    gamma, beta = model.stem_bn.weight.detach(), model.stem_bn.bias.detach()
    hi = float((beta + 6 * gamma.abs()).max())
    assert not fq.signed and fq.qrange == (0, 255)
    assert float(fq.scale) == pytest.approx(hi / 255, rel=1e-6)
    assert gm.get_submodule("act_fq_x").observer.fallback  # the image has no BN before it: min/max


@pytest.mark.parametrize("bn_fold", [0, 1, 2, 3, 4])
def test_convert_folded_keeps_eval_outputs(bn_fold: int) -> None:
    from bench.quant.insert import convert_folded
    from bench.quant.qmodules import QuantConv2d

    torch.manual_seed(0)
    model = inverted_residual_net().eval()
    gm = prepare(model, load_profile("fbgemm").with_overrides(bn_fold=bn_fold), w_bits=4, a_bits=4)
    x = torch.randn(8, 1, 8, 8)
    calibrate(gm, x, 4)
    gm.eval()
    before = gm(x)
    convert_folded(gm)
    assert not any(isinstance(m, QuantConvBn2d) for m in gm.modules())
    assert sum(isinstance(m, QuantConv2d) for m in gm.modules()) == 4
    torch.testing.assert_close(gm(x), before, atol=1e-6, rtol=1e-6)
