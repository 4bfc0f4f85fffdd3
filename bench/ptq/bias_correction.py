"""Bias correction of a prepared, calibrated model (Nagel et al. 2019; white paper Sec. 3.3).

Weight quantization shifts the expected output of a layer by ``E[(W_q - W) x] = dW E[x]``; subtracting that per
output channel from the layer's bias restores ``E[y_q] = E[y]`` at no inference cost. Two estimates of the shift:

- empirical: ``E[y_q] - E[y]`` measured on calibration images, layer by layer in graph order, each layer seeing the
  quantized model with the layers before it already corrected (the corrected bias is an integer on the target's
  accumulator grid, ``bench.quant.qmodules``: it is aimed at the unrounded value, half a grid step away at most);
- analytic (data-free): ``dW E[x]`` with ``E[x]`` the mean of a clipped normal, the preceding layer's pre-activation
  taken to be ``N(beta, gamma^2)`` from its BatchNorm (a ``QuantConvBn2d``'s BN or a CLE ``FoldedConv2d``'s
  ``bn_beta`` / ``bn_gamma``) and the clip that of the activation in between (ReLU, ReLU6 / Hardtanh, ChannelClip).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from bench.ptq.cle import FoldedConv2d
from bench.quant.clip import ChannelClip
from bench.quant.debug import set_mode
from bench.quant.insert import WEIGHTED, TiedRequant, quantizers
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize

METHODS = ("empirical", "analytic")


class _StopForward(Exception):
    """Raised by a forward hook once the layer of interest has produced its output: the rest is not needed."""


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for i in range(0, images.shape[0], batch_size):
        yield images[i : i + batch_size]


@torch.no_grad()
def output_bias(m: nn.Module) -> nn.Parameter:
    """The parameter that shifts a quantized layer's (eval) output one-to-one per output channel: the conv / linear
    bias (created as zeros if missing), or the BN's beta when the BN is kept (strategy -1) or folded with its
    running statistics (strategies 1-4)."""
    if isinstance(m, QuantConvBn2d) and m.bn is not None:
        if m.bn.bias is None:
            raise ValueError("a BatchNorm2d without affine parameters has no bias to learn")
        return m.bn.bias
    inner = m.linear if isinstance(m, QuantLinear) else m.conv
    if inner.bias is None:
        inner.bias = nn.Parameter(torch.zeros(inner.weight.shape[0], device=inner.weight.device))
    return inner.bias


@torch.no_grad()
def add_output_bias(module: nn.Module, delta: Tensor) -> None:
    """Shift the output of a quantized weighted module by ``delta`` (one value per output channel), in place.

    ``QuantConv2d`` / ``QuantLinear`` / ``QuantConvBn2d`` strategy 0: the layer's bias (created when missing).
    ``QuantConvBn2d`` strategies -1 and 1..4: BN's ``beta``, which every strategy adds to its output unscaled (folded
    or not, in eval and in training); a BN without affine parameters gets ``delta * sigma_run`` on the conv bias.
    """
    if not isinstance(module, QuantLinear | QuantConv2d | QuantConvBn2d):
        raise TypeError(f"add_output_bias: {type(module).__name__} is not a quantized conv / linear module")
    bn = module.bn if isinstance(module, QuantConvBn2d) else None
    if bn is not None and bn.bias is None:  # BN without affine parameters: the shift goes before its 1 / sigma
        assert bn.running_var is not None
        delta = delta * torch.sqrt(bn.running_var + bn.eps)
        module.conv.bias = module.conv.bias if module.conv.bias is not None else nn.Parameter(
            torch.zeros_like(delta))
        module.conv.bias.add_(delta.to(module.conv.bias))
        return
    p = output_bias(module)
    p.add_(delta.to(p))


def _corrected(gm: fx.GraphModule) -> tuple[list[tuple[str, nn.Module]], int]:
    """Weighted modules in graph order whose weight quantizer is on (a bypassed weight has no error to correct),
    and the number of those left out."""
    out, skipped = [], 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(str(node.target))
        if not isinstance(m, WEIGHTED):
            continue
        fq = m.weight_fq
        if isinstance(fq, FakeQuantize) and fq.active:
            out.append((str(node.target), m))
        else:
            skipped += 1
    return out, skipped


def _channel_sums(y: Tensor, linear: bool) -> tuple[Tensor, int]:
    # per output channel sum (float64) and count: channels on axis 1 for a conv, the last axis for a linear layer
    y = y.detach().double()
    if linear:
        return y.reshape(-1, y.shape[-1]).sum(0), y.numel() // y.shape[-1]
    return y.transpose(0, 1).reshape(y.shape[1], -1).sum(1), y.numel() // y.shape[1]


def _empirical(gm: fx.GraphModule, layers: list[tuple[str, nn.Module]], images: Tensor, batch_size: int) -> None:
    state = {id(fq): fq.enabled for _, fq in quantizers(gm)}

    def restore_quantizers() -> None:
        for _, fq in quantizers(gm):
            fq.enabled = state[id(fq)]

    # E[y] of every layer in the float model: one pass, all quantizers off
    sums: dict[str, list[Any]] = {name: [0.0, 0] for name, _ in layers}
    hooks = []
    for name, m in layers:

        def acc(mod: nn.Module, inp: Any, out: Tensor, name: str = name) -> None:
            s, n = _channel_sums(out, isinstance(mod, QuantLinear))
            sums[name][0] += s
            sums[name][1] += n

        hooks.append(m.register_forward_hook(acc))
    set_mode(gm, bypass=True)
    try:
        for x in _batches(images, batch_size):
            gm(x)
    finally:
        for h in hooks:
            h.remove()
        restore_quantizers()
    fp_mean = {name: s / n for name, (s, n) in sums.items()}

    # E[y_q] layer by layer, the earlier layers corrected; each pass stops at the layer measured
    for name, m in layers:
        seen: list[Any] = [0.0, 0]

        def stop(mod: nn.Module, inp: Any, out: Tensor, seen: list[Any] = seen) -> None:
            s, n = _channel_sums(out, isinstance(mod, QuantLinear))
            seen[0] += s
            seen[1] += n
            raise _StopForward

        h = m.register_forward_hook(stop)
        try:
            for x in _batches(images, batch_size):
                try:
                    gm(x)
                except _StopForward:
                    pass
        finally:
            h.remove()
        # the shift of the float bias: the measured output includes the rounding of the integer bias, which the
        # corrected bias is rounded again by (so the correction aims at the unrounded value: error <= half a step)
        rounding = m.bias_rounding()
        shift = fp_mean[name] - seen[0] / seen[1]
        if rounding is not None:
            shift = shift + rounding.double()
        add_output_bias(m, shift.float())


# ------------------------------------------------------------------------------------------------ analytic


def clipped_normal_mean(mu: Tensor, sigma: Tensor, lo: Tensor | float, hi: Tensor | float) -> Tensor:
    """``E[clip(X, lo, hi)]`` for ``X ~ N(mu, sigma^2)`` elementwise; ``lo`` / ``hi`` may be infinite.

    ``lo Phi(alpha) + hi (1 - Phi(beta)) + mu (Phi(beta) - Phi(alpha)) + sigma (phi(alpha) - phi(beta))`` with
    ``alpha = (lo - mu) / sigma``, ``beta = (hi - mu) / sigma``; ``sigma = 0`` gives ``clip(mu, lo, hi)``.
    """
    mu = mu.double()
    sigma = sigma.double().abs()
    lo_t = torch.as_tensor(lo, dtype=torch.float64).expand_as(mu)
    hi_t = torch.as_tensor(hi, dtype=torch.float64).expand_as(mu)
    safe = torch.where(sigma > 0, sigma, 1.0)
    alpha = (lo_t - mu) / safe
    beta = (hi_t - mu) / safe
    cdf_a, cdf_b = torch.special.ndtr(alpha), torch.special.ndtr(beta)

    def pdf(t: Tensor) -> Tensor:
        return torch.where(torch.isfinite(t), torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi), 0.0)

    # an infinite bound contributes nothing (its probability mass is 0): avoid inf * 0
    low = torch.where(torch.isfinite(lo_t), lo_t * cdf_a, 0.0)
    high = torch.where(torch.isfinite(hi_t), hi_t * (1 - cdf_b), 0.0)
    mean = low + high + mu * (cdf_b - cdf_a) + safe * (pdf(alpha) - pdf(beta))
    return torch.where(sigma > 0, mean, torch.minimum(torch.maximum(mu, lo_t), hi_t))


def _act_bounds(gm: fx.GraphModule, node: fx.Node) -> tuple[Tensor | float, Tensor | float] | None:
    """Clip range of an activation node whose output mean follows from a normal input; None if it is not one."""
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if isinstance(m, nn.ReLU):
            return 0.0, math.inf
        if isinstance(m, nn.Hardtanh):  # ReLU6 included
            return float(m.min_val), float(m.max_val)
        if isinstance(m, ChannelClip):
            return 0.0, m.upper.detach().double()
        return None
    if node.op == "call_function":
        if node.target in (torch.relu, F.relu):
            return 0.0, math.inf
        if node.target is F.relu6:
            return 0.0, 6.0
        if node.target is F.hardtanh:
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
            return float(lo), float(hi)  # type: ignore[arg-type]
    if node.op == "call_method" and node.target == "relu":
        return 0.0, math.inf
    return None


def _preactivation(m: nn.Module) -> tuple[Tensor, Tensor] | None:
    """``(beta, gamma)`` of a weighted module's output distribution ``N(beta, gamma^2)``, when a BN describes it."""
    if isinstance(m, QuantConvBn2d) and m.bn is not None:
        bn = m.bn
        ones = torch.ones(bn.num_features, device=bn.running_mean.device)  # type: ignore[union-attr]
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(ones)
        gamma = bn.weight.detach() if bn.weight is not None else ones
        return beta.double().clone(), gamma.double().clone()
    if isinstance(m, QuantConv2d) and isinstance(m.conv, FoldedConv2d):
        return m.conv.bn_beta.detach().double().clone(), m.conv.bn_gamma.detach().double().clone()
    return None


