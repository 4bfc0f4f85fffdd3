"""``algo=bitsplit``: Bit-Split and Stitching weights with Error Compensated Activation Quantization (seed 003,
Algorithm 1), layer by layer on the prepared model after the calibration of ``calib.weight`` / ``calib.act``: the
registry entry; the construction itself is :mod:`bench.ptq.bitsplit`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from bench.algos.base import AlgoParams, CellContext, register_algo
from bench.algos.quantized import QuantizedAlgorithm
from bench.errors import BenchError
from bench.ptq.bitsplit import bitsplit_model, bitsplit_unsupported
from bench.quant.profiles import HardwareProfile


@dataclass(frozen=True)
class BitSplitParams(AlgoParams):
    """``algo.params`` of Bit-Split."""

    iters: int = 10  # coordinate-descent sweeps over the bit planes
    ecaq: bool = True  # fold per-channel activation scales into the next layer's weights first (Algorithm 1)

    def check(self) -> None:
        if self.iters < 1:
            raise BenchError(f"algo.params.iters={self.iters} must be >= 1")


@register_algo(label="Bit-Split", order=120)
class BitSplit(QuantizedAlgorithm):
    """Bit-Split and Stitching (per-channel closed-form scales, ternary bit planes by coordinate descent) + ECAQ."""

    name = "bitsplit"
    kind = "ptq"
    description = "Bit-Split and Stitching weights (per-channel) with ECAQ activations"
    params_type = BitSplitParams

    def unsupported(self, profile: HardwareProfile) -> str | None:
        return bitsplit_unsupported(profile)

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        p = self.params(ctx.cfg)
        t0 = time.perf_counter()
        out = bitsplit_model(gm, calib, batch_size=int(ctx.cfg.ptq.calib_batch_size), iters=p.iters, ecaq=p.ecaq,
                             progress=bool(ctx.cfg.progress))
        return {**out, "algo_params": p.as_dict(), "bitsplit_s": round(time.perf_counter() - t0, 2)}
