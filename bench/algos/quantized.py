"""The quantized-cell steps shared by every PTQ and QAT algorithm (DESIGN.md Sec. 2, "one pipeline"):

prepare (fold BN, insert quantizers per profile and graph) -> calibrate -> evaluate (``init_top1``) -> the
algorithm's own step -> debugging modes -> evaluate (``top1``) -> quantization report (+ sensitivity).
Algorithms subclass :class:`QuantizedAlgorithm` and override :meth:`factory` and :meth:`optimize` only.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from omegaconf import DictConfig

from bench.algos.base import Algorithm, CellContext, CellOutcome
from bench.engine import distributed, evaluate
from bench.errors import BenchError
from bench.ptq.bias_correction import correct_bias
from bench.ptq.calibrate import calibrate
from bench.ptq.cle import equalize
from bench.quant.debug import sensitivity, set_mode
from bench.quant.insert import QuantizerFactory, default_factory, prepare
from bench.quant.profiles import HardwareProfile, load_profile, profile_names, resolve_profile
from bench.quant.report import format_report, quant_report, write_report

log = logging.getLogger(__name__)


def first_last_bits(cfg: Any, profile: HardwareProfile) -> int | None:
    """``quant.first_last_bits`` if set, else the profile's."""
    return cfg.quant.first_last_bits if cfg.quant.first_last_bits is not None else profile.first_last_bits


class QuantizedAlgorithm(Algorithm):
    """An algorithm that quantizes the FP32 model through the shared steps."""

    quantizes = True
    bn_recalib = False  # runs ptq.bn_recalib (MQBench App. C.3)

    def factory(self, ctx: CellContext) -> QuantizerFactory:
        """The quantizer modules this algorithm trains or calibrates (default: fixed calibrated quantizers)."""
        return default_factory

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        """The algorithm's own step on the calibrated model. Returns None when it left the model as calibrated,
        else extra record fields (``train_epochs`` / ``status`` / ``error`` keys become record fields)."""
        return None

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        if self.kind != "ptq" and (cfg.ptq.cle or cfg.ptq.bias_correction != "none"):
            raise BenchError(
                f"ptq.cle / ptq.bias_correction are post-training steps; algo={self.name} is {self.kind} "
                "(accepted with: algo=ptq, adaround, brecq, qdrop, bitsplit, ioso)"
            )
        if cfg.ptq.bn_recalib and not self.bn_recalib:
            raise BenchError(f"ptq.bn_recalib=true is not a step of algo={self.name} (accepted with: algo=ptq)")
        reason = self.unsupported(resolve_profile(cfg))
        if reason is not None:
            ok = [n for n in profile_names() if self.unsupported(load_profile(n)) is None]
            raise BenchError(f"algo={self.name} cannot run on hw={cfg.hw.name}: {reason}; accepted: "
                             f"{', '.join(f'hw={n}' for n in ok) or 'none'}")

    def after_bias_correction(self, gm: fx.GraphModule, calib: torch.Tensor, batch_size: int) -> None:
        """Hook after ``ptq.bias_correction`` changed the biases (plain PTQ re-calibrates activation ranges)."""

    def apply(self, ctx: CellContext) -> CellOutcome:
        cfg = ctx.cfg
        profile = ctx.profile if ctx.profile is not None else resolve_profile(cfg)
        model, pre = ctx.model, {}
        if cfg.ptq.cle:  # white paper Sec. 3.5: CLE is a pre-processing step of the FP32 model
            model, pre = equalize(ctx.model)
            log.info("cross-layer equalization: %s", pre)
        gm = prepare(
            model, profile, w_bits=int(cfg.bits.w), a_bits=int(cfg.bits.a), calib_weight=cfg.calib.weight,
            calib_act=cfg.calib.act, first_last_bits=first_last_bits(cfg, profile), factory=self.factory(ctx),
        )
        device = distributed.current().device
        gm.to(device)  # the quantizers were built on the CPU
        calib = ctx.data.calibration_batch(int(cfg.data.calib_size), int(cfg.seed)).to(device)
        bs = int(cfg.ptq.calib_batch_size)
        calibrate(gm, calib, bs)
        max_eval = cfg.debug.max_eval_batches
        init = evaluate(gm, ctx.data.test, max_eval)
        log.info("calibrated (%s, graph %d, bn_fold %d): top-1 %.2f%%", profile.name, profile.graph,
                 profile.bn_fold, init["top1"])
        result = self.optimize(ctx, gm, calib)
        if cfg.ptq.bias_correction != "none":
            result = {**(result or {}), **correct_bias(gm, str(cfg.ptq.bias_correction), calib, bs)}
            self.after_bias_correction(gm, calib, bs)
        extra = {**pre, **(result or {})}
        final = extra.pop("final_eval", None)  # the optimizer's own test evaluation of the model it returns
        status = str(extra.pop("status", "ok"))
        error = extra.pop("error", None)
        epochs = int(extra.pop("train_epochs", 0))
        set_mode(gm, bypass=bool(cfg.quant.bypass), only=str(cfg.quant.only))
        debug_mode = bool(cfg.quant.bypass) or cfg.quant.only != "all"
        if status != "ok":
            ev: dict[str, Any] = {"top1": None, "top5": None}
        elif result is None and not debug_mode:
            ev = init  # the model is the calibrated one: no second pass over the test set
        elif final is not None and not debug_mode and cfg.ptq.bias_correction == "none":
            ev = final  # nothing changed the model since the optimizer evaluated it
        else:
            ev = evaluate(gm, ctx.data.test, max_eval)
        rows = quant_report(gm)
        write_report(rows, Path(ctx.output_dir) / "quant_report.csv")
        if cfg.quant.report:
            print(format_report(rows))
        extra.update(quantizers=len(rows), profile=profile.name, first_last_bits=first_last_bits(cfg, profile))
        if cfg.quant.sensitivity and status == "ok":
            sens = sensitivity(gm, calib[:bs], ctx.data.test, max_eval)
            _write_csv(sens, Path(ctx.output_dir) / "sensitivity.csv")
            extra["sensitivity_csv"] = "sensitivity.csv"
            for r in sens:
                print(f"  {r['layer']:<28} weight SQNR {_db(r['weight_sqnr_db'])}  input SQNR "
                      f"{_db(r['input_sqnr_db'])}  top-1 (only this layer quantized) {r['top1_only_this_layer']:.2f}")
        return CellOutcome(
            status=status, top1=ev["top1"], top5=ev["top5"], init_top1=init["top1"], train_epochs=epochs,
            graph=profile.graph, bn_fold=profile.bn_fold, error=error, extra=extra, model=gm,
        )


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} dB"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
