"""Every registered arch builds, runs, traces, and shows each conv followed by its BatchNorm2d."""

from __future__ import annotations

import operator
from functools import cache

import pytest
import torch
from torch import nn

from bench.models import ARCH_INFO, ARCHS, build_model, conv_bn_pairs, trace, unpaired_convs
from bench.registry import RegistryError

# from the registry: a new arch is covered without editing a list
ALL = ARCHS.names()
IMAGENET = [n for n in ALL if ARCH_INFO[n]["track"] == "imagenet"]
MINIS = [n for n in ALL if ARCH_INFO[n]["track"] == "fmnist-mini"]
PAPERS = ["resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf"]  # MQBench's five


@cache
def _built(name: str) -> tuple[nn.Module, torch.fx.GraphModule]:
    # Building and tracing the ImageNet archs costs about a second each; share them across tests.
    info = ARCH_INFO[name]
    torch.manual_seed(0)
    model = build_model(name, info["num_classes"], info["in_chans"]).eval()
    return model, trace(model)


def _input(name: str, batch: int = 2) -> torch.Tensor:
    info = ARCH_INFO[name]
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, info["in_chans"], info["input_size"], info["input_size"], generator=g)


def test_registry_holds_the_papers_archs_their_minis_and_tiny() -> None:
    assert set(PAPERS) <= set(IMAGENET) and {f"{n}_mini" for n in PAPERS} <= set(MINIS) and "tiny" in ALL
    assert sorted(ARCH_INFO) == ARCHS.names()


@pytest.mark.parametrize("name", ALL)
def test_arch_info(name: str) -> None:
    info = ARCH_INFO[name]
    expected_track = info["track"]
    assert expected_track in {"imagenet", "fmnist-mini", "test"}
    assert (name == "tiny") == (expected_track == "test")
    assert (expected_track == "fmnist-mini") == name.endswith("_mini")
    assert info["family"] in {"resnet", "mobile", "regnet", "test"}
    if expected_track == "imagenet":
        assert (info["input_size"], info["in_chans"], info["num_classes"]) == (224, 3, 1000)
    else:
        assert (info["input_size"], info["in_chans"], info["num_classes"]) == (32, 1, 10)
    if name in MINIS:
        assert ARCH_INFO[info["base"]]["family"] == info["family"]


@pytest.mark.parametrize("name", ALL)
def test_forward_trace_and_conv_bn_pairs(name: str) -> None:
    model, gm = _built(name)
    x = _input(name)
    with torch.no_grad():
        y = model(x)
        y_gm = gm(x)
    assert y.shape == (2, ARCH_INFO[name]["num_classes"])
    assert torch.equal(y, y_gm)
    assert unpaired_convs(gm) == []
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(conv_bn_pairs(gm)) == n_convs
    # normalisation and trace() leave no functional batch_norm, in-place add or Identity node behind
    for node in gm.graph.nodes:
        assert node.target not in (torch.nn.functional.batch_norm, operator.iadd)
        if node.op == "call_module":
            assert type(gm.get_submodule(node.target)) is not nn.Identity


@pytest.mark.parametrize("name", MINIS + ["tiny"])
def test_traced_graph_matches_in_train_mode(name: str) -> None:
    info = ARCH_INFO[name]
    torch.manual_seed(0)
    model = build_model(name, info["num_classes"], info["in_chans"]).train()
    torch.manual_seed(0)
    twin = build_model(name, info["num_classes"], info["in_chans"]).train()
    gm = trace(twin)
    x = _input(name, batch=4)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)
    gm_state = gm.state_dict()
    assert gm_state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, gm_state[k]), k  # running stats updated identically


@pytest.mark.parametrize("name", MINIS + ["tiny"])
def test_minis_have_residual_adds(name: str) -> None:
    _, gm = _built(name)
    adds = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
    assert adds, "quantization graph variants need at least one residual add"


def test_unknown_arch_is_one_line_registry_error() -> None:
    with pytest.raises(RegistryError) as err:
        build_model("resnet19", 10, 1)
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet19" in msg
    for name in ALL:
        assert name in msg


@pytest.mark.parametrize("name", MINIS + ["tiny", "resnet18"])
def test_same_seed_same_weights(name: str) -> None:
    info = ARCH_INFO[name]
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(build_model(name, info["num_classes"], info["in_chans"]).state_dict())
    a, b, c = states
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_num_classes_and_in_chans_are_honoured() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18_mini", 7, 3).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_unpaired_convs_reports_a_conv_without_bn() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    gm = trace(model)
    assert unpaired_convs(gm) == ["0"]
    assert conv_bn_pairs(gm) == [("2", "3")]


def test_conv_feeding_two_users_is_unpaired() -> None:
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    assert unpaired_convs(trace(Fork())) == ["conv"]


def test_tiny_is_small_and_paired() -> None:
    model, gm = _built("tiny")
    assert sum(p.numel() for p in model.parameters()) < 10_000
    assert conv_bn_pairs(gm)[0] == ("stem_conv", "stem_bn")
    assert len(conv_bn_pairs(gm)) == 9
