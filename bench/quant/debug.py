"""The debugging workflow of the white paper (Sec. 3.7): bypass, weights-only / activations-only quantization,
and a per-layer sensitivity report (SQNR of each quantizer, accuracy with one layer quantized at a time)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from bench.engine.evaluate import evaluate
from bench.quant.insert import WEIGHTED, TiedRequant, quantizers, weighted_modules
from bench.quant.quantizer import FakeQuantize


def set_mode(gm: nn.Module, *, bypass: bool = False, only: str = "all") -> None:
    """Turn quantizers on or off: ``bypass`` turns all off; ``only`` keeps ``weights`` or ``acts`` on."""
    for _, fq in quantizers(gm):
        fq.enabled = not bypass and (only == "all" or (only == "weights") == (fq.kind == "weight"))


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(||x||^2 / ||x - xq||^2)`` in dB (inf when exact)."""
    noise = (x - xq).double().pow(2).sum().item()
    signal = x.double().pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


@torch.no_grad()
def quantizer_sqnr(gm: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """SQNR of every quantizer: weights on the deployed weight, activations on their input for ``images``."""
    out: dict[str, float] = {}
    for layer, m in weighted_modules(gm):
        fq = m.weight_fq
        if isinstance(fq, FakeQuantize) and fq.active:
            w = m.folded_weight_bias()[0]
            out[f"{layer}.weight_fq"] = sqnr_db(w, fq(w))
    seen: dict[str, list[float]] = {}  # name -> [signal energy, noise energy]
    hooks = []
    for name, fq in quantizers(gm):
        if fq.kind != "act" or not fq.active:
            continue

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], outp: torch.Tensor, name: str = name) -> None:
            x = inp[0]
            acc = seen.setdefault(name, [0.0, 0.0])
            acc[0] += x.double().pow(2).sum().item()
            acc[1] += (x - outp).double().pow(2).sum().item()

        hooks.append(fq.register_forward_hook(hook))
    was_training = gm.training
    gm.eval()
    try:
        gm(images)
    finally:
        for h in hooks:
            h.remove()
        gm.train(was_training)
    for name, (signal, noise) in seen.items():
        out[name] = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return out


def _layer_inputs(gm: nn.Module) -> dict[str, list[FakeQuantize]]:
    """For each weighted layer, the activation quantizers its input went through since the previous layer
    (walking back through pooling, re-quantization, flatten and activations)."""
    import torch.fx as fx

    assert isinstance(gm, fx.GraphModule)
    out: dict[str, list[FakeQuantize]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(str(node.target)), WEIGHTED):
            continue
        found: list[FakeQuantize] = []
        src = node.args[0]
        while isinstance(src, fx.Node) and src.op in ("call_module", "call_function", "call_method") and src.args:
            m = gm.get_submodule(str(src.target)) if src.op == "call_module" else None
            if isinstance(m, WEIGHTED):
                break
            if isinstance(m, FakeQuantize):
                found.append(m)
                break  # the tensor is quantized here; what came before belongs to the layer that produced it
            if isinstance(m, TiedRequant):
                found.append(m.source)  # its second argument is the pooling's input, read for its shape only
            elif not isinstance(src.args[0], fx.Node) or len([a for a in src.args if isinstance(a, fx.Node)]) > 1:
                break  # adds and concatenations join branches: stop there
            src = src.args[0]
        out[str(node.target)] = found
    return out


def sensitivity(
    gm: nn.Module, images: torch.Tensor, test_loader: Iterable, max_batches: int | None = None
) -> list[dict[str, Any]]:
    """Per weighted layer: SQNR of its weight and input quantizers, and test accuracy with only that layer's
    quantizers on (everything else in float). Restores the quantizers' state afterwards."""
    state = {id(fq): fq.enabled for _, fq in quantizers(gm)}
    set_mode(gm)  # SQNRs of every quantizer, whatever debug mode the model is in
    sq = quantizer_sqnr(gm, images)
    inputs = _layer_inputs(gm)
    rows = []
    try:
        for layer, m in weighted_modules(gm):
            set_mode(gm, bypass=True)
            mine = [m.weight_fq, *inputs.get(layer, [])]
            for fq in mine:
                if isinstance(fq, FakeQuantize):
                    fq.enabled = True
            ev = evaluate(gm, test_loader, max_batches)
            act_names = [n for n, fq in quantizers(gm) if any(fq is q for q in inputs.get(layer, []))]
            rows.append(
                {
                    "layer": layer,
                    "weight_bits": m.weight_fq.spec.bits if isinstance(m.weight_fq, FakeQuantize) else None,
                    "weight_sqnr_db": sq.get(f"{layer}.weight_fq"),
                    "input_quantizers": ",".join(act_names),
                    "input_sqnr_db": min((sq[n] for n in act_names if n in sq), default=None),
                    "top1_only_this_layer": ev["top1"],
                }
            )
    finally:
        for _, fq in quantizers(gm):
            fq.enabled = state[id(fq)]
    return rows
