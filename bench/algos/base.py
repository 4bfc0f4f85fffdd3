"""What an algorithm plugs into the one pipeline, and the context it is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from bench.errors import BenchError


class NotImplementedYet(BenchError):
    """The algorithm is part of the grid but its capability has not landed."""


@dataclass
class CellContext:
    """Everything a method needs for one cell: config, FP32 model (baseline weights loaded), data, outputs."""

    cfg: DictConfig
    model: nn.Module
    data: Any  # bench.data.DataBundle
    output_dir: Path
    metrics: Any  # bench.engine.metrics.MetricsWriter
    fp32_top1: float


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

    def check(self, cfg: DictConfig) -> None:
        """Raise a one-line BenchError if this algorithm cannot run ``cfg`` (before any work starts)."""

    def apply(self, ctx: CellContext) -> CellOutcome:
        """Run the method on the FP32 model and evaluate it."""
        raise NotImplementedYet(f"algo={self.name} is not implemented yet")


class Planned(Algorithm):
    """An algorithm of the grid whose capability arrives with a later issue: it fails before any work starts."""

    def __init__(self, name: str, kind: str, description: str, capability: str) -> None:
        self.name, self.kind, self.description, self.capability = name, kind, description, capability

    def check(self, cfg: DictConfig) -> None:
        raise NotImplementedYet(
            f"algo={self.name} is not implemented yet: it arrives with the {self.capability}; "
            f"available now: {', '.join(AVAILABLE)}"
        )


AVAILABLE: list[str] = []  # names of the algorithms that run in this version (filled by bench.algos)
