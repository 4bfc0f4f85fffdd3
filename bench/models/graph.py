"""fx tracing of the benchmark archs and the conv -> BN pairing that BN folding relies on."""

from __future__ import annotations

import operator

import torch.fx as fx
from torch import nn


def _drop_identities(gm: fx.GraphModule) -> None:
    # timm leaves nn.Identity placeholders (drop_block, aa, se, drop_path, maxpool on the mini stems)
    # between layers; removing them makes conv -> bn -> act chains adjacent for pattern matching.
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _outplace_adds(gm: fx.GraphModule) -> None:
    # ResNet blocks do ``x += shortcut``; rewriting it as ``operator.add`` gives quantizer insertion one add
    # op to match. Safe only when the mutated value has no other user (it would see the mutation).
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is operator.iadd:
            lhs = node.args[0]
            if isinstance(lhs, fx.Node) and len(lhs.users) == 1:
                node.target = operator.add


class _Tracer(fx.Tracer):
    # fx keeps only torch.nn's own modules as call_module leaves; subclasses and modules of ours that the graph
    # pass must see as one node (CLE's FoldedConv2d, ChannelClip) say so with a class attribute ``fx_leaf = True``
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return bool(getattr(m, "fx_leaf", False)) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a (normalised) model into a GraphModule sharing its submodules.

    Besides ``torch.fx.symbolic_trace`` this keeps modules marked ``fx_leaf`` as single nodes, removes
    ``nn.Identity`` call_module nodes and turns in-place residual adds into ``operator.add``; the GraphModule
    computes the same outputs as ``model`` and starts in the same train/eval mode.
    """
    tracer = _Tracer()
    graph = tracer.trace(model)
    name = model.__class__.__name__ if isinstance(model, nn.Module) else model.__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    _drop_identities(gm)
    _outplace_adds(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.training = model.training
    return gm


def set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``target`` of ``gm`` by ``module``."""
    parent_name, _, leaf = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, leaf, module)


def node_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls (None for any other node)."""
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _bn_user(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The single BatchNorm2d call_module consuming ``node``, or None."""
    users = list(node.users)
    if len(users) == 1 and isinstance(node_module(gm, users[0]), nn.BatchNorm2d):
        return users[0]
    return None


def _conv_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if isinstance(node_module(gm, n), nn.Conv2d)]


def conv_bn_pairs(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` for each Conv2d call_module whose only user is a BatchNorm2d call_module.

    In graph (execution) order; these are the pairs BN folding can merge.
    """
    pairs = []
    for node in _conv_nodes(gm):
        bn = _bn_user(gm, node)
        if bn is not None:
            pairs.append((str(node.target), str(bn.target)))
    return pairs


def unpaired_convs(gm: fx.GraphModule) -> list[str]:
    """Names of Conv2d call_modules whose single user is not a BatchNorm2d call_module (empty for our archs)."""
    return [str(n.target) for n in _conv_nodes(gm) if _bn_user(gm, n) is None]
