"""AdaRound's learned rounding (Nagel et al. 2020; white paper Sec. 3.4, eq. 32-35).

``W~ = s * (clamp(floor(W / s) + h(V) + z, qmin, qmax) - z)`` with the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, zeta = 1.1, gamma = -0.1, and the regulariser
``f_reg(V) = sum 1 - |2 h(V) - 1|^beta`` that pushes every ``h`` to 0 or 1 as beta is annealed. ``V`` starts where
``h(V)`` equals the fractional part of ``W / s``, i.e. where the soft weight equals the float weight. The scale
``s`` and zero point stay those of the weight calibration (``calib.weight``). After optimisation the rounding is
hardened (``h >= 0.5``, i.e. ``V >= 0``) and :meth:`AdaRoundQuantizer.freeze` returns the integer codes.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.ptq.frozen import FrozenWeightQuantizer
from bench.quant.quantizer import FakeQuantize

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``clamp(sigmoid(v) (zeta - gamma) + gamma, 0, 1)`` (Louizos et al. 2018, AdaRound eq. 23)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """``V`` with ``rectified_sigmoid(V) = h`` for ``h`` in [0, 1) (the AdaRound initialisation)."""
    p = ((h - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def round_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``sum 1 - |2 h - 1|^beta`` (AdaRound eq. 24): 0 when every ``h`` is 0 or 1."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


class AdaRoundQuantizer(FakeQuantize):
    """A calibrated weight quantizer with learned rounding of a fixed weight ``weight``.

    ``soft=True`` (optimisation): the rounding offset is ``h(V)`` in [0, 1]; ``soft=False``: hard 0/1.
    """

    def __init__(self, source: FakeQuantize, weight: torch.Tensor) -> None:
        super().__init__(source.spec, source.kind, None)
        self.to(source.scale.device)  # the buffers of a new module are on the CPU; the model may be on CUDA
        self.signed = source.signed
        self.set_qparams(source.scale, source.zero_point)
        self.soft = True
        with torch.no_grad():
            rest = weight / self._s(weight) - torch.floor(weight / self._s(weight))
        self.alpha = nn.Parameter(inverse_rectified_sigmoid(rest))

    def _shape(self, w: torch.Tensor) -> list[int]:
        shape = [1] * w.dim()
        if self.ch_axis is not None:
            shape[self.ch_axis] = -1
        return shape

    def _s(self, w: torch.Tensor) -> torch.Tensor:
        return self.scale.reshape(self._shape(w))

    def rounding(self) -> torch.Tensor:
        """The rounding offset added to ``floor(W / s)``: ``h(V)`` when soft, ``1[V >= 0]`` when hard."""
        if self.soft:
            return rectified_sigmoid(self.alpha)
        return (self.alpha >= 0).to(self.alpha.dtype)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """The (soft or hard) integer codes of ``w`` on the grid, zero point included."""
        qmin, qmax = self.qrange
        z = self.zero_point.reshape(self._shape(w)).to(w.dtype)
        return torch.clamp(torch.floor(w / self._s(w)) + self.rounding() + z, qmin, qmax)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        z = self.zero_point.reshape(self._shape(x)).to(x.dtype)
        return (self.codes(x) - z) * self._s(x)

    def regularizer(self, beta: float) -> torch.Tensor:
        """AdaRound's rounding regulariser of this quantizer's ``h(V)``."""
        return round_regularizer(rectified_sigmoid(self.alpha), beta)

    @torch.no_grad()
    def freeze(self, weight: torch.Tensor) -> FrozenWeightQuantizer:
        """Hard rounding of ``weight`` as a :class:`FrozenWeightQuantizer` (the module to deploy)."""
        self.soft = False
        return FrozenWeightQuantizer(self, self.codes(weight), self.scale, self.zero_point)
