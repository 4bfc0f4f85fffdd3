"""Hardware profiles as data: ``bench/conf/hw/<name>.yaml`` -> frozen :class:`HardwareProfile` (MQBench Table 2,
App. E).

The quantizer and the graph pass only read a profile; nothing branches on a profile's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.config import CONF_DIR, DeployArith, HwConfig, SpecConfig, group_options
from bench.errors import BenchError
from bench.quant.fixedpoint import REQUANT_MODES, ROUNDINGS
from bench.quant.spec import QuantSpec

GRAPHS = (1, 2, 3)
BN_FOLDS = (-1, 0, 1, 2, 3, 4)
# the one hardware schema is bench.config.HwConfig (what Hydra checks the YAML files against): its keys and defaults
HW_KEYS = tuple(f.name for f in fields(HwConfig))
SPEC_KEYS = tuple(f.name for f in fields(SpecConfig))
DEPLOY_KEYS = tuple(f.name for f in fields(DeployArith))
DEFAULTS = asdict(HwConfig())


class ProfileError(BenchError):
    """An unknown profile or an invalid profile file."""


@dataclass(frozen=True)
class HardwareProfile:
    """What a deployment target quantizes and how (bits are filled in per cell).

    ``weight`` / ``act`` hold the format of every weight / activation quantizer (weights per channel along the
    output-channel axis 0); ``graph`` is the block-graph variant of MQBench Fig. 4 (1: inputs of conv/linear only;
    2: also add and pooling, the residual add fused with its main-branch conv so only its other input is quantized;
    3: every add/concat input quantized); ``bn_fold`` the default BN-folding strategy (-1 = keep BN in float);
    ``first_last_bits`` the bit-width of the first and last layer (None = the cell's bits); ``hardware_target``
    whether this is a deployment target (only uniform integer grids) rather than the academic setting. The activation
    format rounds like the target requantizes (``act.rounding`` = ``deploy.rounding``).
    """

    name: str
    weight: QuantSpec
    act: QuantSpec
    graph: int
    bn_fold: int
    first_last_bits: int | None
    hardware_target: bool
    provider: str
    hardware: str
    description: str
    requant: str  # deploy.requant: how the integer target rescales accumulators (bench.deploy)
    rounding: str  # deploy.rounding

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ProfileError(f"profile {self.name}: graph={self.graph} invalid; accepted: 1, 2, 3")
        if self.bn_fold not in BN_FOLDS:
            raise ProfileError(f"profile {self.name}: bn_fold={self.bn_fold} invalid; accepted: -1, 0, 1, 2, 3, 4")

    def weight_spec(self, bits: int) -> QuantSpec:
        """The weight format at ``bits``."""
        return self.weight.with_bits(bits)

    def act_spec(self, bits: int) -> QuantSpec:
        """The activation format at ``bits``."""
        return self.act.with_bits(bits)

    def with_overrides(self, graph: int | None = None, bn_fold: int | None = None,
                       pot_snap: str | None = None) -> HardwareProfile:
        """The profile with ``quant.graph`` / ``quant.bn_fold`` / ``quant.pot_snap`` applied (None keeps the
        profile's value; ``pot_snap`` sets both tensor kinds)."""
        snap = {} if pot_snap is None else {"weight": replace(self.weight, pot_snap=pot_snap),
                                            "act": replace(self.act, pot_snap=pot_snap)}
        return replace(
            self,
            graph=self.graph if graph is None else int(graph),
            bn_fold=self.bn_fold if bn_fold is None else int(bn_fold),
            **snap,
        )


def _section(node: Any, name: str, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    # a sub-node of the profile over the schema's defaults; a key the schema does not have is a one-line error
    data = dict(node or {})
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ProfileError(f"profile {name}: unknown {kind} key {unknown[0]!r}; accepted: {', '.join(keys)}")
    return {**DEFAULTS[kind], **data}


def _spec(node: Any, name: str, kind: str) -> QuantSpec:
    try:
        return QuantSpec(bits=8, ch_axis=0, **_section(node, name, kind, SPEC_KEYS))
    except ValueError as e:
        raise ProfileError(f"profile {name}: {kind} {e}") from None


def profile_from_config(hw: DictConfig | dict[str, Any]) -> HardwareProfile:
    """Build a profile from a ``hw`` config node (the composed ``cfg.hw`` or a loaded YAML file); keys and defaults
    are those of the schema ``bench.config.HwConfig``."""
    h = OmegaConf.to_container(hw, resolve=True) if isinstance(hw, DictConfig) else dict(hw)
    assert isinstance(h, dict)
    name = str(h.get("name", "?"))
    unknown = sorted(set(h) - set(HW_KEYS))
    if unknown:
        raise ProfileError(f"profile {name}: unknown key {unknown[0]!r}; accepted: {', '.join(HW_KEYS)}")
    for key in ("graph", "bn_fold"):
        if type(h.get(key, DEFAULTS[key])) is not int:  # noqa: E721  (bool and float are not accepted)
            raise ProfileError(f"profile {name}: {key}={h.get(key)!r} must be an integer")
    h = {**DEFAULTS, **h}
    deploy = _deploy(h.get("deploy"), name)
    return HardwareProfile(
        name=name,
        weight=_spec(h.get("weight"), name, "weight"),
        act=replace(_spec(h.get("act"), name, "act"), rounding=deploy["rounding"]),
        graph=int(h["graph"]),
        bn_fold=int(h["bn_fold"]),
        first_last_bits=None if h["first_last_bits"] is None else int(h["first_last_bits"]),
        hardware_target=bool(h["hardware_target"]),
        provider=str(h["provider"]),
        hardware=str(h["hardware"]),
        description=str(h["description"]),
        **deploy,
    )


def _deploy(node: Any, name: str) -> dict[str, str]:
    data = _section(node, name, "deploy", DEPLOY_KEYS)
    out = {"requant": str(data["requant"]), "rounding": str(data["rounding"])}
    if out["requant"] not in REQUANT_MODES:
        raise ProfileError(f"profile {name}: deploy.requant={out['requant']!r} invalid; accepted: "
                           f"{', '.join(REQUANT_MODES)}")
    if out["rounding"] not in ROUNDINGS:
        raise ProfileError(f"profile {name}: deploy.rounding={out['rounding']!r} invalid; accepted: "
                           f"{', '.join(ROUNDINGS)}")
    return out


def load_profile(name: str) -> HardwareProfile:
    """The profile of ``bench/conf/hw/<name>.yaml``; one-line error listing the accepted names."""
    names = profile_names()
    if name not in names:
        raise ProfileError(f"unknown hw {name!r}; accepted: {', '.join(names)}")
    return profile_from_config(OmegaConf.load(CONF_DIR / "hw" / f"{name}.yaml"))


def profile_names() -> list[str]:
    """Names of the hardware profiles (one YAML file each under ``bench/conf/hw``)."""
    return group_options("hw")


def resolve_profile(cfg: DictConfig) -> HardwareProfile:
    """The cell's profile: ``cfg.hw`` with the ``quant.graph`` / ``quant.bn_fold`` / ``quant.pot_snap`` overrides."""
    return profile_from_config(cfg.hw).with_overrides(cfg.quant.graph, cfg.quant.bn_fold, cfg.quant.pot_snap)
