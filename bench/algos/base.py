"""What an algorithm plugs into the one pipeline, and the context it is given."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.errors import BenchError
from bench.registry import Registry


@dataclass(frozen=True)
class AlgoParams:
    """An algorithm's ``algo.params``: a frozen dataclass of typed, defaulted fields (one per algorithm, torchao's
    config pattern), built from the config and validated once (:meth:`from_mapping`); use sites read attributes."""

    def check(self) -> None:
        """Raise a one-line :class:`BenchError` for a bad value (subclasses; the types are checked already)."""

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any], algo: str) -> Self:
        """The parameters ``given`` (unknown keys and wrong types are one-line errors) over the defaults, checked."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            accepted = ", ".join(names) or "none"
            raise BenchError(f"unknown algo.params.{unknown[0]} for algo={algo}; accepted: {accepted}")
        hints = typing.get_type_hints(cls)
        params = cls(**{k: _coerce(v, hints[k], f"algo.params.{k}") for k, v in given.items()})
        params.check()
        return params

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for the record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    # YAML / command-line values to the field's type: an int is a float, nothing else converts silently
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if typing.get_origin(kind) is tuple and isinstance(value, list | tuple):
        item = typing.get_args(kind)[0]
        return tuple(_coerce(v, item, key) for v in value)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, "a list")
    raise BenchError(f"{key}={value!r} must be {name}")


@dataclass
class CellContext:
    """Everything a method needs for one cell: config, FP32 model (baseline weights loaded), data, outputs."""

    cfg: DictConfig
    model: nn.Module
    data: Any  # bench.data.DataBundle
    output_dir: Path
    metrics: Any  # bench.engine.metrics.MetricsWriter
    fp32_top1: float
    cell_hash: str = ""  # the cell's config_hash (keys its resumable state)
    profile: Any = None  # the cell's HardwareProfile (cfg.hw with the quant.* overrides), resolved once by the runner


@dataclass
class CellOutcome:
    """What a method reports back to the runner for the record."""

    status: str
    top1: float | None
    top5: float | None
    init_top1: float | None = None
    train_epochs: int = 0
    graph: int | None = None
    bn_fold: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the quantized model (fx GraphModule), for deployment checks; not part of the record


class Algorithm:
    """A registered ``algo=`` entry. Subclasses override :meth:`check` and :meth:`apply`."""

    name: str = ""
    kind: str = ""  # "fp32", "qat" or "ptq"
    description: str = ""
    quantizes: bool = True
    uses_recon: bool = False  # reads the ``recon`` config group (otherwise it is left out of the config hash)
    params_type: ClassVar[type[AlgoParams]] = AlgoParams  # its ``algo.params`` (none by default)
    # why the quantized model cannot be run with integers or exported (None: it can): checked before any work by
    # ``check-real`` / ``export``
    not_deployable: str | None = None

    def check(self, cfg: DictConfig) -> None:
        """Raise a one-line BenchError if this algorithm cannot run ``cfg`` (before any work starts)."""
        self.params(cfg)

    def params(self, cfg: DictConfig) -> Any:
        """The cell's ``algo.params`` as this algorithm's :attr:`params_type` (validated)."""
        given = OmegaConf.to_container(cfg.algo.params, resolve=True) if cfg.algo.params is not None else {}
        assert isinstance(given, dict)
        return self.params_type.from_mapping(given, self.name)

    def unsupported(self, profile: Any) -> str | None:
        """Why this algorithm cannot run on ``profile`` (a ``bench.quant.profiles.HardwareProfile``); None: it can.
        :meth:`check` refuses such a cell before work starts; ``bench list algo`` shows the supported profiles."""
        return None

    def apply(self, ctx: CellContext) -> CellOutcome:
        """Run the method on the FP32 model and evaluate it."""
        raise NotImplementedError


ALGOS: Registry[Algorithm] = Registry("algo")
A = TypeVar("A", bound=type[Algorithm])


def register_algo(*, label: str, order: int) -> Callable[[A], A]:
    """Class decorator: register an instance of the class under its ``name``, with its display ``label``, its table
    ``order`` and its ``kind`` as metadata (records carry them, so the aggregator needs no registry)."""

    def deco(cls: A) -> A:
        algo = cls()
        if not algo.name or algo.kind not in ("fp32", "qat", "ptq"):
            raise ValueError(f"{cls.__name__}: an algorithm needs a name and a kind in fp32, qat, ptq")
        ALGOS.register(algo.name, label=label, order=order, kind=algo.kind)(algo)
        return cls

    return deco
