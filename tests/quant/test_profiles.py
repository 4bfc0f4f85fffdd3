"""Hardware profiles: the six ``bench/conf/hw`` files against MQBench Table 2 / App. E (a table written here and the
reference CSV in results/reference/), overrides, errors, and resolution from a composed config."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from bench.errors import BenchError
from bench.quant.profiles import (
    HardwareProfile,
    ProfileError,
    load_profile,
    profile_from_config,
    profile_names,
    resolve_profile,
)
from bench.quant.spec import QuantSpec

NAMES = ["academic", "acl", "fbgemm", "snpe", "tensorrt", "tvm"]
# the paper's tables, copied into the repository (results/reference/, from shared/reference/): CI has no shared/
REFERENCE_CSV = Path(__file__).resolve().parents[2] / "results" / "reference" / "mqbench_table2_hw_profiles.csv"


def spec(signed: bool | None, symmetric: bool, per_channel: bool, pot: bool = False) -> QuantSpec:
    return QuantSpec(bits=8, signed=signed, symmetric=symmetric, per_channel=per_channel, ch_axis=0, pot_scale=pot,
                     narrow_range=False)


# MQBench Table 2 / App. E: (weight spec, act spec, graph, bn_fold)
EXPECTED: dict[str, tuple[QuantSpec, QuantSpec, int, int]] = {
    "academic": (spec(True, True, False), spec(None, True, False), 1, -1),
    "tensorrt": (spec(True, True, True), spec(True, True, False), 2, 4),
    "acl": (spec(True, True, True), spec(False, False, False), 1, 4),
    "tvm": (spec(True, True, False, pot=True), spec(True, True, False, pot=True), 3, 4),
    "snpe": (spec(False, False, False), spec(False, False, False), 3, 4),
    "fbgemm": (spec(True, False, True), spec(False, False, False), 3, 4),
}


def table2(s: QuantSpec) -> QuantSpec:
    """The fields MQBench Table 2 fixes (rounding follows the target, pot_snap is a calibration choice)."""
    return dataclasses.replace(s, rounding="half_even", pot_snap="ceil")


def base_hw(**changes: Any) -> dict[str, Any]:
    """A valid ``hw`` node (the tensorrt file's content) with ``changes`` applied."""
    hw: dict[str, Any] = {
        "name": "custom", "provider": "me", "hardware": "npu", "graph": 2, "bn_fold": 4, "first_last_bits": 8,
        "weight": {"signed": True, "symmetric": True, "per_channel": True, "pot_scale": False, "narrow_range": False},
        "act": {"signed": True, "symmetric": True, "per_channel": False, "pot_scale": False, "narrow_range": False},
        "description": "test",
    }
    hw.update(changes)
    return hw


def test_profile_names() -> None:
    # the paper's six are there (a profile added as one YAML is covered by the tests that iterate profile_names())
    assert set(NAMES) <= set(profile_names())
    assert sorted(EXPECTED) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_profile_matches_mqbench_table2(name: str) -> None:
    p = load_profile(name)
    weight, act, graph, bn_fold = EXPECTED[name]
    assert isinstance(p, HardwareProfile) and p.name == name
    assert table2(p.weight) == weight
    assert table2(p.act) == act
    # activations round as the target requantizes; weights are quantized offline (half to even)
    assert p.act.rounding == p.rounding and p.weight.rounding == "half_even"
    assert (p.graph, p.bn_fold, p.first_last_bits) == (graph, bn_fold, 8)
    # per-channel weights along the output-channel axis, all formats without narrow range
    assert p.weight.ch_axis == 0 and not p.weight.narrow_range and not p.act.narrow_range
    # 8-bit integer ranges (TensorRT: [-128, 127] for both, as in the paper)
    assert p.weight_spec(8).qrange() == ((-128, 127) if weight.signed else (0, 255))
    if act.signed is not None:
        assert p.act_spec(8).qrange() == ((-128, 127) if act.signed else (0, 255))
    if name != "academic":
        assert p.bn_fold == 4 and p.provider != "-" and p.hardware != "-"
    assert p.description


@pytest.mark.parametrize("name", profile_names())
def test_weight_and_act_spec_change_only_the_bits(name: str) -> None:
    p = load_profile(name)
    for bits in (2, 4, 8, 16):
        assert p.weight_spec(bits) == dataclasses.replace(p.weight, bits=bits)
        assert p.act_spec(bits) == dataclasses.replace(p.act, bits=bits)
    assert p.weight.bits == 8 and p.act.bits == 8


def _reference_rows() -> dict[str, dict[str, str]]:
    if not REFERENCE_CSV.exists():
        pytest.skip(f"reference table not found at {REFERENCE_CSV}")
    with REFERENCE_CSV.open(newline="") as f:
        return {row["profile"]: row for row in csv.DictReader(f)}


def test_reference_csv_lists_the_same_profiles() -> None:
    assert sorted(_reference_rows()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_profile_matches_reference_csv(name: str) -> None:
    row = _reference_rows()[name]
    p = load_profile(name)
    assert p.graph == int(row["graph"])
    assert (p.bn_fold != -1) == (row["fold_bn"] == "yes")
    pot = row["scale_form"] == "power-of-two"
    assert row["scale_form"] in ("fp32", "power-of-two")
    assert p.weight.pot_scale == pot and p.act.pot_scale == pot
    assert p.weight.per_channel == (row["weight_granularity"] == "per-channel")
    assert not p.act.per_channel  # activations are per-tensor on every profile
    # the table's single symmetry column: symmetric only when weights and activations both are
    assert row["symmetry"] in ("symmetric", "asymmetric")
    assert (p.weight.symmetric and p.act.symmetric) == (row["symmetry"] == "symmetric")
    assert p.provider == row["provider"]
    hardware = p.hardware.lower()
    assert row["hw_type"].lower() in hardware and row["hardware"].lower() in hardware


# ---------------------------------------------------------------- overrides and errors


def test_with_overrides() -> None:
    p = load_profile("tensorrt")
    q = p.with_overrides(graph=3, bn_fold=-1)
    assert (q.graph, q.bn_fold) == (3, -1)
    assert (p.graph, p.bn_fold) == (2, 4)  # frozen: the original is unchanged
    assert q.weight == p.weight and q.act == p.act and q.name == p.name
    assert p.with_overrides() == p
    assert p.with_overrides(graph=1) == dataclasses.replace(p, graph=1)
    assert p.with_overrides(bn_fold=0).graph == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.graph = 1  # type: ignore[misc]


@pytest.mark.parametrize(("graph", "bn_fold"), [(0, None), (4, None), (None, 5), (None, -2)])
def test_with_overrides_rejects_invalid_values(graph: int | None, bn_fold: int | None) -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("academic").with_overrides(graph=graph, bn_fold=bn_fold)
    msg = str(err.value)
    assert "\n" not in msg
    assert ("accepted: 1, 2, 3" in msg) if graph is not None else ("accepted: -1, 0, 1, 2, 3, 4" in msg)


def test_unknown_profile_is_a_one_line_error() -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("tpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'tpu'" in msg and "accepted: " + ", ".join(profile_names()) in msg
    assert isinstance(err.value, BenchError)


def test_profile_from_config_dict_and_dictconfig() -> None:
    p = profile_from_config(base_hw())
    assert p == profile_from_config(OmegaConf.create(base_hw()))
    assert p.name == "custom" and p.graph == 2 and p.weight == EXPECTED["tensorrt"][0]
    assert profile_from_config(base_hw(first_last_bits=None)).first_last_bits is None
    # missing keys take the defaults of the one schema, bench.config.HwConfig (as Hydra composes them): an act spec
    # without `signed` is adaptive (None), a missing description empty
    q = profile_from_config(base_hw(act={"symmetric": False}))
    assert q.act == QuantSpec(bits=8, signed=None, symmetric=False)
    hw = base_hw()
    del hw["description"]
    assert profile_from_config(hw).description == ""
    with pytest.raises(ProfileError, match="unknown key 'colour'; accepted: name, label, order, provider"):
        profile_from_config(base_hw(colour="red"))


@pytest.mark.parametrize("graph", [0, 4, -1])
def test_bad_graph_value_is_a_profile_error(graph: int) -> None:
    with pytest.raises(ProfileError, match=f"graph={graph} invalid; accepted: 1, 2, 3"):
        profile_from_config(base_hw(graph=graph))


def test_bad_bn_fold_value_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match="bn_fold=5 invalid"):
        profile_from_config(base_hw(bn_fold=5))


@pytest.mark.parametrize("graph", ["two", 2.5])
def test_non_integer_graph_is_a_profile_error(graph: object) -> None:
    with pytest.raises(ProfileError, match="graph"):
        profile_from_config(base_hw(graph=graph))


@pytest.mark.parametrize("kind", ["weight", "act"])
def test_unknown_spec_key_is_a_profile_error(kind: str) -> None:
    node = dict(base_hw()[kind], bits=4)
    with pytest.raises(ProfileError) as err:
        profile_from_config(base_hw(**{kind: node}))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"unknown {kind} key 'bits'" in msg and "accepted: signed, symmetric, per_channel" in msg


DEPLOY = {"academic": ("float32", "half_even"), "tensorrt": ("float32", "half_even"),
          "fbgemm": ("float32", "half_even"), "acl": ("fixed_point", "half_away"),
          "snpe": ("fixed_point", "half_away"), "tvm": ("shift", "half_up")}


@pytest.mark.parametrize("name", NAMES)
def test_integer_arithmetic_of_each_profile(name: str) -> None:
    p = load_profile(name)
    assert (p.requant, p.rounding) == DEPLOY[name]
    assert p.requant != "shift" or (p.weight.pot_scale and p.act.pot_scale)  # shifts need power-of-two scales


@pytest.mark.parametrize("node, needle", [({"requant": "magic"}, "deploy.requant='magic' invalid; accepted: "
                                           "fixed_point, shift, float32"),
                                          ({"rounding": "down"}, "deploy.rounding='down' invalid"),
                                          ({"mode": "x"}, "unknown deploy key 'mode'")])
def test_bad_deploy_settings_are_profile_errors(node: dict, needle: str) -> None:
    with pytest.raises(ProfileError) as err:
        profile_from_config(base_hw(deploy=node))
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert profile_from_config(base_hw()).requant == "float32"  # absent: the fake-quant arithmetic


# ---------------------------------------------------------------- composed configs


@pytest.mark.parametrize("name", profile_names())
def test_composed_hw_node_gives_the_file_profile(make_cfg: Callable[..., DictConfig], name: str) -> None:
    cfg = make_cfg(f"hw={name}")
    assert profile_from_config(cfg.hw) == load_profile(name)
    assert resolve_profile(cfg) == load_profile(name)


def test_resolve_profile_applies_quant_overrides(make_cfg: Callable[..., DictConfig]) -> None:
    p = resolve_profile(make_cfg("hw=tvm", "quant.graph=1"))
    tvm = load_profile("tvm")
    assert p.graph == 1 and p.bn_fold == tvm.bn_fold == 4
    assert p.weight == tvm.weight and p.act == tvm.act and p.weight.pot_scale
    p = resolve_profile(make_cfg("hw=fbgemm", "quant.bn_fold=-1", "quant.graph=2"))
    assert (p.name, p.graph, p.bn_fold) == ("fbgemm", 2, -1)
    default = resolve_profile(make_cfg())
    assert default == load_profile("academic")
