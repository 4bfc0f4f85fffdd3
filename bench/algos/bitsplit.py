"""``algo=bitsplit``: Bit-Split and Stitching weights with Error Compensated Activation Quantization (seed 003,
Algorithm 1), layer by layer on the prepared model after the calibration of ``calib.weight`` / ``calib.act``."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.fx as fx
from omegaconf import DictConfig

from bench.algos.base import CellContext
from bench.algos.quantized import QuantizedAlgorithm, algo_params
from bench.algos.recon import refuse_profile
from bench.errors import BenchError
from bench.ptq.bitsplit import bitsplit_model, bitsplit_unsupported


class BitSplit(QuantizedAlgorithm):
    """Bit-Split and Stitching (per-channel closed-form scales, ternary bit planes by coordinate descent) + ECAQ."""

    name = "bitsplit"
    kind = "ptq"
    description = "Bit-Split and Stitching weights (per-channel) with ECAQ activations"
    defaults: dict[str, Any] = {"iters": 10, "ecaq": True}

    def params(self, cfg: DictConfig) -> dict[str, Any]:
        """``algo.params`` over the defaults (validated)."""
        return algo_params(cfg, self.name, self.defaults)

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        p = self.params(cfg)
        if int(p["iters"]) < 1:
            raise BenchError(f"algo.params.iters={p['iters']} must be >= 1")
        refuse_profile(self.name, cfg, bitsplit_unsupported)

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        p = self.params(ctx.cfg)
        t0 = time.perf_counter()
        out = bitsplit_model(gm, calib, batch_size=int(ctx.cfg.ptq.calib_batch_size), iters=int(p["iters"]),
                             ecaq=bool(p["ecaq"]), progress=bool(ctx.cfg.progress))
        return {**out, "algo_params": p, "bitsplit_s": round(time.perf_counter() - t0, 2)}
