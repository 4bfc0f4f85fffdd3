"""``algo=lsqplus``: LSQ+ (Bhalgat et al. 2020), LSQ with a learnable offset and its initialisation.

LSQ+ adds a learned offset ``beta`` to LSQ's activation quantizer, ``x_hat = s * round(clamp((x - beta) / s)) +
beta``, so that activations with a negative tail (Swish, or the linear bottleneck outputs of MobileNetV2) use the
whole grid. With an integer zero point ``z = -beta / s`` that is LSQ on an asymmetric grid with a learned zero point
(the same fused op and gradient rules as :mod:`bench.algos.lsq`). What LSQ+ changes:

- in the academic setting, where the profile leaves activation signedness open (adaptive), activation quantizers use
  an asymmetric unsigned grid with the learned offset instead of a symmetric signed one (a hardware profile's
  activation format is kept as it is: LSQ+ on a symmetric target is LSQ with the LSQ+ initialisation);
- ``algo.init=paper`` (the default) initialises weights with MeanStd and activations with MSE (LSQ+ Sec. 3.3, as
  MQBench App. C.4 describes it); ``algo.init=calib`` takes ``calib.*`` like every QAT algorithm.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.algos.base import register_algo
from bench.algos.lsq import LSQParams, LSQQuantizer, check_kernel
from bench.algos.qat import QATAlgorithm
from bench.quant.spec import QuantSpec


@register_algo(label="LSQ+", order=20)
class LSQPlus(QATAlgorithm):
    """LSQ+: learned scale and offset."""

    name = "lsqplus"
    description = "LSQ+ (learned scale and offset, asymmetric academic activations)"
    weight_quantizer = LSQQuantizer
    act_quantizer = LSQQuantizer
    paper_calib = ("meanstd", "mse")
    params_type = LSQParams

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        check_kernel(self.params(cfg), cfg)

    def adapt_spec(self, spec: QuantSpec, kind: str) -> QuantSpec:
        if kind == "act" and spec.signed is None:  # adaptive (academic): asymmetric grid with a learned offset
            return replace(spec, signed=False, symmetric=False)
        return spec
