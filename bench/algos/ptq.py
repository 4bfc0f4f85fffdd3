"""``algo=ptq``: the standard PTQ pipeline (white paper Sec. 4.5; MQBench App. C): fold BN, insert quantizers,
calibrate weights and activations with ``calib.weight`` / ``calib.act``, optionally re-estimate BN statistics."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from bench.algos.base import CellContext, register_algo
from bench.algos.quantized import QuantizedAlgorithm
from bench.ptq.calibrate import calibrate_acts, recalibrate_bn


@register_algo(label="PTQ", order=80)
class PTQ(QuantizedAlgorithm):
    """Calibration-only post-training quantization, with optional BN re-calibration (``ptq.bn_recalib=true``)."""

    name = "ptq"
    kind = "ptq"
    bn_recalib = True
    description = "fold BN, insert quantizers, calibrate (options: ptq.bn_recalib, ptq.cle, ptq.bias_correction)"

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        if not ctx.cfg.ptq.bn_recalib:
            return None
        return {"bn_recalibrated_layers": recalibrate_bn(gm, calib, int(ctx.cfg.ptq.calib_batch_size))}

    def after_bias_correction(self, gm: fx.GraphModule, calib: torch.Tensor, batch_size: int) -> None:
        # white paper Sec. 3.5: activation ranges are set last, on the bias-corrected model
        calibrate_acts(gm, calib, batch_size)