_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous"}


def _input_mean(gm: fx.GraphModule, node: fx.Node) -> Tensor | None:
    """``E[x]`` per input channel of the layer at ``node``, walking back over activation quantizers, flatten /
    dropout / global average pooling (mean-preserving), at most one activation, to a layer with a known output
    distribution. None when the input comes from anything else (network input, add, concat, max pooling, ...)."""
    src = node.args[0] if node.args else None
    bounds: tuple[Tensor | float, Tensor | float] | None = None
    while isinstance(src, fx.Node) and src.op in ("call_module", "call_function", "call_method"):
        m = gm.get_submodule(str(src.target)) if src.op == "call_module" else None
        tied = isinstance(m, TiedRequant)  # its second argument (the pooling's input) is read for its shape only
        if not tied and len([a for a in (*src.args, *src.kwargs.values()) if isinstance(a, fx.Node)]) != 1:
            return None  # joins branches (add, concat) or takes extra tensors
        if isinstance(m, FakeQuantize | TiedRequant):
            pass  # quantization noise is taken to be mean-free
        elif isinstance(m, WEIGHTED):
            dist = _preactivation(m)
            if dist is None:
                return None
            lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
            return clipped_normal_mean(dist[0], dist[1], lo, hi)
        elif bounds is not None:
            return None  # between the activation and the layer before it only quantizers are allowed
        elif (b := _act_bounds(gm, src)) is not None:
            bounds = b
        elif not (
            isinstance(m, _PASS_MODULES)
            or (isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)))
            or (src.op == "call_function" and src.target is torch.flatten)
            or (src.op == "call_method" and src.target in _PASS_METHODS)
        ):
            return None
        src = src.args[0]
    return None


