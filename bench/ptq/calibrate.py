"""Calibration of a prepared model: weight quantizers from the deployed (folded) weights, activation quantizers
from a forward pass over the calibration images; and BN re-calibration (MQBench App. C.3)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from bench.quant.insert import quantizers, weighted_modules
from bench.quant.qmodules import QuantConvBn2d
from bench.quant.quantizer import FakeQuantize


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
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

    Quantization parameters stay fixed. In one pass over the images every BN normalises with the batch statistics of
    its input in the quantized model (:meth:`QuantConvBn2d.pre_bn`), so downstream layers see re-normalised
    activations; the running mean / variance are then set to the average of the batch means / unbiased variances
    (PyTorch's cumulative average, ``momentum=None``). The running statistics are not touched during the pass, so
    the running-statistics fold inside strategies 1-4 stays consistent with the calibrated weight quantizers; since
    the folded weights change with the new statistics, weight quantizers are re-calibrated afterwards. Strategy 0
    (BN merged away) has nothing to re-estimate. Returns the number of BN layers re-estimated.
    """
    fused = [m for m in gm.modules() if isinstance(m, QuantConvBn2d)]
    owned = {id(m.bn) for m in fused if m.bn is not None}
    owners = [m for m in fused if m.strategy != 0]
    plain = [m for m in gm.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in owned]
    if not owners and not plain:
        return 0
    was_training = gm.training
    saved = [bn.momentum for bn in plain]
    gm.eval()
    for m in owners:
        m.stat_sink = []
    for bn in plain:  # BN outside a conv+BN module: PyTorch's own cumulative re-estimation
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for x in _batches(images, batch_size):
            gm(x)
        for m in owners:
            bn, stats = m.bn, m.stat_sink
            assert bn is not None and stats
            bn.running_mean.copy_(torch.stack([mean for mean, _, _ in stats]).mean(0))
            bn.running_var.copy_(torch.stack([var for _, var, _ in stats]).mean(0))
            bn.num_batches_tracked.fill_(len(stats))
    finally:
        for m in owners:
            m.stat_sink = None
        for bn, mom in zip(plain, saved, strict=True):
            bn.momentum = mom
        gm.train(was_training)
    calibrate_weights(gm)
    return len(owners) + len(plain)
