"""``algo=dorefa``: DoReFa-Net (Zhou et al. 2016; MQBench App. F), rule-based: nothing is learned but the network.

Weights: ``w~ = tanh(w) / max|tanh(w)|`` (per tensor, or per output channel on per-channel profiles), quantized
uniformly with ``s = 2 / (qmax - qmin)`` on symmetric grids and ``(max w~ - min w~) / (qmax - qmin)`` on asymmetric
ones (MQBench Eq. 14-15), then multiplied back by the detached ``max|tanh(w)|`` so the layer keeps the magnitude of
its weights (see :mod:`bench.algos.qat`): the forward value is ``quant(tanh(w))`` on a grid scaled by
``max|tanh(w)|``. Gradient: ``1 - tanh(w)^2`` inside the grid (straight-through round), 0 where clamped.
Power-of-two profiles snap the scale as the spec's ``pot_snap`` says (``mse``: the better power of two for the current
weight).

Activations: a fixed grid built for ``[0, 1]`` on unsigned grids (academic, after ReLU) and ``[-1, 1]`` on signed or
asymmetric ones (MQBench's hardware extension), clipped at that grid's ends: exactly ``[0, 1]`` on the academic
unsigned grid; one code more below zero on a two's-complement grid (``[-(qmax + 1) s, qmax s]``), and on
power-of-two grids the ends of the snapped grid, because an integer target given the scale and zero point clamps
there and nowhere else. Gradient 1 inside, 0 outside. The calibration only decides adaptive signedness.
"""

from __future__ import annotations

import torch

from bench.algos.base import register_algo
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, reduce_dims
from bench.quant import fused_pact
from bench.quant.fake import EPS, fake_quantize, qparams_from_range
from bench.quant.observers import range_qparams, snap_scale


class DoReFaWeightQuantizer(LearnableQuantizer):
    """``quant(tanh(w))`` with the DoReFa grid of the current weight (no learned parameter)."""

    def _grid(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        axis = self.ch_axis
        dims = reduce_dims(t, axis)
        qmin, qmax = self.qrange
        if self.spec.symmetric:
            m = t.detach().abs().amax(dim=dims).clamp_min(EPS)
            scale = 2.0 * m / (qmax - qmin)
            if self.spec.pot_scale:
                scale = snap_scale(scale, self.spec, self.signed, t, axis)
            return scale.reshape(-1), torch.zeros_like(scale, dtype=torch.int32).reshape(-1)
        lo, hi = t.detach().amin(dim=dims), t.detach().amax(dim=dims)
        s, z = range_qparams(lo, hi, self.spec, self.signed, t, axis)
        return s.reshape(-1), z.reshape(-1)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(x)
        s, z = self._grid(t)
        qmin, qmax = self.qrange
        return fake_quantize(t, s, z, qmin, qmax, self.ch_axis)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert x is not None, "the DoReFa grid depends on the weight"
        return self._grid(torch.tanh(x))


def dorefa_act_range(signed: bool) -> tuple[float, float]:
    """DoReFa's activation clip interval: ``[0, 1]`` on an unsigned grid, ``[-1, 1]`` otherwise."""
    return (-1.0, 1.0) if signed else (0.0, 1.0)


class DoReFaActQuantizer(LearnableQuantizer):
    """Fixed grid for ``[0, 1]`` (unsigned) or ``[-1, 1]``, clipped at the grid's ends (no learned parameter)."""

    @property
    def clip(self) -> tuple[float, float]:
        """The clip interval of this quantizer's grid."""
        return dorefa_act_range(self.signed or not self.spec.symmetric)

    def init_learned(self) -> None:
        lo, hi = self.clip
        s, z = qparams_from_range(torch.tensor(lo), torch.tensor(hi), self.spec, self.signed)
        self.scale, self.zero_point = s.reshape(1).to(self.scale.device), z.reshape(1).to(self.scale.device)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qrange
        # clip at the grid's ends: a target given only (scale, zero point) clamps its codes there, and a clip
        # anywhere else (-1 = -qmax s on a signed grid, inside a power-of-two grid) would give codes it never does
        lo, hi = self.calibrated_range()
        # clip and fake quantization: fused kernels (fused=true) or eager, the same numbers
        rounding = self.spec.rounding
        run = fused_pact.clip_fused if fused_pact.clip_usable(x, lo, hi, rounding) else fused_pact.clip_eager
        return run(x, lo, hi, self.scale, self.zero_point, qmin, qmax, rounding)


@register_algo(label="DoReFa", order=70)
class DoReFa(QATAlgorithm):
    """DoReFa-Net: tanh-normalised weights, activations clipped to a fixed interval."""

    name = "dorefa"
    description = "DoReFa-Net (tanh weights, fixed activation clip [0,1] / [-1,1])"
    weight_quantizer = DoReFaWeightQuantizer
    act_quantizer = DoReFaActQuantizer