def _output_gain(m: nn.Module) -> Tensor | float:
    # from the quantized weight's output units to the module's output: BN scales them for strategy -1 (no folding)
    if isinstance(m, QuantConvBn2d) and m.strategy == -1:
        bn = m.bn
        assert bn is not None and bn.running_var is not None
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        return sigma.reciprocal() if bn.weight is None else bn.weight.detach().double() / sigma
    return 1.0


@torch.no_grad()
def analytic_shift(m: nn.Module, mean_in: Tensor) -> Tensor | None:
    """``-dW E[x]`` in the module's output units: the analytic correction of a weighted module for input mean
    ``mean_in`` (per input channel; constant over space, zero padding ignored). None if the sizes do not match."""
    w = m.folded_weight_bias()[0].detach()  # type: ignore[operator]
    dw = (m.weight_fq(w) - w).double()  # type: ignore[operator]
    if isinstance(m, QuantLinear):
        if dw.shape[1] % mean_in.numel():
            return None
        e = mean_in.repeat_interleave(dw.shape[1] // mean_in.numel())  # flatten of (C, H, W): channel-major
        shift = dw @ e
    else:
        groups = m.conv.groups  # type: ignore[union-attr]
        if dw.shape[1] * groups != mean_in.numel():
            return None
        g = dw.reshape(groups, dw.shape[0] // groups, dw.shape[1], -1).sum(-1)
        shift = (g @ mean_in.reshape(groups, -1, 1)).reshape(-1)
    return -shift * _output_gain(m)


def _analytic(gm: fx.GraphModule, layers: list[tuple[str, nn.Module]]) -> int:
    names = dict(layers)
    todo: list[tuple[nn.Module, Tensor]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in names:
            continue
        m = names[str(node.target)]
        mean_in = _input_mean(gm, node)
        delta = None if mean_in is None else analytic_shift(m, mean_in)
        if delta is not None:
            todo.append((m, delta))
    # applied after all are computed: a QuantConvBn2d's correction moves its beta, which the next layer's E[x] must
    # not see (the corrected quantized output has the float model's distribution, the BN's original beta)
    for m, delta in todo:
        add_output_bias(m, delta.float())
    return len(todo)


def correct_bias(gm: fx.GraphModule, method: str, images: Tensor, batch_size: int = 256) -> dict[str, Any]:
    """Bias correction of a prepared and calibrated model, in place (module docstring); ``images`` are used by the
    empirical method only. Layers whose weight quantizer is off are left alone; the analytic method also skips
    layers whose input distribution it cannot derive. Eval mode during the passes; mode and quantizer states are
    restored. Returns ``{"bias_correction": method, "bias_corrected_layers": n, "bias_correction_skipped": k}``.
    """
    if method not in METHODS:
        raise ValueError(f"bias correction {method!r} unknown; accepted: {', '.join(METHODS)}")
    layers, skipped = _corrected(gm)
    modes = [(m, m.training) for m in gm.modules()]  # per module: a model may hold frozen (eval) BNs in training
    gm.eval()
    try:
        with torch.no_grad():
            if method == "empirical":
                _empirical(gm, layers, images, batch_size)
                done = len(layers)
            else:
                done = _analytic(gm, layers)
    finally:
        for m, training in modes:
            m.training = training
    return {
        "bias_correction": method,
        "bias_corrected_layers": done,
        "bias_correction_skipped": skipped + len(layers) - done,
    }
