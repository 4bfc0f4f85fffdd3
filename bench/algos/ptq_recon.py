"""Reconstruction-based PTQ algorithms: ``algo=adaround``, ``brecq``, ``qdrop``, ``ioso``.

All four run the shared loop of :mod:`bench.ptq.recon` on the prepared, calibrated model, with the budget of the
``recon`` config group (``bench/conf/recon/<data>.yaml``; the record stores the values used) and their own
``algo.params``; they differ in the units and what each stage learns:

- AdaRound (white paper Sec. 3.4): layer units, rounding only, activation quantizers off; activation ranges are set
  afterwards on the rounded model (white paper Sec. 3.5: activation range setting is the last step).
- BRECQ (Li et al. 2021): block units; stage 1 rounding with activations off (optionally Fisher-weighted), then
  activation ranges re-calibrated and stage 2 learns the activation step sizes with the weights fixed.
- QDrop (Wei et al. 2022): block units, rounding and step sizes together with activation quantization on, each
  activation kept in full precision with probability ``drop_prob`` (0.5).
- IOSO (seed 002, App. C Algorithm 1): as BRECQ, with output channel-wise scale / offset and input channel-wise
  scale groups learned with the rounding in stage 1, and with the step sizes in stage 2 (groups fixed).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.fx as fx
from omegaconf import DictConfig

from bench.algos.base import AlgoParams, CellContext, register_algo
from bench.algos.quantized import QuantizedAlgorithm
from bench.errors import BenchError
from bench.ptq.calibrate import calibrate_acts
from bench.ptq.drop import MASK_RNGS
from bench.ptq.ioso import (
    GROUP_VALUES,
    IOSOQuantizer,
    groups_regularizer,
    harden_groups,
    isg_int_ops,
    make_quantizer,
    oso_parameters,
)
from bench.ptq.recon import ReconSettings, Stage, freeze, reconstruct
from bench.quant.insert import weighted_modules
from bench.quant.profiles import HardwareProfile

log = logging.getLogger(__name__)


def recon_settings(cfg: DictConfig) -> ReconSettings:
    """The ``recon`` config group as :class:`ReconSettings`."""
    r = cfg.recon
    return ReconSettings(
        iters=int(r.iters), batch_size=int(r.batch_size), lr=float(r.lr), act_lr=float(r.act_lr),
        reg_weight=float(r.reg_weight), warmup=float(r.warmup), beta_start=float(r.beta_start),
        beta_end=float(r.beta_end),
    )


@dataclass(frozen=True)
class BRECQParams(AlgoParams):
    """``algo.params`` of BRECQ."""

    fisher: bool = False  # weight the block output error by the squared gradient of the loss (BRECQ's Fisher)


@dataclass(frozen=True)
class QDropParams(AlgoParams):
    """``algo.params`` of QDrop."""

    drop_prob: float = 0.5  # probability of keeping an activation in full precision during reconstruction
    # the masks' random numbers: torch.rand as QDrop's reference code (serial on the CPU), or SplitMix64 counters
    # computed in parallel and fused with the selection (bench.ptq.drop: faster, other masks, other results)
    mask_rng: str = "torch"

    def check(self) -> None:
        if not 0 <= self.drop_prob < 1:
            raise BenchError(f"algo.params.drop_prob={self.drop_prob} must be in [0, 1)")
        if self.mask_rng not in MASK_RNGS:
            raise BenchError(f"unknown algo.params.mask_rng {self.mask_rng!r}; accepted: {', '.join(MASK_RNGS)}")


@dataclass(frozen=True)
class IOSOParams(AlgoParams):
    """``algo.params`` of IOSO."""

    isg: bool = True  # input channel-wise scale groups (shift-friendly factors)
    group_values: tuple[float, ...] = tuple(GROUP_VALUES)  # the factors a group can take (seed 002 App. C)

    def check(self) -> None:
        if len(self.group_values) < 1 or any(v <= 0 for v in self.group_values):
            raise BenchError(f"algo.params.group_values={list(self.group_values)} must be a non-empty list of "
                             "positive factors")


class ReconAlgorithm(QuantizedAlgorithm):
    """A PTQ method made of reconstruction stages (subclasses define :meth:`stages`)."""

    kind = "ptq"
    uses_recon = True

    def stages(self, p: Any) -> list[Stage]:
        """The reconstruction stages, in order."""
        raise NotImplementedError

    def between_stages(self, gm: fx.GraphModule, calib: torch.Tensor, batch_size: int, done: Stage) -> None:
        """After ``done``: activation ranges are re-calibrated on the reconstructed weights before a stage that
        reconstructs with activation quantization on."""

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        cfg = ctx.cfg
        p = self.params(cfg)
        settings = recon_settings(cfg)
        bs = int(cfg.ptq.calib_batch_size)
        t0 = time.perf_counter()
        stats: list[dict[str, Any]] = []
        stages = self.stages(p)
        reference = copy.deepcopy(gm)  # the FP32 targets of every stage, whatever the stages change in gm
        for i, stage in enumerate(stages):
            if i > 0 and stage.acts_on and not stages[i - 1].acts_on:
                calibrate_acts(gm, calib, bs)  # ranges of the activations the reconstructed weights produce
            stats += reconstruct(gm, calib, stage, settings, batch_size=bs, progress=bool(cfg.progress),
                                 seed=int(cfg.seed), reference=reference)
            self.between_stages(gm, calib, bs, stage)
        extra = self.finish(gm, calib, p)
        frozen = freeze(gm)
        if not any(s.acts_on for s in stages):
            calibrate_acts(gm, calib, bs)  # white paper Sec. 3.5: activation ranges last
        out = {
            "recon": {"preset": str(cfg.recon.preset), **asdict(settings), "calib_images": int(calib.shape[0])},
            "algo_params": p.as_dict(),
            "recon_units": [{k: v for k, v in s.items() if k != "layers"} for s in stats],
            "recon_layers": frozen,
            "recon_s": round(time.perf_counter() - t0, 2),
        }
        out.update(extra)
        return out

    def finish(self, gm: fx.GraphModule, calib: torch.Tensor, p: Any) -> dict[str, Any]:
        """After the last stage, before the rounding is frozen: extra record fields."""
        return {}


@register_algo(label="AdaRound", order=90)
class AdaRound(ReconAlgorithm):
    """AdaRound: layer-wise adaptive rounding of the weights."""

    name = "adaround"
    description = "AdaRound: layer-wise learned rounding (rectified sigmoid, annealed regulariser)"

    def stages(self, p: Any) -> list[Stage]:
        return [Stage("adaround", units="layer")]


@register_algo(label="BRECQ", order=100)
class BRECQ(ReconAlgorithm):
    """BRECQ: block reconstruction of the rounding, then of the activation step sizes."""

    name = "brecq"
    description = "BRECQ: block reconstruction (rounding, then activation step sizes), optional Fisher loss"
    params_type = BRECQParams

    def stages(self, p: BRECQParams) -> list[Stage]:
        return [
            Stage("brecq-weights", units="block", fisher=p.fisher),
            Stage("brecq-acts", units="block", rounding=False, acts_on=True, learn_acts=True, fisher=p.fisher),
        ]


@register_algo(label="QDrop", order=110)
class QDrop(ReconAlgorithm):
    """QDrop: block reconstruction with activation quantization randomly dropped."""

    name = "qdrop"
    description = "QDrop: block reconstruction with activations dropped to full precision (p=0.5)"
    params_type = QDropParams

    def stages(self, p: QDropParams) -> list[Stage]:
        return [Stage("qdrop", units="block", acts_on=True, learn_acts=True, drop_prob=p.drop_prob,
                      mask_rng=p.mask_rng)]


@register_algo(label="IOSO", order=130)
class IOSO(ReconAlgorithm):
    """IOSO: output channel-wise scale and offset, input channel-wise scale groups, AdaRound rounding."""

    not_deployable = ("IOSO's input-channel factors (shift-and-add groups) are modelled neither by the integer "
                      "executor nor by ONNX QDQ")
    name = "ioso"
    description = "IOSO: output channel-wise scale/offset + input channel scale groups, block reconstruction"
    params_type = IOSOParams

    def unsupported(self, profile: HardwareProfile) -> str | None:
        w = profile.weight
        if not w.per_channel:
            return ("IOSO's output channel-wise scale folds into per-output-channel weight scales "
                    f"(seed 002 Sec. 2.1); hw={profile.name} quantizes weights per tensor")
        if w.pot_scale:
            return f"IOSO's learned output scales are not powers of two; hw={profile.name} needs power-of-two scales"
        return None

    def stages(self, p: IOSOParams) -> list[Stage]:
        build = make_quantizer(p.isg, list(p.group_values))
        return [
            Stage("ioso-weights", units="block", quantizer=build,
                  extra=lambda mods: oso_parameters(mods, groups=True), extra_reg=groups_regularizer),
            Stage("ioso-acts", units="block", rounding=False, acts_on=True, learn_acts=True,
                  extra=lambda mods: oso_parameters(mods, groups=False)),
        ]

    def between_stages(self, gm: fx.GraphModule, calib: torch.Tensor, batch_size: int, done: Stage) -> None:
        harden_groups(gm)  # App. C: R has converged in the weight step and is not learned afterwards

    def finish(self, gm: fx.GraphModule, calib: torch.Tensor, p: dict[str, Any]) -> dict[str, Any]:
        # which group each input channel chose, and the extra integer operations ISG costs (seed 002 Table 5)
        counts: list[int] = []
        for _, m in weighted_modules(gm):
            if isinstance(m.weight_fq, IOSOQuantizer):
                c = m.weight_fq.group_counts()
                if c:
                    counts = [a + b for a, b in zip(counts, c, strict=True)] if counts else c
        n_groups = len(p.group_values) if p.isg else 1
        ops = isg_int_ops(gm, calib[:1], n_groups)
        return {"ioso_group_counts": counts, **{f"ioso_{k}": v for k, v in ops.items()}}
