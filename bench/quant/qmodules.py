"""Quantized layer modules the graph pass substitutes for ``nn.Conv2d``, ``nn.Linear`` and Conv2d+BatchNorm2d pairs.

Each holds its weight fake quantizer ``weight_fq`` (a ``FakeQuantize``, or any module mapping tensor -> tensor) and
fake-quantizes the weight that would be deployed. Input quantization is not done here (the graph pass inserts
activation quantizers in front of these modules).

``QuantConvBn2d`` implements the BN-folding strategies of MQBench Sec. 3.2 (Fig. 3); with ``sigma = sqrt(var + eps)``
and Eq. (4) ``w_fold = w * gamma / sigma``, ``b_fold = beta + (b - mu) * gamma / sigma``:

- ``-1`` no folding (academic): ``bn(conv(x, fq(w)) + b)``, BN kept in float.
- ``0`` BN merged into the conv with running statistics at construction and removed (``bn`` is None).
- ``1`` folded with running statistics that are never updated; ``w``, ``gamma``, ``beta`` stay trainable.
- ``2`` (Jacob et al. 2018) training: an FP32 conv gives the batch statistics, which are folded into the weights.
- ``3`` (Krishnamoorthi 2018) training: weights folded with running statistics, output rescaled by
  ``sigma_run / sigma_batch`` and the bias built from the batch mean.
- ``4`` (PyTorch's ``ConvBn2d``) training: the folded-weight conv output is divided back by ``gamma / sigma_run``
  and a real BN follows.

In evaluation every strategy but -1 computes ``conv(x, fq(w_fold), b_fold)`` with running statistics, the same
ops as the deployed ``to_folded()`` module, so both give identical outputs.

Integer bias: an integer target adds the bias to the int32 accumulator, as ``round(b / (s_x s_w))`` on the grid
``s_x s_w`` (input scale times the weight scale of each output channel). Wherever the quantized layer computes its
deployed form (plain layers, strategies 0-2, and every strategy in evaluation) the bias is rounded onto that grid
(straight-through), given the layer's input quantizer (``set_input_quantizer``, set by the graph pass) and a uniform
weight grid. Strategy -1 keeps BN in float and the target applies it as a per-channel rescale ``a = gamma / sigma``
with an integer bias on the grid ``a s_x s_w``: in evaluation ``bn(conv)`` is computed that way.

"Training" means ``bn.training`` (it follows ``.train()`` / ``.eval()``): putting only ``bn`` in eval mode freezes
the statistics (the running-statistics path), as BN freezing does late in QAT.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.quant import fused_conv, fused_divbn, fused_fold

STRATEGIES = (-1, 0, 1, 2, 3, 4)

# smallest |gamma / sigma_run| strategy 4 divides by: a channel whose gamma reached 0 must not produce inf / nan
_SCALE_FLOOR = 1e-5


def fold_conv_bn_weights(
    w: Tensor,
    b: Tensor | None,
    bn_mean: Tensor,
    bn_var: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """MQBench Eq. (4): ``w * gamma / sqrt(var + eps)`` and ``beta + (b - mean) * gamma / sqrt(var + eps)``.

    ``w`` has its output channels on axis 0 (conv or linear weight). A missing bias counts as 0, a missing
    ``gamma`` / ``beta`` (``affine=False``) as 1 / 0. Differentiable in every tensor argument.
    """
    scale = torch.sqrt(bn_var + eps).reciprocal()
    if gamma is not None:
        scale = gamma * scale
    w_fold = w * scale.reshape([-1] + [1] * (w.dim() - 1))
    shift = -bn_mean if b is None else b - bn_mean
    b_fold = shift * scale
    if beta is not None:
        b_fold = beta + b_fold
    return w_fold, b_fold


def _on_grid(fq: object) -> bool:
    # a calibrated, active quantizer with a uniform grid (s * (q - z)): its values are integer codes times a scale
    return (getattr(fq, "calibrated", False) and getattr(fq, "active", False) and getattr(fq, "uniform", False)
            and hasattr(fq, "grid"))


class _InputLinked(nn.Module):
    """A weighted layer that knows the quantizer of its input (not a submodule: it belongs to the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self._input_fq: list[nn.Module] = []

    def set_input_quantizer(self, fq: nn.Module | None) -> None:
        """The quantizer whose grid the layer's input lies on (None: a float input, no integer bias)."""
        self._input_fq = [] if fq is None else [fq]

    @property
    def input_quantizer(self) -> nn.Module | None:
        """See :meth:`set_input_quantizer`."""
        return self._input_fq[0] if self._input_fq else None

    def bias_step(self, weight: Tensor) -> Tensor | None:
        """``s_x s_w`` per output channel, the grid of the integer bias (None when input or weight is not on a
        uniform grid: calibration, bypass, float input, non-uniform levels)."""
        fq_x, fq_w = self.input_quantizer, self.weight_fq
        if fq_x is None or not _on_grid(fq_x) or not _on_grid(fq_w) or fq_x.ch_axis is not None:
            return None
        s_x, _ = fq_x.grid()
        s_w, _ = fq_w.grid(weight)
        return (s_x.reshape(()) * s_w.reshape(-1)).detach().expand(weight.shape[0])

    @torch.no_grad()
    def bias_rounding(self) -> Tensor | None:
        """Per output channel, what the integer bias adds to the evaluated output beyond the float bias (the
        rounding error ``round(b / g) g - b`` on the bias grid ``g``); None when there is no integer bias."""
        b, w = self.deployed_bias()
        step = self.bias_step(w)
        if b is None or step is None:
            return None
        grid = step * self.bias_gain()
        return torch.round(b / grid) * grid - b

    def deployed_bias(self) -> tuple[Tensor | None, Tensor]:
        """``(bias, weight)`` as the evaluated (deployed) form adds and quantizes them."""
        w, b = self.folded_weight_bias()  # type: ignore[attr-defined]
        return b, w

    def bias_gain(self) -> Tensor | float:
        """The factor between the accumulator grid ``s_x s_w`` and the grid of the bias in the output (1, or BN's
        ``gamma / sigma`` where BN stays in float)."""
        return 1.0

    def int_bias(self, bias: Tensor | None, weight: Tensor) -> Tensor | None:
        """``bias`` rounded onto the accumulator grid (straight-through), or as it is when there is no grid."""
        if bias is None:
            return None
        step = self.bias_step(weight)
        if step is None:
            return bias
        return bias + (torch.round(bias / step) * step - bias).detach()


def _new_conv_like(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    # a fresh Conv2d with conv's geometry and new Parameters holding copies of weight / bias
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


class _DivChannels(torch.autograd.Function):
    """``y / f`` for a per-channel ``f`` of shape ``(1, C, 1, 1)``, with the gradients autograd's ``div`` computes,
    bit for bit, in fewer passes.

    Autograd's ``div`` saves ``y`` and returns ``grad / f`` and ``sum(-grad * ((y / f) / f))`` over (N, H, W). Here
    the output ``z = y / f`` is saved instead (the same ``y / f``; behind a conv without bias, the BN that follows
    keeps that very tensor, so one activation-sized tensor less is held), and the sum is negated once instead of every
    element (negation is exact and rounding is symmetric: the sum of the negated products is the negated sum, in the
    same reduction order; but for the sign of an exactly zero sum, -0 here where autograd's is +0: a training-mode BN
    behind it normalises the scale away, so f's gradient is tiny and now and then exactly zero; the records since this
    node came in were made with it). With ``inplace`` (a fresh conv output that nothing else holds) ``y`` is divided
    in place: the same quotients, one activation-sized buffer less written and allocated."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, f: Tensor, inplace: bool = False) -> Tensor:  # type: ignore[override]
        if inplace:
            z = y.div_(f)
            ctx.mark_dirty(y)
        else:
            z = y / f
        ctx.save_for_backward(z, f)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        z, f = ctx.saved_tensors
        fused = fused_fold.div_channels_grad(grad, z, f)  # both products in one pass (fused=true), or None
        grad_y = (grad / f if fused is None else fused[0]) if ctx.needs_input_grad[0] else None
        grad_f = None
        if ctx.needs_input_grad[1]:
            w = (z / f).mul_(grad) if fused is None else fused[1]
            grad_f = w.sum(dim=(0, 2, 3), keepdim=True).neg_()
        return grad_y, grad_f, None


def _per_out(gamma: Tensor | None, sigma: Tensor, dim: int) -> Tensor:
    # gamma / sigma shaped to scale a weight's output channels (axis 0)
    f = sigma.reciprocal() if gamma is None else gamma / sigma
    return f.reshape([-1] + [1] * (dim - 1))


class QuantConv2d(_InputLinked):
    """Conv2d whose weight goes through ``weight_fq`` (and whose bias is the target's integer bias).

    Holds the original conv (submodule ``conv``), so its weight / bias Parameters are shared, not copied.
    """

    def __init__(self, conv: nn.Conv2d, weight_fq: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.weight_fq = weight_fq

    def forward(self, x: Tensor) -> Tensor:
        # _conv_forward applies conv's stride / padding (incl. padding_mode) / dilation / groups, as nn.Conv2d does
        w = self.conv.weight
        return fused_conv.conv2d(self.conv, x, self.weight_fq(w), self.int_bias(self.conv.bias, w))

    def folded_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The float weight and bias quantized at deployment: the conv's own."""
        return self.conv.weight, self.conv.bias


class QuantLinear(_InputLinked):
    """Linear layer whose weight goes through ``weight_fq`` (integer bias as :class:`QuantConv2d`); holds the original
    module as ``linear`` (shared)."""

    def __init__(self, linear: nn.Linear, weight_fq: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self.weight_fq = weight_fq

    def forward(self, x: Tensor) -> Tensor:
        w = self.linear.weight
        return F.linear(x, self.weight_fq(w), self.int_bias(self.linear.bias, w))

    def folded_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The float weight and bias quantized at deployment: the layer's own."""
        return self.linear.weight, self.linear.bias


class QuantConvBn2d(_InputLinked):
    """A Conv2d followed by its BatchNorm2d, with one of the MQBench BN-folding strategies -1, 0, 1, 2, 3, 4.

    ``conv`` and ``bn`` are the original modules (shared), except for strategy 0, where ``conv`` is a new Conv2d
    holding the folded weight and bias as new Parameters and ``bn`` is None. Strategies 2 and 3 compute the
    batch statistics from an extra FP32 conv; as in BN (and Jacob et al. / Krishnamoorthi) those statistics are
    part of the autograd graph, so without quantization the gradients equal those of conv followed by BN.
    Running statistics are updated like ``nn.BatchNorm2d`` (``momentum``, or a cumulative average when it is None;
    unbiased variance), before strategy 3 folds them (the order of PyTorch's ``ConvBn2d._forward_slow``).
    """

    bn: nn.BatchNorm2d | None

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, strategy: int, weight_fq: nn.Module) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"BN folding strategy {strategy!r} not in {STRATEGIES}")
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            raise ValueError("BN folding needs a BatchNorm2d with track_running_stats=True")
        if bn.num_features != conv.out_channels:
            raise ValueError(f"BatchNorm2d has {bn.num_features} features, conv has {conv.out_channels} outputs")
        self.strategy = strategy
        self.weight_fq = weight_fq
        # set by BN re-calibration (bench.ptq.calibrate.recalibrate_bn): forward collects batch statistics
        self.stat_sink: list[tuple[Tensor, Tensor, int]] | None = None
        if strategy == 0:
            # merged once with the running statistics; gamma, beta and the statistics are gone from then on
            with torch.no_grad():
                w, b = fold_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
                )
            self.conv = _new_conv_like(conv, w, b)
            self.bn = None
        else:
            self.conv = conv
            self.bn = bn

    def _bn(self) -> nn.BatchNorm2d:
        assert self.bn is not None, "strategy 0 has no BN"
        return self.bn

    def _fold_running(self) -> tuple[Tensor, Tensor]:
        bn = self._bn()
        assert bn.running_mean is not None and bn.running_var is not None
        return fold_conv_bn_weights(
            self.conv.weight, self.conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
        )

    def folded_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The deployed float weight and bias: folded with the running statistics (Eq. 4).

        Strategy 0 returns its (already folded) conv Parameters; strategy -1 (not folded) the conv's weight and
        bias, the bias possibly None. The result is differentiable in the parameters.
        """
        if self.strategy in (-1, 0):
            return self.conv.weight, self.conv.bias
        return self._fold_running()

    def to_folded(self) -> QuantConv2d:
        """The eval / deploy form: a ``QuantConv2d`` with a new Conv2d holding the folded running-statistics
        weight and bias (copies), sharing this module's ``weight_fq``. Strategy -1 keeps BN in float: ValueError.
        """
        if self.strategy == -1:
            raise ValueError("strategy -1 (no folding) keeps BatchNorm in float and cannot be folded")
        with torch.no_grad():
            w, b = self.folded_weight_bias()
        folded = QuantConv2d(_new_conv_like(self.conv, w, b), self.weight_fq)
        folded.set_input_quantizer(self.input_quantizer)
        return folded

    def _batch_stats(self, y: Tensor) -> tuple[Tensor, Tensor]:
        # mean and biased variance over (N, H, W), kept in the graph as in BN; running stats updated like BN's
        bn = self._bn()
        n = y.numel() // y.size(1)
        if n <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got input size {list(y.shape)}")
        var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
        assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1)), alpha=factor)
        return mean, var

    def pre_bn(self, x: Tensor) -> Tensor:
        """The BN input of the quantized layer: ``conv(x, W_q)`` with the deployed quantized weight expressed before
        BN (the running-statistics fold undone per channel, as strategy 4 computes it). BN re-calibration
        estimates statistics of this tensor. Not defined for strategy 0 (no BN left)."""
        conv, fq = self.conv, self.weight_fq
        if self.strategy == -1:
            return fused_conv.conv2d(conv, x, fq(conv.weight), conv.bias)
        return self._undo_fold(*self._scaled_conv(x))

    def _undo_fold(self, y: Tensor, factor: Tensor) -> Tensor:
        """``y / f`` per channel (``y`` a fresh conv output that nothing else holds: divided in place), plus the
        conv's bias."""
        y = _DivChannels.apply(y, factor.reshape(1, -1, 1, 1), True)
        return y if self.conv.bias is None else y + self.conv.bias.reshape(1, -1, 1, 1)

    def _scaled_conv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Strategy 4's conv with the quantized running-folded weight (no bias), and the per-channel factor ``f``
        (shape ``(C,)``) that the BN input divides it by."""
        conv, fq, bn = self.conv, self.weight_fq, self._bn()
        assert bn.running_var is not None
        factor = None if bn.weight is None else fused_fold.fold_factor(bn.weight, bn.running_var, bn.eps, _SCALE_FLOOR)
        if factor is None:  # eager (fused kernels off): the same numbers
            sigma_run = torch.sqrt(bn.running_var + bn.eps)
            factor = sigma_run.reciprocal() if bn.weight is None else bn.weight / sigma_run
            factor = torch.where(factor < 0, -1.0, 1.0) * factor.abs().clamp_min(_SCALE_FLOOR)
        return fused_conv.conv2d(conv, x, fq(conv.weight * factor.reshape(-1, 1, 1, 1)), None), factor

    def forward(self, x: Tensor) -> Tensor:
        conv, fq, s = self.conv, self.weight_fq, self.strategy
        if self.stat_sink is not None:
            return self._forward_collect(x)
        if s == 0:
            return fused_conv.conv2d(conv, x, fq(conv.weight), self.int_bias(conv.bias, conv.weight))
        bn = self._bn()
        if s == -1:
            if not bn.training and self.bias_step(conv.weight) is not None:
                return self._int_bn(x)
            return bn(fused_conv.conv2d(conv, x, fq(conv.weight), conv.bias))
        if s == 1 or not bn.training:
            # deployed form: running-statistics fold, same ops as to_folded()
            w_fold, b_fold = self._fold_running()
            return fused_conv.conv2d(conv, x, fq(w_fold), self.int_bias(b_fold, w_fold))
        if s == 2:
            mean, var = self._batch_stats(fused_conv.conv2d(conv, x, conv.weight, conv.bias))
            w_fold, b_fold = fold_conv_bn_weights(conv.weight, conv.bias, mean, var, bn.weight, bn.bias, bn.eps)
            return fused_conv.conv2d(conv, x, fq(w_fold), self.int_bias(b_fold, w_fold))
        if s == 3:
            mean, var = self._batch_stats(fused_conv.conv2d(conv, x, conv.weight, conv.bias))
            assert bn.running_var is not None
            sigma_run = torch.sqrt(bn.running_var + bn.eps)
            sigma_batch = torch.sqrt(var + bn.eps)
            w_fold = conv.weight * _per_out(bn.weight, sigma_run, conv.weight.dim())
            _, b_batch = fold_conv_bn_weights(conv.weight, conv.bias, mean, var, bn.weight, bn.bias, bn.eps)
            y = fused_conv.conv2d(conv, x, fq(w_fold), None) * (sigma_run / sigma_batch).reshape(1, -1, 1, 1)
            return y + b_batch.reshape(1, -1, 1, 1)
        # strategy 4: quantize the running-folded weight, undo the scaling per channel (sign-preserving floor on
        # |gamma / sigma|, sign(0) counting as +), then a real BN
        y, factor = self._scaled_conv(x)
        if self.conv.bias is None and fused_divbn.applies(y, factor, bn):  # fused=true: one node, the same numbers
            return fused_divbn.div_bn(y, factor, bn)
        return bn(self._undo_fold(y, factor))

    def _bn_affine(self) -> tuple[Tensor, Tensor]:
        # strategy -1: bn(conv(x) + b) = a conv(x) + c per channel, with running statistics
        conv, bn = self.conv, self._bn()
        assert bn.running_mean is not None and bn.running_var is not None
        a = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) / torch.sqrt(
            bn.running_var + bn.eps)
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        c = (bn.bias if bn.bias is not None else torch.zeros_like(a)) + (b0 - bn.running_mean) * a
        return a, c

    def deployed_bias(self) -> tuple[Tensor | None, Tensor]:
        if self.strategy == -1:
            return self._bn_affine()[1], self.conv.weight
        return super().deployed_bias()

    def bias_gain(self) -> Tensor | float:
        return self._bn_affine()[0].detach() if self.strategy == -1 else 1.0

    def _int_bn(self, x: Tensor) -> Tensor:
        # strategy -1 in evaluation as the target applies it: a per-channel rescale a = gamma / sigma of the
        # accumulator and the bias c = beta + (b - mean) a as an integer on the grid a s_x s_w
        conv = self.conv
        a, c = self._bn_affine()
        step = self.bias_step(conv.weight)
        assert step is not None
        grid = (step * a).detach()
        c_int = c + (torch.round(c / grid) * grid - c).detach()
        y = fused_conv.conv2d(conv, x, self.weight_fq(conv.weight), None)
        return y * a.reshape(1, -1, 1, 1) + c_int.reshape(1, -1, 1, 1)

    @torch.no_grad()
    def _forward_collect(self, x: Tensor) -> Tensor:
        # BN re-calibration pass: normalise with this batch's statistics of pre_bn(x) (as BN in training) and
        # append (mean, unbiased var) to the sink; running statistics (and so the folded weights) stay untouched
        bn = self._bn()
        z = self.pre_bn(x)
        n = z.numel() // z.size(1)
        var, mean = torch.var_mean(z, dim=(0, 2, 3), correction=0)
        assert self.stat_sink is not None
        self.stat_sink.append((mean, var * (n / max(n - 1, 1)), z.size(0)))
        return F.batch_norm(z, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy}"
