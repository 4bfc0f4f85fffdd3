"""Output reconstruction, unit by unit: the optimisation loop shared by AdaRound, BRECQ, QDrop and IOSO.

For each :class:`~bench.ptq.units.Unit` in graph order the loop caches, over the calibration images,

- ``x_q``: the unit's input in the quantized model, every earlier unit already reconstructed (white paper eq. 35:
  "the layer's input with all preceding layers quantized");
- ``x_fp`` / ``y_fp``: its input and output in the FP32 model (all quantizers off): ``y_fp`` is the target;

then minimises ``||y_fp - unit(x)||^2`` (summed over channels, averaged over the rest, as BRECQ's ``lp_loss``) plus
AdaRound's rounding regulariser, weighted by ``reg_weight`` and annealed from ``beta_start`` to ``beta_end`` after
``warmup`` of the iterations (none before), with Adam on mini-batches of the cache. What is learned depends on the
stage (:class:`Stage`): the rounding of the weights (``AdaRoundQuantizer`` or a subclass), the activation step
sizes (an LSQ quantizer per activation quantizer, its learned scale written back at the end), method parameters
(IOSO), with QDrop's random drop of activation quantization (each element kept in full precision with probability
``drop_prob``, and the unit input mixed between ``x_fp`` and ``x_q`` with the same probability). BRECQ's optional
Fisher weighting multiplies the squared error by the squared gradient of the KL divergence between the FP32 and the
current quantized model's outputs with respect to the unit's output (normalised to mean 1).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.models.graph import set_submodule
from bench.ptq import drop
from bench.ptq.frozen import FrozenWeightQuantizer
from bench.ptq.rounding import AdaRoundQuantizer
from bench.ptq.units import Unit, capture, graph_input, partition, quant_enabled, subgraph_module
from bench.quant.fake import EPS, pot_scale
from bench.quant.insert import WEIGHTED
from bench.quant.lsq import lsq_fake_quantize
from bench.quant.quantizer import FakeQuantize

log = logging.getLogger(__name__)

EVAL_SAMPLES = 256  # calibration images on which each unit's loss is reported before / after


@dataclass(frozen=True)
class ReconSettings:
    """The optimisation budget (``recon.*`` config group; ``bench/conf/recon/imagenet.yaml``: the papers' values)."""

    iters: int = 20000
    batch_size: int = 32
    lr: float = 1e-3
    act_lr: float = 4e-5
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0


@dataclass
class Stage:
    """What one pass over the units learns."""

    name: str
    units: str = "block"  # "layer" | "block"
    rounding: bool = True  # learn the weight rounding (regularised)
    acts_on: bool = False  # activation quantizers on while reconstructing (and in the cached x_q)
    learn_acts: bool = False  # learn the activation step sizes (requires acts_on)
    drop_prob: float = 0.0  # QDrop
    mask_rng: str = "torch"  # QDrop's masks: torch.rand (its reference code) | splitmix (bench.ptq.drop)
    fisher: bool = False  # BRECQ's Fisher-weighted loss
    # the learned-rounding quantizer of a layer: (calibrated quantizer, fixed weight, layer module) -> quantizer
    quantizer: Callable[[FakeQuantize, torch.Tensor, nn.Module], AdaRoundQuantizer] = (
        lambda fq, w, m: AdaRoundQuantizer(fq, w)
    )
    # extra parameters of a unit's layers (IOSO: output scales and offsets, ISG logits), learned with ``lr``, and
    # their regulariser (added to the rounding one)
    extra: Callable[[list[nn.Module]], list[nn.Parameter]] | None = None
    extra_reg: Callable[[list[nn.Module], float], torch.Tensor] | None = None


def beta_at(it: int, settings: ReconSettings) -> float | None:
    """The regulariser's beta at iteration ``it``: None during warm-up, then linear from start to end."""
    start = settings.warmup * settings.iters
    if it < start:
        return None
    rel = (it - start) / max(settings.iters - start, 1)
    return settings.beta_end + (settings.beta_start - settings.beta_end) * max(0.0, 1.0 - rel)


def rec_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over channels (dim 1), averaged over batch and space; optionally element-weighted."""
    err = (pred - target).pow(2)
    if weight is not None:
        err = err * weight
    return err.sum(1).mean() if err.dim() > 1 else err.mean()


class ReconActQuantizer(FakeQuantize):
    """An activation quantizer whose step size (and zero point, on asymmetric grids) is learned during
    reconstruction, starting from the calibrated ``source`` (straight-through rounding, LSQ's gradients; a
    power-of-two profile keeps the step a power of two in the forward pass). ``drop_prob`` > 0 keeps each element
    in full precision with that probability (QDrop)."""

    def __init__(self, source: FakeQuantize) -> None:
        super().__init__(source.spec, "act", None)
        self.to(source.scale.device)  # the buffers of a new module are on the CPU; the model may be on CUDA
        if source.ch_axis is not None:
            raise ValueError("learned step sizes are per-tensor (every profile quantizes activations per tensor)")
        self.signed = source.signed
        self.set_qparams(source.scale, source.zero_point)
        self.s = nn.Parameter(source.scale.detach().clone().reshape(1))
        self.z = None if source.spec.symmetric else nn.Parameter(source.zero_point.detach().float().reshape(1))
        self.drop_prob = 0.0
        self.mask_rng = "torch"

    def _step(self) -> torch.Tensor:
        s = self.s.abs().clamp_min(EPS)
        return s + (pot_scale(s.detach(), "round") - s).detach() if self.spec.pot_scale else s

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qrange
        # positive inside the quantizer's autograd node where there is no power-of-two step (same numbers)
        s, eps = (self._step(), None) if self.spec.pot_scale else (self.s, EPS)
        if self.z is not None:
            with torch.no_grad():
                self.z.clamp_(qmin, qmax)
        # z None: symmetric
        q = lsq_fake_quantize(x, s, self.z, qmin, qmax, 1.0, None, self.spec.rounding, positive_eps=eps)
        if self.drop_prob > 0:
            if self.mask_rng == "splitmix":
                return drop.drop(x, q, drop.draw_key(), self.drop_prob)
            fused = drop.rand_where(x, q, self.drop_prob)  # the same draws and numbers (fused=true)
            return fused if fused is not None else torch.where(torch.rand_like(x) < self.drop_prob, x, q)
        return q

    def grid(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.effective_qparams()

    @torch.no_grad()
    def effective_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned grid: ``(scale, integer zero point)`` (the fused op rounds the zero point half up)."""
        s = self._step().detach()
        if self.z is None:
            return s, torch.zeros_like(s, dtype=torch.int32)
        qmin, qmax = self.qrange
        return s, torch.floor(self.z.detach() + 0.5).clamp(qmin, qmax).to(torch.int32)


def _unit_quantizers(gm: fx.GraphModule, unit: Unit) -> tuple[list[nn.Module], list[tuple[str, FakeQuantize]]]:
    weighted, acts = [], []
    for n in unit.nodes:
        if n.op != "call_module":
            continue
        m = gm.get_submodule(str(n.target))
        if isinstance(m, WEIGHTED):
            weighted.append(m)
        elif isinstance(m, FakeQuantize) and m.kind == "act":
            acts.append((str(n.target), m))
    return weighted, acts


def _final_output(gm: fx.GraphModule) -> fx.Node:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    node = out.args[0]
    assert isinstance(node, fx.Node), "reconstruction needs a model with one output tensor"
    return node


def fp_values(ref: fx.GraphModule, names: Sequence[str], images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The values of the nodes called ``names`` in the FP32 reference model (its quantizers off)."""
    nodes = {n.name: n for n in ref.graph.nodes}
    with quant_enabled(ref, weights=False, acts=False):
        return capture(ref, [nodes[n] for n in names], images, batch_size)


def _fisher_weights(gm: fx.GraphModule, ref: fx.GraphModule, unit: Unit, images: torch.Tensor, acts_on: bool,
                    batch_size: int) -> torch.Tensor:
    """Squared gradient of KL(FP32 || quantized) w.r.t. the unit output, per element, normalised to mean 1."""
    final = _final_output(gm)
    (fp_logits,) = fp_values(ref, [final.name], images, batch_size)
    sub = subgraph_module(gm, [graph_input(gm)], [unit.output, final])
    sub.eval()
    grads = []
    with quant_enabled(gm, weights=True, acts=acts_on):
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].clone().requires_grad_(True)  # gives every tensor a grad_fn
            out, logits = sub(x)
            kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(fp_logits[i : i + batch_size], 1), reduction="sum")
            (g,) = torch.autograd.grad(kl, out)
            grads.append(g.detach().pow(2))
    w = torch.cat(grads)
    return w / w.mean().clamp_min(1e-12)


def reconstruct(
    gm: fx.GraphModule,
    images: torch.Tensor,
    stage: Stage,
    settings: ReconSettings,
    *,
    batch_size: int = 256,
    progress: bool = True,
    seed: int = 0,
    only: Sequence[str] | None = None,
    reference: fx.GraphModule | None = None,
) -> list[dict[str, Any]]:
    """Run ``stage`` over every unit of ``gm`` (prepared and calibrated) in graph order, or over the units named in
    ``only``; returns per-unit stats (name, kind, layers, loss before with the quantizers as they were, loss after).
    Rounding learned here stays an (hardened) ``AdaRoundQuantizer``: call :func:`freeze` once every stage is done.

    The FP32 targets come from ``reference`` (a copy of ``gm`` taken before any method changed a parameter, its
    quantizers off), not from ``gm`` with its quantizers off: methods that learn biases (IOSO) or earlier stages would
    otherwise move the targets. Default: a copy of ``gm`` as it is now."""
    ref = copy.deepcopy(gm) if reference is None else reference
    ref.eval()
    gm.eval()
    requires = {p: p.requires_grad for p in gm.parameters()}
    for p in requires:
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    stats = []
    try:
        for unit in partition(gm, stage.units):
            if only is not None and unit.name not in only:
                continue
            stats.append(_reconstruct_unit(gm, ref, unit, images, stage, settings, batch_size, progress, gen))
    finally:
        for p, r in requires.items():
            p.requires_grad_(r)
    return stats


def _reconstruct_unit(
    gm: fx.GraphModule, ref: fx.GraphModule, unit: Unit, images: torch.Tensor, stage: Stage, settings: ReconSettings,
    batch_size: int, progress: bool, gen: torch.Generator,
) -> dict[str, Any]:
    with quant_enabled(gm, weights=True, acts=stage.acts_on):
        (x_q,) = capture(gm, [unit.input], images, batch_size)
    x_fp, y_fp = fp_values(ref, [unit.input.name, unit.output.name], images, batch_size)
    fisher = _fisher_weights(gm, ref, unit, images, stage.acts_on, batch_size) if stage.fisher else None
    n = x_q.shape[0]
    ev = torch.arange(min(n, EVAL_SAMPLES))

    weighted, acts = _unit_quantizers(gm, unit)
    with quant_enabled(gm, weights=True, acts=stage.acts_on):
        before = _eval_loss(gm, unit, x_q, y_fp, ev)
        params: list[dict[str, Any]] = []
        rounders: list[AdaRoundQuantizer] = []
        if stage.rounding:
            for m in weighted:
                fq = m.weight_fq
                if isinstance(fq, AdaRoundQuantizer | FrozenWeightQuantizer) or not fq.active:
                    continue
                rq = stage.quantizer(fq, m.folded_weight_bias()[0].detach(), m)
                m.weight_fq = rq
                rounders.append(rq)
            params.append({"params": [q.alpha for q in rounders], "lr": settings.lr})
        learned_acts: list[tuple[str, FakeQuantize, ReconActQuantizer]] = []
        act_group: dict[str, Any] | None = None  # Adam keeps this dict as its param group: lr is set through it
        if stage.learn_acts and stage.acts_on:
            for name, fq in acts:
                if not fq.active:
                    continue
                lq = ReconActQuantizer(fq)
                set_submodule(gm, name, lq)
                learned_acts.append((name, fq, lq))
            act_params = [p for _, _, lq in learned_acts for p in lq.parameters()]
            if act_params:
                act_group = {"params": act_params, "lr": settings.act_lr}
                params.append(act_group)
        extra = stage.extra(weighted) if stage.extra is not None else []
        if extra:
            params.append({"params": extra, "lr": settings.lr})
        params = [g for g in params if g["params"]]
        for g in params:
            for p in g["params"]:
                p.requires_grad_(True)
        sub = subgraph_module(gm, [unit.input], [unit.output])
        sub.eval()
        if params:
            opt = torch.optim.Adam(params)
            bar = tqdm(range(settings.iters), desc=f"{stage.name} {unit.name}", disable=not progress or None,
                       leave=False, mininterval=1.0)
            for it in bar:
                idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=gen).to(x_q.device)
                x = _rows(x_q, idx)
                if stage.drop_prob > 0 and stage.mask_rng == "splitmix":
                    x = drop.select(_rows(x_fp, idx), x, drop.draw_key(gen), stage.drop_prob)
                elif stage.drop_prob > 0:
                    # drawn from the seeded CPU generator (the same masks on every device), then moved to the data
                    mixed = drop.rand_where(_rows(x_fp, idx), x, stage.drop_prob, gen)  # the same draws (fused=true)
                    if mixed is None:
                        keep = torch.rand(x.shape, generator=gen).to(x.device) < stage.drop_prob
                        mixed = torch.where(keep, _rows(x_fp, idx), x)
                    x = mixed
                for _, _, lq in learned_acts:
                    lq.drop_prob, lq.mask_rng = stage.drop_prob, stage.mask_rng
                out = sub(x)
                rec = rec_loss(out, _rows(y_fp, idx), None if fisher is None else _rows(fisher, idx))
                beta = beta_at(it, settings)
                reg = torch.zeros(())
                if beta is not None and stage.rounding:
                    reg = sum((q.regularizer(beta) for q in rounders), torch.zeros(()))
                    if stage.extra_reg is not None:
                        reg = reg + stage.extra_reg(weighted, beta)
                loss = rec + settings.reg_weight * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if act_group is not None:  # cosine decay of the step-size learning rate (BRECQ, QDrop)
                    act_group["lr"] = 0.5 * settings.act_lr * (1 + math.cos(math.pi * (it + 1) / settings.iters))
                if it % 50 == 0:
                    bar.set_postfix(rec=f"{rec.item():.4g}", reg=f"{reg.item():.4g}")
            bar.close()
        for _, _, lq in learned_acts:
            lq.drop_prob = 0.0
        for q in rounders:
            q.soft = False
        for g in params:
            for p in g["params"]:
                p.requires_grad_(False)
        after = _eval_loss(gm, unit, x_q, y_fp, ev)
        for name, fq, lq in learned_acts:  # learned step sizes back into the original quantizer
            s, z = lq.effective_qparams()
            fq.set_qparams(s, z)
            set_submodule(gm, name, fq)
    log.info("%s %s: reconstruction loss %.4g -> %.4g", stage.name, unit.name, before, after)
    return {"stage": stage.name, "unit": unit.name, "kind": unit.kind, "layers": unit.layers,
            "loss_before": before, "loss_after": after}


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # the same rows as t[idx], bit for bit; advanced indexing's gather runs element by element (0.17 ms for 32 rows of
    # 64x16x16 on 2 threads), index_select copies whole rows (0.03 ms): three or four of them per iteration
    return t.index_select(0, idx)


@torch.no_grad()
def _eval_loss(gm: fx.GraphModule, unit: Unit, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> float:
    sub = subgraph_module(gm, [unit.input], [unit.output])
    sub.eval()
    total = 0.0
    for i in range(0, idx.numel(), 64):
        j = idx[i : i + 64]
        total += rec_loss(sub(x[j]), y[j]).item() * j.numel()
    return total / max(idx.numel(), 1)


@torch.no_grad()
def freeze(gm: fx.GraphModule) -> int:
    """Replace every learned-rounding weight quantizer by its hardened :class:`FrozenWeightQuantizer`."""
    count = 0
    for _, m in gm.named_modules():
        if isinstance(m, WEIGHTED) and isinstance(m.weight_fq, AdaRoundQuantizer):
            m.weight_fq = m.weight_fq.freeze(m.folded_weight_bias()[0].detach())
            count += 1
    return count
