"""What every QAT algorithm shares: the learnable quantizer base class and the fine-tuning step.

A QAT algorithm (MQBench Sec. 2, App. F) is a pair of quantizer classes (weights, activations) plus this one
pipeline: prepare -> calibrate (``calib.*`` initialises the algorithm's parameters, MQBench App. C.4) -> ``init_top1``
-> fine-tune with the unified loop (``bench.engine.train``; quantizer parameters in their own group, weight decay
``algo.params.qparam_weight_decay``, default 0) -> ``top1``. The learned quantization parameters are saved beside
the record as ``qparams.json`` (MQBench App. B diagnostics).

Every quantizer returns values in the units of its input, so BN folding, the float residual path and ``init_top1``
see the same magnitudes as the FP32 model. Algorithms whose original formulation normalises the tensor (DoReFa's
``tanh(w) / max|tanh(w)|``, QIL's interval transformer, APoT's weight standardisation) multiply the quantized value
back by the (detached) normaliser: the forward values are the original ones times a constant per tensor, the
learnable parameters get the original gradient rule (times that constant). Without it a folded layer's running
variance would drift geometrically (the normalised weight no longer carries gamma / sigma).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.fx as fx
from omegaconf import DictConfig
from torch import nn

from bench import baselines
from bench.algos.base import AlgoParams, CellContext
from bench.algos.quantized import QuantizedAlgorithm
from bench.engine import TrainHooks, train
from bench.errors import BenchError
from bench.quant.fake import EPS, pot_scale
from bench.quant.insert import QuantizerFactory, quantizers, weighted_modules
from bench.quant.observers import build_observer
from bench.quant.profiles import HardwareProfile
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec
from bench.results import write_atomic

log = logging.getLogger(__name__)



def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` in the forward pass, gradient multiplied by ``g`` in the backward pass (LSQ Sec. 2.2)."""
    y = x * g
    return (x - y).detach() + y


