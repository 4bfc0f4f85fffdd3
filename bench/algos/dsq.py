"""``algo=dsq``: Differentiable Soft Quantization (Gong et al. 2019), as MQBench App. F runs it.

The forward value is the ordinary uniform quantization; the backward pass differentiates a tanh soft step instead
of the straight-through estimator. With ``u = clamp(x / s + z, qmin, qmax)``, ``f = u - floor(u)``,
``k = log((1 + 1/(1-a)) / (1/(1-a) - 1))`` (``a = 0.4``, ``algo.params.alpha``):

    phi(u) = floor(u) + 0.5 * tanh(k (f - 0.5)) / (1 - a) + 0.5,   x_hat = s * (round_ste(phi(u)) - z)

The forward value is the exact quantization ``clamp(round(x / s) + z)`` (rounded as the target does, before the zero
point is added); ``dx_hat/dx = 0.5 k (1 - tanh^2(k (f - 0.5))) / (1 - a)`` inside the grid, 0 where clamped.
Ranges are rule-based (MQBench App. F): weights ``mean -+ 2.6 std`` of the current weight (per tensor or per
channel); activations the batch-averaged per-sample min / max, smoothed with an EMA (momentum 0.9) during training
and started from the calibrated range (``algo.init=paper``: the same statistic over the calibration batches). Scale
and zero point follow the profile's format (``qparams_from_range``: symmetric / asymmetric, power-of-two; with
``pot_snap=mse`` the weights' power of two is chosen on the weight, the activations' -- an EMA of ranges, no data kept
-- snaps up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.algos.base import register_algo
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, QATParams, reduce_dims
from bench.errors import BenchError
from bench.quant import fused_dsq
from bench.quant.fake import qparams_from_range
from bench.quant.observers import range_qparams

DSQ_ALPHA = 0.4
WEIGHT_K = 2.6
EMA_MOMENTUM = 0.9


def dsq_fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, alpha: float,
    rounding: str = "half_even",
) -> torch.Tensor:
    """DSQ fake quantization with a fixed (broadcastable) scale / zero point: the exact quantization forward, the
    soft step's derivative backward (0 where clamped). Fused kernels (``fused=true``) or eager ops, the same
    numbers."""
    run = fused_dsq.fused if fused_dsq.usable(x, scale, zero_point, rounding) else fused_dsq.eager
    return run(x, scale, zero_point, qmin, qmax, alpha, rounding)


@dataclass(frozen=True)
class DSQParams(QATParams):
    """``algo.params`` of DSQ."""

    alpha: float = DSQ_ALPHA  # the soft rounding's alpha (MQBench App. F: 0.4)

    def check(self) -> None:
        super().check()
        if not 0.0 < self.alpha < 1.0:
            raise BenchError(f"algo.params.alpha={self.alpha} out of range; accepted: 0 < alpha < 1")


class DSQWeightQuantizer(LearnableQuantizer):
    """DSQ weights: range ``mean -+ 2.6 std`` of the current weight."""

    def _grid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = reduce_dims(x, self.ch_axis)
        std, mean = torch.std_mean(x.detach(), dim=dims, correction=0)
        lo = torch.maximum(mean - WEIGHT_K * std, x.detach().amin(dim=dims))
        hi = torch.minimum(mean + WEIGHT_K * std, x.detach().amax(dim=dims))
        return range_qparams(lo, hi, self.spec, self.signed, x, self.ch_axis)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self._grid(x)
        shape = [1] * x.dim()
        if self.ch_axis is not None:
            shape[self.ch_axis] = -1
        qmin, qmax = self.qrange
        alpha = self.params.alpha if isinstance(self.params, DSQParams) else DSQ_ALPHA
        return dsq_fake_quantize(x, s.reshape(shape), z.float().reshape(shape), qmin, qmax, alpha)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert x is not None, "the DSQ weight grid depends on the weight"
        return self._grid(x)


class DSQActQuantizer(LearnableQuantizer):
    """DSQ activations: EMA of the batch-averaged per-sample min / max (updated in training mode)."""

    lazy_buffers = ("ema_min", "ema_max")

    def init_learned(self) -> None:
        lo, hi = self.calibrated_range()
        self.register_buffer("ema_min", lo.detach().clone().reshape(1))
        self.register_buffer("ema_max", hi.detach().clone().reshape(1))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                flat = x.detach().reshape(x.shape[0], -1)
                m = EMA_MOMENTUM
                self.ema_min.mul_(m).add_(flat.amin(dim=1).mean(), alpha=1 - m)
                self.ema_max.mul_(m).add_(flat.amax(dim=1).mean(), alpha=1 - m)
        s, z = self.effective_qparams()
        qmin, qmax = self.qrange
        alpha = self.params.alpha if isinstance(self.params, DSQParams) else DSQ_ALPHA
        return dsq_fake_quantize(x, s, z.float(), qmin, qmax, alpha, self.spec.rounding)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return qparams_from_range(self.ema_min, self.ema_max, self.spec, self.signed)


@register_algo(label="DSQ", order=50)
class DSQ(QATAlgorithm):
    """Differentiable Soft Quantization (tanh soft rounding in the backward pass, rule-based ranges)."""

    name = "dsq"
    description = "Differentiable Soft Quantization (tanh soft rounding, alpha 0.4)"
    weight_quantizer = DSQWeightQuantizer
    act_quantizer = DSQActQuantizer
    paper_calib = ("minmax", "batch_minmax")  # algo.init=paper: activations start from DSQ's own BatchMinMax EMA
    params_type = DSQParams
