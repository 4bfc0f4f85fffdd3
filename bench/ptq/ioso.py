"""IOSO (seed 002): input channel-wise scale grouping (ISG) and output channel-wise scale and offset (OSO) on top of
AdaRound's learned rounding, fitted by block reconstruction (Sec. 3, App. C).

A layer computes ``z_k = gamma^z_k * s_k * sum_i gamma^y_i * w_int_ki * x_i + b_k + phi_k`` (Sec. 3.2, eq. 6), before
its activation function (App. D.7: the OSO placed after the activation loses accuracy):

- ``w_int`` are AdaRound's codes (eq. 7-8) on the profile's per-channel grid with the calibrated scale ``s``;
- OSO: ``gamma^z`` (one per output channel, init 1) scales the layer's output and ``phi`` is learned as the output
  bias itself (``phi + (gamma^z - 1) b`` of eq. 6, the same family of functions). Both fold into the per-channel
  requantization multiplier and bias the deployed layer has anyway: no extra operation at inference;
- ISG: every input channel ``i`` picks one factor ``gamma^y_i`` of the group values (1, 1 - 2^-4, 1 + 2^-4) through
  the rectified softmax ``s(R_ip)`` of eq. 10 (``gamma^y_i = sum_p gamma^G_p s(R_ip) / sum_j s(R_ij)``, eq. 9),
  regularised like AdaRound's rounding (eq. 11) and hardened to the argmax at the end. Each group costs a shift and
  an add per output feature (Table 1, App. F); depthwise layers need no ISG (Sec. 4.4).

:func:`isg_int_ops` counts the integer operations of a model with and without ISG as Table 5 / App. F do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from bench.ptq.bias_correction import output_bias
from bench.ptq.frozen import FrozenWeightQuantizer
from bench.ptq.rounding import GAMMA, ZETA, AdaRoundQuantizer, round_regularizer
from bench.quant.insert import weighted_modules
from bench.quant.qmodules import QuantLinear
from bench.quant.quantizer import FakeQuantize

GROUP_VALUES = (1.0, 1.0 - 2**-4, 1.0 + 2**-4)  # the paper's gamma^G (Sec. 4)


def rectified_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 10: ``clamp(softmax(R)_p (zeta - gamma) + gamma, 0, 1)`` over the last dimension."""
    return torch.clamp(torch.softmax(logits, -1) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _conv_groups(m: nn.Module) -> int:
    if isinstance(m, QuantLinear):
        return 1
    return int(m.conv.groups)


def is_depthwise(m: nn.Module) -> bool:
    """A conv whose every output channel reads one input channel (ISG is pointless there)."""
    if isinstance(m, QuantLinear):
        return False
    c = m.conv
    return c.groups > 1 and c.groups == c.in_channels


class IOSOQuantizer(AdaRoundQuantizer):
    """AdaRound rounding + OSO output scale ``out_scale`` + ISG ``group_logits`` (None for depthwise layers)."""

    def __init__(self, source: FakeQuantize, weight: torch.Tensor, groups: int = 1, isg: bool = True,
                 group_values: Sequence[float] = GROUP_VALUES) -> None:
        super().__init__(source, weight)
        if not source.spec.per_channel:
            raise ValueError("IOSO needs per-output-channel weight scales")
        self.out_scale = nn.Parameter(torch.ones(weight.shape[0]))
        self.conv_groups = groups
        self.register_buffer("group_values", torch.tensor(list(group_values), dtype=torch.float32))
        in_channels = weight.shape[1] * groups
        # zero logits: equal probabilities, gamma^y = mean of the group values (= 1 for the paper's values)
        self.group_logits = nn.Parameter(torch.zeros(in_channels, len(group_values))) if isg else None
        self.hard_groups = False
        self.to(weight.device)  # the new parameters and buffers are on the CPU; the model may be on CUDA

    def in_scale(self) -> torch.Tensor | None:
        """``gamma^y`` per input channel (eq. 9; the argmax group once hardened)."""
        if self.group_logits is None:
            return None
        if self.hard_groups:
            return self.group_values[self.group_logits.argmax(-1)]
        p = rectified_softmax(self.group_logits)
        return (p * self.group_values).sum(-1) / p.sum(-1).clamp_min(1e-12)

    def _expand_in(self, gy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # per input channel -> the weight's (out, in / groups) layout, broadcastable over the kernel
        out_ch, in_per = w.shape[0], w.shape[1]
        per_group = gy.reshape(self.conv_groups, in_per)
        idx = torch.arange(out_ch, device=w.device) // (out_ch // self.conv_groups)
        return per_group[idx].reshape([out_ch, in_per] + [1] * (w.dim() - 2))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        # |gamma^z|: a scale folded into a positive per-channel scale (a sign flip would move codes off the grid)
        w = super().quantize(x) * self.out_scale.abs().reshape([-1] + [1] * (x.dim() - 1))
        gy = self.in_scale()
        return w if gy is None else w * self._expand_in(gy, x)

    def group_regularizer(self, beta: float) -> torch.Tensor:
        """Eq. 11's second term: drives every ``s(R_ip)`` to 0 or 1."""
        if self.group_logits is None:
            return torch.zeros(())
        return round_regularizer(rectified_softmax(self.group_logits), beta)

    def group_counts(self) -> list[int]:
        """How many input channels chose each group value (after hardening)."""
        if self.group_logits is None:
            return []
        return torch.bincount(self.group_logits.argmax(-1), minlength=len(self.group_values)).tolist()

    @torch.no_grad()
    def freeze(self, weight: torch.Tensor) -> FrozenWeightQuantizer:
        """Hard rounding and groups; ``|gamma^z|`` folded into the per-channel scale."""
        self.soft = False
        self.hard_groups = True
        gy = self.in_scale()
        scale = self.scale * self.out_scale.detach().abs()
        codes = self.codes(weight)
        in_scale = None if gy is None else self._expand_in(gy, weight)
        return FrozenWeightQuantizer(self, codes, scale, self.zero_point, in_scale)


def make_quantizer(isg: bool = True, group_values: Sequence[float] = GROUP_VALUES) -> Any:
    """A ``Stage.quantizer`` factory ``(quantizer, weight, module) -> IOSOQuantizer`` (no ISG on depthwise)."""

    def build(source: FakeQuantize, weight: torch.Tensor, module: nn.Module) -> IOSOQuantizer:
        return IOSOQuantizer(source, weight, _conv_groups(module), isg and not is_depthwise(module), group_values)

    return build


def oso_parameters(modules: list[nn.Module], *, groups: bool) -> list[nn.Parameter]:
    """The IOSO parameters of a unit's layers: output scales and biases, and (``groups``) the ISG logits."""
    params: list[nn.Parameter] = []
    for m in modules:
        fq = getattr(m, "weight_fq", None)
        if not isinstance(fq, IOSOQuantizer):
            continue
        params += [fq.out_scale, output_bias(m)]
        if groups and fq.group_logits is not None and not fq.hard_groups:
            params.append(fq.group_logits)
    return params


def groups_regularizer(modules: list[nn.Module], beta: float) -> torch.Tensor:
    """Sum of the ISG regularisers of a unit's layers."""
    total = torch.zeros(())
    for m in modules:
        fq = getattr(m, "weight_fq", None)
        if isinstance(fq, IOSOQuantizer) and not fq.hard_groups:
            total = total + fq.group_regularizer(beta)
    return total


def harden_groups(gm: nn.Module) -> None:
    """Fix every ISG assignment to its argmax (after weight reconstruction; App. C: R is not learned later)."""
    for _, m in weighted_modules(gm):
        if isinstance(m.weight_fq, IOSOQuantizer):
            m.weight_fq.hard_groups = True


@torch.no_grad()
def isg_int_ops(gm: fx.GraphModule, image: torch.Tensor, n_groups: int = len(GROUP_VALUES)) -> dict[str, Any]:
    """Integer operations of the conv / linear layers for one image (App. F): each output feature costs
    ``k`` multiplications and ``k - 1`` additions (``k`` = input channels per group x kernel size); ISG adds
    ``2 (g - 1)`` (a shift and an add per non-unit group) per output feature of every non-depthwise layer."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in weighted_modules(gm):
        hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: shapes.__setitem__(name, tuple(o.shape))))
    was = gm.training
    gm.eval()
    try:
        gm(image[:1])
    finally:
        for h in hooks:
            h.remove()
        gm.train(was)
    base = extra = 0
    for name, m in weighted_modules(gm):
        out = shapes[name]
        outputs = 1
        for d in out[1:]:
            outputs *= d
        w = m.linear.weight if isinstance(m, QuantLinear) else m.conv.weight
        k = 1
        for d in w.shape[1:]:
            k *= d
        base += outputs * (2 * k - 1)
        if not is_depthwise(m):
            extra += outputs * 2 * (n_groups - 1)
    return {"int_ops": base, "isg_ops": extra, "isg_ops_ratio": extra / base if base else 0.0}

