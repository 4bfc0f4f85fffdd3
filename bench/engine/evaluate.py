"""Top-1 / top-5 evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from bench.engine import distributed


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> dict[str, float]:
    """Evaluate ``model`` in eval mode; returns top1/top5 in percent, mean loss and the sample count.

    Under torch.distributed every rank evaluates its slice of each batch and the counts are summed, so all ranks
    return the numbers of the whole test set (every rank must call this, in the same order).
    """
    dist = distributed.current()
    loader = dist.shard(loader, drop_last=False)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    n = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hit = topk.eq(y[:, None])
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        n += y.numel()
    model.train(was_training)
    if dist.enabled:
        correct1, correct5, loss_sum, total = dist.sum([correct1, correct5, loss_sum, n])
        n = int(total)
    if n == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "n": 0}
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n, "n": n}
