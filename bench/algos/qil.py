"""``algo=qil``: Quantization Interval Learning (Jung et al. 2019; MQBench App. F). Academic setting only.

A transformer maps the learned interval ``[c - d, c + d]`` onto ``[0, 1]`` (``gamma`` fixed to 1: learning it does not
converge, MQBench App. F), values below ``c - d`` are pruned to 0 and values above ``c + d`` clipped to 1:

    t = clamp((|x| - (c - d)) / (2 d), 0, 1) * sign(x)      (weights, and signed activations)
    t = clamp((x - (c - d)) / (2 d), 0, 1)                   (unsigned activations)

then ``t`` is quantized uniformly to ``qmax`` levels (``round_ste(t * qmax) / qmax``) and multiplied back by the
detached ``2 d`` (values in the input's units, see :mod:`bench.algos.qat`). ``c`` and ``d`` get the gradient of the
transformer through the straight-through round, scaled by LSQ's ``1 / sqrt(N Qp)`` (MQBench replaces QIL's 0.01).
They start from the calibrated range ``[0, amax]``: ``c = d = amax / 2``.

Not deployable on the hardware profiles: the pruning interval and the transformer are not an integer grid a target
executes (MQBench Table 2).
"""

from __future__ import annotations

import torch

from bench.algos.base import register_algo
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, grad_scale, lsq_grad_factor
from bench.quant import fused_qil
from bench.quant.fake import EPS


class QILQuantizer(LearnableQuantizer):
    """QIL interval transformer + uniform discretiser (weights and activations)."""

    lazy_params = ("c", "d")

    def init_learned(self) -> None:
        amax = self.calibrated_amax()
        self._param("c", amax / 2)
        self._param("d", amax / 2)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        _, qmax = self.qrange
        g = lsq_grad_factor(x.numel(), qmax)
        c, d = grad_scale(self.c, g), grad_scale(self.d, g).abs().clamp_min(EPS)
        signed = self.kind == "weight" or self.signed
        cm, w = c - d, 2 * d
        # the transformer and discretiser: fused kernels (fused=true) or eager, the same numbers
        run = fused_qil.fused if fused_qil.usable(x, cm, w) else fused_qil.eager
        return run(x, cm, w, qmax, signed)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _, qmax = self.qrange
        step = 2 * self.d.detach().abs() / qmax
        return step, torch.zeros_like(step)


@register_algo(label="QIL", order=40)
class QIL(QATAlgorithm):
    """Quantization Interval Learning (learned pruning / clipping interval)."""

    name = "qil"
    description = "Quantization Interval Learning (academic only)"
    weight_quantizer = QILQuantizer
    act_quantizer = QILQuantizer
    academic_only = "QIL's learned pruning interval and transformer are not an integer grid a target executes"
