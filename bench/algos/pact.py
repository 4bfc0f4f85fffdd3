"""``algo=pact``: Parameterized Clipping Activation (Choi et al. 2018; MQBench App. F).

Activations: ``y = clip(x, lo, alpha)`` with a learned clip ``alpha``, then uniform quantization of ``[lo, alpha]``
with a straight-through round. ``lo = 0`` on unsigned grids (the original PACT); on symmetric signed grids (MQBench's
hardware extension) the step is ``s = alpha / qmax`` and ``lo`` is the grid's lower end ``s * qmin = -(qmax + 1) s``
(two's complement: one code more below zero), which the target's clamp reaches; a second learned clip ``beta`` on
asymmetric grids. Gradients:

- ``dy/dx = 1`` for ``lo < x < alpha``, else 0;
- ``dy/dalpha = 1[x >= alpha]`` (``+ (qmin / qmax) 1[x <= lo]`` on a signed grid): no gradient from inside the
  range and no gradient scaling (the differences to LSQ listed in MQBench App. F); ``dy/dbeta = 1[x <= beta]``.

``alpha`` / ``beta`` start from the calibrated range (``init=calib``) or PACT's 6 / -6 (``init=paper``). PACT's L2
penalty on alpha is ``algo.params.qparam_weight_decay``. Power-of-two profiles round the step ``alpha / qmax`` to
a power of two (straight-through), so the clip is the end of a power-of-two grid. Weights use DoReFa's quantizer
(MQBench App. F).
"""

from __future__ import annotations

import torch

from bench.algos.base import register_algo
from bench.algos.dorefa import DoReFaWeightQuantizer
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, positive, pot_ste
from bench.quant import fused_pact

PAPER_ALPHA = 6.0


class PACTActQuantizer(LearnableQuantizer):
    """PACT activation quantizer: learned ``alpha`` (and ``beta`` on asymmetric grids)."""

    lazy_params = ("alpha", "beta")

    def init_learned(self) -> None:
        lo, hi = self.calibrated_range()
        paper = self.init_mode == "paper"
        self._param("alpha", torch.full_like(hi, PAPER_ALPHA) if paper else hi)
        if not self.spec.symmetric:
            self._param("beta", torch.full_like(lo, -PAPER_ALPHA) if paper else lo)
        else:
            self.beta = None  # type: ignore[assignment]

    def _grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # (lo, hi, scale, zero point): the clip range is differentiable in alpha / beta, scale and zero point are
        # used detached (straight-through quantization of the clipped value)
        qmin, qmax = self.qrange
        alpha = positive(self.alpha)
        if self.beta is not None:
            beta = torch.minimum(self.beta, torch.zeros_like(self.beta))  # 0 stays inside the range
            s = (alpha - beta) / (qmax - qmin)
            if self.spec.pot_scale:
                s = pot_ste(s)
            z = torch.clamp(qmin - torch.round(beta.detach() / s.detach()), qmin, qmax)
            return beta, beta + s * (qmax - qmin), s, z
        s = alpha / qmax
        if self.spec.pot_scale:
            s = pot_ste(s)
        # both clips are the grid's ends: on a signed grid the lower end is s * qmin = -(qmax + 1) s, not -alpha,
        # because the target clamps its codes to [qmin, qmax]; a clip at -alpha would never give qmin where the
        # target does (measured: 1 code in 900 on a linear block output, 98.8% prediction agreement)
        return s * qmin, s * qmax, s, torch.zeros_like(s)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qrange
        lo, hi, s, z = self._grid()
        # clip, fake-quantize the clipped value, straight-through: fused kernels (fused=true) or eager, same numbers
        run = fused_pact.fused if fused_pact.usable(x, lo, hi, self.spec.rounding) else fused_pact.eager
        return run(x, lo, hi, s.detach(), z.detach(), qmin, qmax, self.spec.rounding)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, s, z = self._grid()
        return s.detach(), z.detach()


@register_algo(label="PACT", order=60)
class PACT(QATAlgorithm):
    """PACT: learned activation clipping, DoReFa weights."""

    name = "pact"
    description = "Parameterized Clipping Activation (learned clip, DoReFa weights)"
    weight_quantizer = DoReFaWeightQuantizer
    act_quantizer = PACTActQuantizer
