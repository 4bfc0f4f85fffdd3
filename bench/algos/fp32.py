"""``algo=fp32``: the FP32 reference cell (the cached baseline, evaluated; no quantization)."""

from __future__ import annotations

from bench.algos.base import Algorithm, CellContext, CellOutcome, register_algo
from bench.engine import evaluate


@register_algo(label="FP32", order=140)
class FP32(Algorithm):
    """Evaluates the FP32 baseline so that every table has its full-precision reference row."""

    name = "fp32"
    kind = "fp32"
    description = "full-precision reference: the cached FP32 baseline, evaluated"
    quantizes = False

    def apply(self, ctx: CellContext) -> CellOutcome:
        ev = evaluate(ctx.model, ctx.data.test, ctx.cfg.debug.max_eval_batches)
        return CellOutcome(status="ok", top1=ev["top1"], top5=ev["top5"], init_top1=None, train_epochs=0)
