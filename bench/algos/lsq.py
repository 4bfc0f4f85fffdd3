"""``algo=lsq``: Learned Step Size Quantization (Esser et al. 2020; MQBench App. F).

Forward ``x_hat = s * (clamp(round(x / s) + z, qmin, qmax) - z)`` with a learned step ``s`` (one per channel for
per-channel profiles) initialised from the calibrated scale (``calib=norm`` is the LSQ paper's
``2 mean|x| / sqrt(Qp)``). Gradients (straight-through round):

- ``dx_hat/dx = 1`` inside the grid, 0 where clamped;
- ``dx_hat/ds = round(x/s) - x/s`` inside, ``qmin - z`` / ``qmax - z`` where clamped, times ``1 / sqrt(N Qp)``
  (``N`` elements of the tensor, or of one channel for per-channel quantizers, as MQBench extends it);
- asymmetric profiles learn the zero point too (LSQ+ style, MQBench App. F): ``dx_hat/dz = 0`` inside,
  ``-s`` where clamped, with the same gradient scale; the forward pass rounds it (``round(z)``, half up).

"Clamped" is decided on ``x / s + z`` before rounding, as in the LSQ paper (:mod:`bench.quant.lsq`, the default
``algo.params.kernel=paper``). ``algo.params.kernel=torch`` uses PyTorch's fused
``_fake_quantize_learnable_per_{tensor,channel}_affine`` instead (MQBench's kernel), which decides it after rounding:
for ``x / s + z`` within half a step beyond the grid it gives ``round(v) - v`` and ``dx = 1``; it rounds half to even,
so it is refused on profiles whose target rounds otherwise (TVM). Activations round like the target
(``spec.rounding``). Power-of-two profiles (TVM) use ``2 ** round(log2 s)`` in the forward pass with a
straight-through gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.algos.base import register_algo
from bench.algos.qat import LearnableQuantizer, QATAlgorithm, QATParams, lsq_grad_factor, positive, pot_ste
from bench.errors import BenchError
from bench.quant.fake import EPS
from bench.quant.lsq import KERNELS, lsq_fake_quantize


@dataclass(frozen=True)
class LSQParams(QATParams):
    """``algo.params`` of LSQ and LSQ+."""

    kernel: str = "paper"  # paper: the LSQ paper's gradients | torch: PyTorch's fused kernel (MQBench's)

    def check(self) -> None:
        super().check()
        if self.kernel not in KERNELS:
            raise BenchError(f"unknown algo.params.kernel {self.kernel!r}; accepted: {', '.join(KERNELS)}")


class LSQQuantizer(LearnableQuantizer):
    """LSQ weight or activation quantizer: learned ``scale`` (and ``zero_point`` on asymmetric grids)."""

    lazy_params = ("s", "z")

    def init_learned(self) -> None:
        self._param("s", self.scale)
        if not self.spec.symmetric:
            self._param("z", self.zero_point.float())
        else:
            self.z = None  # type: ignore[assignment]

    def _scale(self) -> torch.Tensor:
        s = positive(self.s)
        return pot_ste(s) if self.spec.pot_scale else s

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qrange
        # positive() inside the quantizer's autograd node (one node instead of three with fused=true; same numbers)
        s, eps = (self._scale(), None) if self.spec.pot_scale else (self.s, EPS)
        z = self.z  # None on symmetric grids: a zero point of 0, not learned
        if z is not None:
            with torch.no_grad():  # the zero point stays on the integer grid (MQBench clamps it likewise)
                z.clamp_(qmin, qmax)
        axis = self.ch_axis
        g = lsq_grad_factor(x.numel() if axis is None else x.numel() // x.shape[axis], qmax)
        kernel = self.params.kernel if isinstance(self.params, LSQParams) else "paper"
        return lsq_fake_quantize(x, s, z, qmin, qmax, g, axis, self.spec.rounding, kernel, eps)

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._scale().detach()
        if self.z is None:
            return s, torch.zeros_like(s)
        qmin, qmax = self.qrange
        return s, torch.floor(self.z.detach() + 0.5).clamp(qmin, qmax)  # the fused op rounds half up


@register_algo(label="LSQ", order=10)
class LSQ(QATAlgorithm):
    """Learned Step Size Quantization."""

    name = "lsq"
    description = "Learned Step Size Quantization (learned scale, LSQ gradient scaling)"
    weight_quantizer = LSQQuantizer
    act_quantizer = LSQQuantizer
    paper_calib = ("norm", "norm")  # algo.init=paper: the LSQ initialisation 2 mean|x| / sqrt(Qp)
    params_type = LSQParams

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        check_kernel(self.params(cfg), cfg)


def check_kernel(params: LSQParams, cfg: Any) -> None:
    """``algo.params.kernel=torch`` (half-to-even rounding) only where the target rounds so."""
    rounding = cfg.hw.deploy.rounding
    if params.kernel == "torch" and rounding != "half_even":
        raise BenchError(f"algo.params.kernel=torch rounds half to even, but hw={cfg.hw.name} rounds {rounding} "
                         "(hw.deploy.rounding); accepted: algo.params.kernel=paper")
