"""Calibration of a prepared model: weight quantizers from the deployed (folded) weights, activation quantizers
from a forward pass over the calibration images; and BN re-calibration (MQBench App. C.3)."""

from __future__ import annotations

import torch
from torch import nn

from bench.quant.insert import quantizers, weighted_modules
from bench.quant.qmodules import QuantConvBn2d
from bench.quant.quantizer import FakeQuantize


def _batches(images: torch.Tensor, batch_size: int):  # noqa: ANN202
    for i in range(0, images.shape[0], batch_size):
        yield images[i : i + batch_size]


@torch.no_grad()
def calibrate_weights(gm: nn.Module) -> None:
    """Set every weight quantizer's parameters from the weight that is deployed (BN folded with running stats)."""
    for _, m in weighted_modules(gm):
        fq = m.weight_fq
        if not isinstance(fq, FakeQuantize):
            continue
        fq.reset_observer()
        fq.observing = True
        fq(m.folded_weight_bias()[0].detach())
        fq.observing = False
        fq.compute_qparams()


@torch.no_grad()
def calibrate_acts(gm: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Observe every activation quantizer's input over ``images`` (quantizers pass through meanwhile), then set
    their parameters. Weight quantizers stay as they are (calibrate them first, so the activations seen are those
    of the quantized-weight model)."""
    acts = [fq for _, fq in quantizers(gm) if fq.kind == "act"]
    was_training = gm.training
    gm.eval()
    for fq in acts:
        fq.reset_observer()
        fq.observing = True
    try:
        for x in _batches(images, batch_size):
            gm(x)
    finally:
        for fq in acts:
            fq.observing = False
    for fq in acts:
        fq.compute_qparams()
    gm.train(was_training)


def calibrate(gm: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Weights first, then activations (the standard PTQ pipeline of the white paper, Sec. 4.5)."""
    calibrate_weights(gm)
    calibrate_acts(gm, images, batch_size)


@torch.no_grad()
def recalibrate_bn(gm: nn.Module, images: torch.Tensor, batch_size: int = 256) -> int:
    """Re-estimate BN running statistics of the quantized model on ``images`` (MQBench App. C.3).

    Statistics are reset and re-accumulated as an exact average over the calibration set; BN layers folded with
    strategy 0 (no BN left) or 1 (statistics frozen by definition) are left alone. Since folded weights depend on
    the statistics, weight quantizers are re-calibrated afterwards. Returns the number of BN layers re-estimated.
    """
    fused = [m for m in gm.modules() if isinstance(m, QuantConvBn2d)]
    owned = {id(getattr(m, "bn", None)) for m in fused}
    owners = [m for m in fused if m.strategy not in (0, 1)]
    plain = [m for m in gm.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in owned]
    bns = [o.bn for o in owners] + plain
    if not bns:
        return 0
    was_training = gm.training
    saved = [bn.momentum for bn in bns]
    gm.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every calibration batch weighs the same
    for m in owners + plain:
        m.train()
    try:
        for x in _batches(images, batch_size):
            gm(x)
    finally:
        for bn, mom in zip(bns, saved, strict=True):
            bn.momentum = mom
        gm.train(was_training)
    calibrate_weights(gm)
    return len(bns)
