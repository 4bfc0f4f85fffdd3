"""``algo=apot``: Additive Powers-of-Two quantization (Li et al. 2020; MQBench App. F). Academic setting only.

Levels: sums of one term from each of ``k`` power-of-two sets (the reference code's ``build_power_value``), scaled to
``[0, 1]``: ``B = bits`` magnitude bits for unsigned activations, ``bits - 1`` plus a sign for weights and signed
activations. Bit-widths the reference code has no additive set for fall back to uniform levels (said in the record).

Forward: ``x_hat = alpha * P(clamp(x / alpha, lo, 1))`` with ``P`` the nearest level (sign kept), a learned clip
``alpha`` and a straight-through ``P``. Gradients (the reference implementation's rule):
``dx_hat/dx = 1`` inside, 0 outside; ``dx_hat/dalpha = P(x/alpha) - x/alpha`` inside, ``sign(x)`` outside.
Weights are standardised first (``(w - mean) / std``, APoT's weight normalisation) and the result multiplied back by
the detached ``std`` (values in the weight's units, see :mod:`bench.algos.qat`). ``alpha`` starts from the calibrated
range (``init=calib``; for weights in standardised units) or APoT's 3 (weights) / 6 (activations) (``init=paper``).

Not deployable on the hardware profiles: the levels are non-uniform (MQBench Table 2).
"""

from __future__ import annotations

import torch

from bench.algos.base import register_algo
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, positive
from bench.quant import fused_apot

PAPER_ALPHA = {"weight": 3.0, "act": 6.0}


def apot_levels(b: int) -> torch.Tensor:
    """The sorted APoT magnitude levels for ``b`` bits, normalised to max 1 (``build_power_value(B=b)``).

    ``b`` in 2..6 uses the additive sets of the APoT reference code; other widths get ``2^b`` uniform levels.
    """
    a, bb, c = [0.0], [0.0], [0.0]
    if b == 2:
        a += [2.0 ** (-i - 1) for i in range(3)]
    elif b == 3:
        for i in range(3):
            if i < 2:
                a.append(2.0 ** (-i - 1))
            else:
                bb.append(2.0 ** (-i - 1))
                a.append(2.0 ** (-i - 2))
    elif b == 4:
        for i in range(3):
            a.append(2.0 ** (-2 * i - 1))
            bb.append(2.0 ** (-2 * i - 2))
    elif b == 5:
        for i in range(3):
            if i < 2:
                a.append(2.0 ** (-2 * i - 1))
                bb.append(2.0 ** (-2 * i - 2))
            else:
                c.append(2.0 ** (-2 * i - 1))
                a.append(2.0 ** (-2 * i - 2))
                bb.append(2.0 ** (-2 * i - 3))
    elif b == 6:
        for i in range(3):
            a.append(2.0 ** (-3 * i - 1))
            bb.append(2.0 ** (-3 * i - 2))
            c.append(2.0 ** (-3 * i - 3))
    else:
        n = 2**b - 1
        return torch.tensor([i / n for i in range(n + 1)])
    values = sorted({x + y + z for x in a for y in bb for z in c})
    t = torch.tensor(values)
    return t / t.max()


class APoTQuantizer(LearnableQuantizer):
    """APoT weight / activation quantizer with a learned clip ``alpha``."""

    uniform = False  # additive powers-of-two levels: no integer bias grid
    lazy_params = ("alpha",)
    lazy_buffers = ("levels",)

    def _magnitude_bits(self) -> int:
        signed = self.kind == "weight" or self.signed
        return self.spec.bits - 1 if signed else self.spec.bits

    def init_learned(self) -> None:
        self.register_buffer("levels", apot_levels(self._magnitude_bits()).to(self.scale.device))
        amax = self.calibrated_amax()
        if self.init_mode == "paper":
            alpha = torch.full_like(amax, PAPER_ALPHA[self.kind])
        elif self.kind == "weight":
            alpha = amax / self._std.clamp_min(1e-12) if self._std is not None else torch.full_like(amax, 3.0)
        else:
            alpha = amax
        self._param("alpha", alpha)

    _std: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and self.kind == "weight":
            self._std = x.detach().std().reshape(1)  # the standardisation the calibrated range is expressed in
        return super().forward(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        alpha = positive(self.alpha)
        signed = self.kind == "weight" or self.signed
        gain = None
        if self.kind == "weight":
            std, mean = torch.std_mean(x)
            x = (x - mean) / std
            gain = std.detach()
        # the projection: fused kernels (fused=true) or eager, the same numbers
        run = fused_apot.fused if fused_apot.usable(x, alpha, self.levels) else fused_apot.eager
        q = run(x, alpha, self.levels, -1.0 if signed else 0.0)
        return q if gain is None else q * gain

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # non-uniform levels: the finest step of the grid (for the report only)
        step = positive(self.alpha).detach() * (self.levels[1] - self.levels[0])
        if x is not None and self.kind == "weight":
            step = step * x.detach().std()
        return step.reshape(1), torch.zeros(1)


@register_algo(label="APoT", order=30)
class APoT(QATAlgorithm):
    """Additive Powers-of-Two quantization with weight standardisation."""

    name = "apot"
    description = "Additive Powers-of-Two (academic only)"
    weight_quantizer = APoTQuantizer
    act_quantizer = APoTQuantizer
    academic_only = "APoT's additive powers-of-two levels are non-uniform, which no integer target executes"