def pot_ste(s: torch.Tensor) -> torch.Tensor:
    """``2 ** round(log2 s)`` forward, identity backward: a learned scale constrained to powers of two (TVM)."""
    return s + (pot_scale(s.detach(), "round") - s).detach()


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, gradient of ``x`` backward (``q`` is a quantized version of ``x``)."""
    return x + (q - x).detach()


def channel_shape(x: torch.Tensor, axis: int | None) -> list[int]:
    """Shape that broadcasts a per-channel vector along ``axis`` of ``x`` (all ones for per-tensor)."""
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    return shape


def reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    """All dimensions of ``x`` but ``axis`` (all of them for per-tensor)."""
    return [d for d in range(x.dim()) if d != axis]


class LearnableQuantizer(FakeQuantize):
    """Base of the QAT quantizers.

    Calibration fills ``scale`` / ``zero_point`` as for PTQ; :meth:`init_learned` then sets the algorithm's own
    parameters from them (or from the paper's constants with ``algo.init=paper``) and :meth:`quantize`
    is the algorithm's forward. :meth:`sync_qparams` writes the effective grid back into the buffers (report,
    export) and :meth:`learned` lists the learned values for ``qparams.json``.
    """

    def __init__(self, spec: QuantSpec, kind: str, observer: Any | None = None, params: Any = None,
                 init: str = "calib") -> None:
        super().__init__(spec, kind, observer)
        self.params = params  # the algorithm's AlgoParams (None: the defaults)
        self.init_mode = init  # algo.init: paper | calib
        for name in self.lazy_params:  # created by init_learned (or a loaded state dict); None until then
            setattr(self, name, None)

    @torch.no_grad()
    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor, signed: bool | None = None) -> None:
        super().set_qparams(scale, zero_point, signed)
        self.init_learned()

    def calibrated_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float range ``[lo, hi]`` the calibrated grid covers (per channel for per-channel specs)."""
        qmin, qmax = self.qrange
        z = self.zero_point.float()
        return self.scale * (qmin - z), self.scale * (qmax - z)

    def calibrated_amax(self) -> torch.Tensor:
        """Largest magnitude the calibrated grid represents without clipping (``s * qmax`` on symmetric grids: the
        extra negative level of a signed grid is not part of the calibrated range), as a 1-element tensor."""
        lo, hi = self.calibrated_range()
        if self.spec.symmetric:
            return hi.abs().max().reshape(1)
        return torch.maximum(hi.abs(), lo.abs()).max().reshape(1)

    def init_learned(self) -> None:
        """Set the learnable parameters (after calibration). Default: nothing to learn."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The algorithm's fake quantization of ``x`` (training and evaluation)."""
        raise NotImplementedError

    def effective_qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(scale, zero_point)`` of the grid the quantized values lie on (``x``: the weight, for quantizers
        whose grid follows the tensor). Default: the buffers."""
        return self.scale, self.zero_point

    def grid(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, z = self.effective_qparams(x)
        return s.detach(), z.detach()

    @torch.no_grad()
    def sync_qparams(self, x: torch.Tensor | None = None) -> None:
        """Copy :meth:`effective_qparams` into the ``scale`` / ``zero_point`` buffers."""
        if self.spec.bypass or not self.calibrated:
            return
        s, z = self.effective_qparams(x)
        self.scale = s.detach().reshape(-1).float().clone()
        self.zero_point = z.detach().reshape(-1).round().to(torch.int32).clone()

    def learned(self) -> dict[str, Any]:
        """The learned parameters by name (lists of floats) for ``qparams.json``."""
        return {n: p.detach().reshape(-1).tolist() for n, p in self.named_parameters(recurse=False)}

    def _param(self, name: str, value: torch.Tensor) -> None:
        # (re)create a learnable parameter holding ``value`` (shape follows the calibration, e.g. per channel)
        setattr(self, name, nn.Parameter(value.detach().clone().float().to(self.scale.device)))

    # parameters / buffers a subclass creates in init_learned (after calibration); a state dict may bring them earlier
    lazy_params: tuple[str, ...] = ()
    lazy_buffers: tuple[str, ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # learned parameters are sized at calibration: adopt the stored shapes before loading
        for name in self.lazy_params:
            key = prefix + name
            p = getattr(self, name, None)
            if key in state_dict and (p is None or state_dict[key].shape != p.shape):
                self._param(name, torch.empty_like(state_dict[key]))
        for name in self.lazy_buffers:
            if prefix + name in state_dict and not hasattr(self, name):
                self.register_buffer(name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class QATHooks(TrainHooks):
    """Quantizer parameters in their own optimizer group (own weight decay)."""

    def __init__(self, params: list[nn.Parameter], weight_decay: float) -> None:
        self.params, self.weight_decay = params, weight_decay

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if not self.params:
            return []
        return [{"name": "quant_params", "params": self.params, "weight_decay": self.weight_decay}]


@dataclass(frozen=True)
class QATParams(AlgoParams):
    """``algo.params`` every QAT algorithm has."""

    qparam_weight_decay: float = 0.0  # weight decay on the learned quantization parameters (MQBench App. B.2.3)

    def check(self) -> None:
        if self.qparam_weight_decay < 0:
            raise BenchError(f"algo.params.qparam_weight_decay={self.qparam_weight_decay} must be >= 0")


class QATAlgorithm(QuantizedAlgorithm):
    """Quantization-aware fine-tuning with the algorithm's quantizers (subclasses set the two classes).

    ``academic_only`` holds the reason when the algorithm cannot run on a hardware profile (MQBench Table 2):
    :meth:`check` then rejects any profile with ``hardware_target: true`` before work starts.
    """

    kind = "qat"
    weight_quantizer: type[LearnableQuantizer]
    act_quantizer: type[LearnableQuantizer]
    academic_only: str | None = None
    # observers (weight, act) of the original paper's initialisation, used with algo.init=paper (for algorithms
    # whose paper sets constants -- PACT's 6, APoT's 3 / 6 -- or rules, they only decide adaptive signedness)
    paper_calib: tuple[str, str] = ("minmax", "minmax")
    params_type: ClassVar[type[AlgoParams]] = QATParams

    @property
    def not_deployable(self) -> str | None:  # type: ignore[override]
        return self.academic_only

    def unsupported(self, profile: HardwareProfile) -> str | None:
        if self.academic_only and profile.hardware_target:
            return f"{self.academic_only} (MQBench Table 2)"
        return None

    def factory(self, ctx: CellContext) -> QuantizerFactory:
        return self.quantizer_factory(self.params(ctx.cfg), str(ctx.cfg.algo.init))

    def quantizer_factory(self, params: AlgoParams | None = None, init: str = "paper") -> QuantizerFactory:
        """The factory building this algorithm's quantizers with ``params`` (default: the defaults) and the
        ``algo.init`` mode ``init`` (``paper`` | ``calib``)."""
        params = self.params_type() if params is None else params
        paper = init == "paper"

        def make(spec: QuantSpec, kind: str, observer: str) -> FakeQuantize:
            cls = self.weight_quantizer if kind == "weight" else self.act_quantizer
            spec = self.adapt_spec(spec, kind)
            if paper:
                observer = self.paper_calib[0 if kind == "weight" else 1]
            return cls(spec, kind, build_observer(observer, spec), params, "paper" if paper else "calib")

        return make

    def init_calib(self, cfg: DictConfig) -> tuple[str, str]:
        """The (weight, act) observers that initialise the cell's quantizers: the paper's, or ``calib.*``."""
        return self.paper_calib if cfg.algo.init == "paper" else (str(cfg.calib.weight), str(cfg.calib.act))

    def adapt_spec(self, spec: QuantSpec, kind: str) -> QuantSpec:
        """Hook for algorithms that change the grid format within what the profile allows (LSQ+)."""
        return spec

    def optimize(self, ctx: CellContext, gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, Any] | None:
        cfg = ctx.cfg
        params = self.params(cfg)
        recipe = baselines.resolve_recipe(cfg.train, cfg.arch)
        learnable = [fq for _, fq in quantizers(gm) if isinstance(fq, LearnableQuantizer)]
        qparams = [p for fq in learnable for p in fq.parameters(recurse=False)]
        steps = baselines.max_batches(cfg.train, cfg.debug)
        partial, resume = _partial_state(cfg, ctx.cell_hash)
        n = len(ctx.data.train)
        log.info("QAT %s: %d quantizers, %d learnable parameter tensors, %s, %d steps/epoch", self.name,
                 len(learnable), len(qparams), recipe, min(n, steps) if steps else n)

        def save_state(state: dict[str, Any]) -> None:
            baselines.save_checkpoint_atomic(state, partial)

        result = train(
            gm, ctx.data.train, ctx.data.test, recipe,
            hooks=QATHooks(qparams, params.qparam_weight_decay), metrics=ctx.metrics, phase="qat",
            max_train_batches=steps, max_eval_batches=cfg.debug.max_eval_batches, progress=bool(cfg.progress),
            resume=resume, save_state=save_state, log_every=int(cfg.train.log_every),
        )
        partial.unlink(missing_ok=True)
        sync_learned(gm)
        path = Path(ctx.output_dir) / "qparams.json"
        write_qparams(gm, path)
        out: dict[str, Any] = {
            "status": result.status, "train_epochs": result.epochs_done, "qparams_json": path.name,
            "train_steps_per_epoch": result.steps_per_epoch, "qat_params": params.as_dict(),
            "qat_init": str(cfg.algo.init),
            "init_observers": list(self.init_calib(cfg)),
            "resumed_from_epoch": int(resume["epoch"]) if resume else 0,  # > 0: an interrupted cell went on
        }
        if result.status != "ok":
            out["error"] = f"QAT did not converge: {result.reason}"
        elif result.history:  # the loop evaluated the trained model on the test set: no second pass needed
            last = result.history[-1]
            out["final_eval"] = {"top1": last["test_top1"], "top5": last["test_top5"]}
        return out


def _partial_state(cfg: DictConfig, cell_hash: str) -> tuple[Path, dict[str, Any] | None]:
    # an interrupted QAT cell resumes from its last finished epoch (keyed by the cell's config hash)
    if not cell_hash:
        raise ValueError("a QAT cell needs its config hash (CellContext.cell_hash) to keep resumable state")
    path = baselines.cache_root(cfg) / "qat_partial" / f"{cell_hash}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return path, None
    try:
        state = baselines.load_checkpoint(path)
    except BenchError:
        log.warning("ignoring unreadable partial QAT state %s", path)
        return path, None
    log.info("resuming QAT from %s", path)
    return path, state


@torch.no_grad()
def sync_learned(gm: nn.Module) -> None:
    """Write every learnable quantizer's current grid into its buffers (weights from the deployed folded weight)."""
    weight_fqs = set()
    for _, m in weighted_modules(gm):
        fq = m.weight_fq
        if isinstance(fq, LearnableQuantizer):
            fq.sync_qparams(m.folded_weight_bias()[0].detach())
            weight_fqs.add(id(fq))
    for _, fq in quantizers(gm):
        if isinstance(fq, LearnableQuantizer) and id(fq) not in weight_fqs:
            fq.sync_qparams()


def write_qparams(gm: nn.Module, path: Path) -> None:
    """Every quantizer's grid and learned parameters as JSON (written atomically)."""
    data: dict[str, Any] = {}
    for name, fq in quantizers(gm):
        qmin, qmax = fq.qrange
        entry: dict[str, Any] = {
            "kind": fq.kind, "spec": fq.spec.describe(), "signed": fq.signed, "qmin": qmin, "qmax": qmax,
            "scale": fq.scale.reshape(-1).tolist(), "zero_point": fq.zero_point.reshape(-1).tolist(),
        }
        if isinstance(fq, LearnableQuantizer):
            entry["learned"] = fq.learned()
            entry["algo_quantizer"] = type(fq).__name__
        data[name] = entry
    text = json.dumps(data, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def lsq_grad_factor(numel: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * Qp)`` (``N`` elements per tensor, or per channel)."""
    return 1.0 / math.sqrt(max(numel, 1) * max(qmax, 1))


def positive(p: torch.Tensor) -> torch.Tensor:
    """Keep a learned scale / clip value strictly positive in the forward pass (its gradient is unchanged)."""
    return p.abs().clamp_min(EPS)
