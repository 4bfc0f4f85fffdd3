"""Reconstruction units of a prepared model and the tensors they are fitted on (AdaRound, BRECQ, QDrop, IOSO).

A :class:`Unit` is a single-input, single-output region of the prepared ``torch.fx`` graph:

- ``layer``: one weighted module, its input quantizer(s) and the activation right after it (AdaRound's
  ``f_a(W x)``, white paper eq. 35);
- ``block``: a residual block (BRECQ Sec. 3.2: from the tensor the shortcut forks off to the residual add and the
  activation after it), or the weighted modules of one architecture block without a shortcut (MobileNetV2's strided
  inverted residuals), found by the common module-path prefix of the residual blocks.

Weighted modules that fit no block are layer units. :func:`subgraph_module` cuts any region out of the graph as a
``GraphModule`` sharing the prepared model's modules, so optimising a unit changes the model itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from bench.models.graph import node_module
from bench.quant.insert import WEIGHTED, node_kind, quantizers
from bench.quant.quantizer import FakeQuantize

UNIT_MODES = ("layer", "block")


@dataclass
class Unit:
    """A region reconstructed as one: ``input`` feeds it, ``output`` is its reconstruction target."""

    name: str
    kind: str  # "layer" | "block"
    input: fx.Node
    output: fx.Node
    nodes: list[fx.Node] = field(default_factory=list)  # region nodes in graph order (``input`` excluded)
    layers: list[str] = field(default_factory=list)  # weighted module targets inside

    def modules(self, gm: fx.GraphModule) -> list[nn.Module]:
        """The modules the unit calls (weighted layers, activation quantizers, activations)."""
        return [gm.get_submodule(str(n.target)) for n in self.nodes if n.op == "call_module"]


def _is_fq(gm: fx.GraphModule, n: fx.Node) -> bool:
    return isinstance(node_module(gm, n), FakeQuantize)


def _ancestors(n: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(n.all_input_nodes)
    while stack:
        a = stack.pop()
        if a not in seen:
            seen.add(a)
            stack.extend(a.all_input_nodes)
    return seen


def _region(gm: fx.GraphModule, core: set[fx.Node], order: dict[fx.Node, int]) -> tuple[fx.Node, list[fx.Node]] | None:
    """Close ``core`` over the quantizers and pass-through nodes in front of it; return (input, region nodes) when
    the region has exactly one external input and only its last node is read from outside, else None."""
    region = set(core)
    changed = True
    while changed:  # absorb activation quantizers (and what only re-reads them) on the region's inputs
        changed = False
        for n in list(region):
            for a in n.all_input_nodes:
                if a not in region and (_is_fq(gm, a) or a.op == "get_attr"):
                    region.add(a)
                    changed = True
    externals = {a for n in region for a in n.all_input_nodes if a not in region}
    if len(externals) != 1:
        return None
    last = max(region, key=order.__getitem__)
    for n in region:
        if n is last or _is_fq(gm, n):
            continue  # a quantizer read from outside only recomputes the same value there
        if any(u not in region for u in n.users):
            return None
    return externals.pop(), sorted(region, key=order.__getitem__)


def _trailing(gm: fx.GraphModule, n: fx.Node) -> fx.Node:
    """``n`` or the activation that is its only reader."""
    users = list(n.users)
    if len(users) == 1 and node_kind(gm, users[0]) in ("relu", "act"):
        return users[0]
    return n


def _prefix(target: str, depth: int) -> str:
    return ".".join(target.split(".")[:depth])


def partition(gm: fx.GraphModule, mode: str = "layer") -> list[Unit]:
    """The reconstruction units of a prepared model in graph order (``mode``: ``layer`` or ``block``)."""
    if mode not in UNIT_MODES:
        raise ValueError(f"unit mode {mode!r}; accepted: {', '.join(UNIT_MODES)}")
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    weighted = [n for n in nodes if isinstance(node_module(gm, n), WEIGHTED)]
    units: list[Unit] = []
    taken: set[fx.Node] = set()
    if mode == "block":
        for unit in _residual_blocks(gm, nodes, order) + _prefix_blocks(gm, nodes, order, weighted):
            if taken.isdisjoint(unit.nodes):
                units.append(unit)
                taken.update(unit.nodes)
    for w in weighted:
        if w in taken:
            continue
        out = _trailing(gm, w)
        core = {w, out}
        found = _region(gm, core, order)
        if found is None:  # e.g. an activation read twice: the layer output alone
            out, found = w, _region(gm, {w}, order)
        assert found is not None, f"layer {w.target} has more than one input"
        inp, region = found
        units.append(Unit(str(w.target), "layer", inp, out, region, [str(w.target)]))
    units.sort(key=lambda u: order[u.output])
    return units


def _residual_blocks(gm: fx.GraphModule, nodes: list[fx.Node], order: dict[fx.Node, int]) -> list[Unit]:
    out = []
    for add in [n for n in nodes if node_kind(gm, n) == "add"]:
        ins = add.all_input_nodes
        if len(ins) != 2:
            continue
        common = (_ancestors(ins[0]) | {ins[0]}) & (_ancestors(ins[1]) | {ins[1]})
        if not common:
            continue
        fork = max(common, key=order.__getitem__)
        inside = {n for n in _ancestors(add) if fork in _ancestors(n)} | {add}
        end = _trailing(gm, add)
        inside.add(end)
        layers = [str(n.target) for n in nodes if n in inside and isinstance(node_module(gm, n), WEIGHTED)]
        found = _region(gm, inside, order)
        if not layers or found is None:
            continue
        inp, region = found
        out.append(Unit(_common_prefix(layers), "block", inp, end, region, layers))
    return out


def _common_prefix(names: Sequence[str]) -> str:
    parts = [n.split(".") for n in names]
    common = []
    for tokens in zip(*parts, strict=False):
        if len(set(tokens)) != 1:
            break
        common.append(tokens[0])
    return ".".join(common) or names[0]


def _prefix_blocks(
    gm: fx.GraphModule, nodes: list[fx.Node], order: dict[fx.Node, int], weighted: list[fx.Node]
) -> list[Unit]:
    # blocks without a shortcut: weighted modules sharing the module-path prefix that names the residual blocks
    # (``blocks.1.0`` in timm's MobileNetV2), chained from one input to one output
    residual = _residual_blocks(gm, nodes, order)
    depths = {len(u.name.split(".")) for u in residual if "." in u.name}
    if len(depths) != 1:
        return []
    depth = depths.pop()
    groups: dict[str, list[fx.Node]] = {}
    for w in weighted:
        target = str(w.target)
        if len(target.split(".")) > depth:
            groups.setdefault(_prefix(target, depth), []).append(w)
    out = []
    for name, members in groups.items():
        if len(members) < 2:
            continue
        first, last = members[0], members[-1]
        end = _trailing(gm, last)
        inside = {n for n in nodes if order[first] <= order[n] <= order[end]}
        found = _region(gm, inside, order)
        if found is None:
            continue
        inp, region = found
        out.append(Unit(name, "block", inp, end, region, [str(m.target) for m in members]))
    return out


def subgraph_module(gm: fx.GraphModule, inputs: Sequence[fx.Node], outputs: Sequence[fx.Node]) -> fx.GraphModule:
    """A ``GraphModule`` computing ``outputs`` from ``inputs`` (a tuple when several outputs), with the nodes of
    ``gm`` in between; it shares ``gm``'s modules. ValueError if the outputs need another graph input."""
    needed: set[fx.Node] = set()
    stack = list(outputs)
    stop = set(inputs)
    while stack:
        n = stack.pop()
        if n in needed or n in stop:
            continue
        if n.op == "placeholder":
            raise ValueError(f"the region needs graph input {n.name!r} besides {[i.name for i in inputs]}")
        needed.add(n)
        stack.extend(n.all_input_nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, n in enumerate(inputs):
        env[n] = graph.placeholder(f"x{i}")
    for n in gm.graph.nodes:
        if n in needed:
            env[n] = graph.node_copy(n, lambda a: env[a])
    result = [env[n] for n in outputs]
    graph.output(result[0] if len(result) == 1 else tuple(result))
    sub = fx.GraphModule(gm, graph)
    sub.train(gm.training)
    return sub


def graph_input(gm: fx.GraphModule) -> fx.Node:
    """The (single) image input of a prepared model."""
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


@torch.no_grad()
def capture(gm: fx.GraphModule, targets: Sequence[fx.Node], images: torch.Tensor,
            batch_size: int = 256) -> list[torch.Tensor]:
    """The values of ``targets`` for ``images`` (concatenated over batches), computing only what they need."""
    sub = subgraph_module(gm, [graph_input(gm)], list(targets))
    was = sub.training
    sub.eval()
    chunks: list[list[torch.Tensor]] = [[] for _ in targets]
    try:
        for i in range(0, images.shape[0], batch_size):
            out = sub(images[i : i + batch_size])
            out = out if isinstance(out, tuple) else (out,)
            for acc, t in zip(chunks, out, strict=True):
                acc.append(t.detach())
    finally:
        sub.train(was)
    return [torch.cat(c) for c in chunks]


@contextmanager
def quant_enabled(gm: nn.Module, *, weights: bool, acts: bool) -> Iterator[None]:
    """Turn weight / activation quantizers on or off for the duration (their previous state is restored)."""
    saved = [(fq, fq.enabled) for _, fq in quantizers(gm)]
    for fq, _ in saved:
        fq.enabled = weights if fq.kind == "weight" else acts
    try:
        yield
    finally:
        for fq, on in saved:
            fq.enabled = on
