"""The one training loop every cell uses (FP32 baselines now, QAT algorithms through hooks)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from bench.engine import distributed
from bench.engine.evaluate import evaluate
from bench.engine.metrics import MetricsWriter
from bench.engine.optim import build_optimizer
from bench.engine.schedule import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecipe:
    """Resolved hyper-parameters of one training phase (no ``None`` left)."""

    epochs: int
    lr: float
    weight_decay: float
    momentum: float = 0.9
    nesterov: bool = True
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    min_lr: float = 0.0
    bn_weight_decay: bool = True


class TrainHooks:
    """Algorithm plug points of the loop; the defaults do nothing (plain FP32 training)."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Extra optimizer groups (their parameters leave the default groups)."""
        return []

    def on_step(self, step: int, model: nn.Module) -> None:
        """Called after every optimizer step (``step`` counts from 1 over the whole run)."""

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        """Called after each epoch, before evaluation."""


@dataclass
class TrainResult:
    """What a training phase ended with."""

    status: str  # "ok" or "nc" (loss became NaN/inf)
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    steps_per_epoch: int = 0  # optimizer steps each epoch ran: the cap, or fewer when the loader is shorter


class Diverged(Exception):
    """Raised inside the loop when the loss stops being finite."""


def train(
    model: nn.Module,
    train_loader: Any,
    test_loader: Any,
    recipe: TrainRecipe,
    *,
    hooks: TrainHooks | None = None,
    metrics: MetricsWriter | None = None,
    phase: str = "train",
    max_train_batches: int | None = None,
    max_eval_batches: int | None = None,
    progress: bool = True,
    resume: dict[str, Any] | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 0,
) -> TrainResult:
    """Train ``model`` in place with SGD, warm-up + cosine and label smoothing; evaluate after every epoch.

    ``resume`` is a state dict previously given to ``save_state`` (called after each epoch), so an interrupted
    phase continues where it stopped with the same result. A non-finite loss ends the phase with status ``nc``.
    ``log_every > 0`` writes the running training loss / top-1 of the last ``log_every`` steps to ``metrics`` (the
    training curve within an epoch).

    Under torch.distributed (:mod:`bench.engine.distributed`) the step runs through DDP on this rank's slice of every
    batch, statistics are summed over ranks, and only rank 0 writes metrics and ``save_state``; on one process
    (always on CPU unless several are launched) nothing changes.
    """
    dist = distributed.current()
    hooks = hooks or TrainHooks()
    metrics = metrics if dist.is_main else None
    metrics = metrics or MetricsWriter(None)
    optimizer = build_optimizer(
        model,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        bn_weight_decay=recipe.bn_weight_decay,
        extra_groups=hooks.param_groups(model),
    )
    train_loader = dist.shard(train_loader, drop_last=True)
    n_batches = len(train_loader) if isinstance(train_loader, Sized) else 0
    steps_per_epoch = min(n_batches, max_train_batches) if max_train_batches else n_batches
    total = max(1, steps_per_epoch * recipe.epochs)
    warmup = min(total, round(recipe.warmup_epochs * steps_per_epoch))
    scheduler = warmup_cosine(optimizer, total, warmup, recipe.min_lr / recipe.lr)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        history = list(resume["history"])
        start_epoch = int(resume["epoch"])
        log.info("%s: resuming after epoch %d", phase, start_epoch)
    step = start_epoch * steps_per_epoch
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    net = dist.wrap(model)  # after resume: DDP broadcasts rank 0's parameters when it wraps
    device = _device_of(model)

    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        win_loss, win_correct, win_seen = 0.0, 0, 0
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"{phase} {epoch + 1}/{recipe.epochs}",
            disable=not (progress and dist.is_main) or None,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(train_loader):
            if i >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = net(x)
            loss = criterion(logits, y)
            if not dist.all_true(bool(torch.isfinite(loss))):  # every rank leaves together
                bar.close()
                reason = f"non-finite loss {loss.item()} at epoch {epoch + 1}, step {i + 1}"
                log.warning("%s diverged: %s", phase, reason)
                metrics.write({"phase": phase, "epoch": epoch + 1, "step": step, "status": "nc", "reason": reason})
                return TrainResult("nc", epoch, history, reason, steps_per_epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            hooks.on_step(step, model)
            batch_loss, batch_correct = loss.item() * y.numel(), (logits.argmax(1) == y).sum().item()
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + y.numel()
            win_loss, win_correct, win_seen = win_loss + batch_loss, win_correct + batch_correct, win_seen + y.numel()
            if log_every and step % log_every == 0:
                win_loss, win_correct, win_seen = dist.sum([win_loss, win_correct, win_seen])
                metrics.write({
                    "phase": phase, "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": win_loss / win_seen, "train_top1": 100.0 * win_correct / win_seen,
                })
                win_loss, win_correct, win_seen = 0.0, 0, 0
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        dist.sync_buffers(model)  # BN statistics / observers of rank 0, so every rank evaluates the same model
        hooks.on_epoch_end(epoch + 1, model)
        loss_sum, correct, seen = dist.sum([loss_sum, correct, seen])
        train_s = time.perf_counter() - t0
        ev = evaluate(model, test_loader, max_eval_batches)
        row = {
            "phase": phase,
            "epoch": epoch + 1,
            "step": step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_top1": 100.0 * correct / max(seen, 1),
            "test_loss": ev["loss"],
            "test_top1": ev["top1"],
            "test_top5": ev["top5"],
            "epoch_s": train_s,
        }
        if not math.isfinite(ev["loss"]) and ev["n"] > 0:
            reason = f"non-finite test loss after epoch {epoch + 1}"
            metrics.write({**row, "status": "nc", "reason": reason})
            return TrainResult("nc", epoch + 1, history + [row], reason, steps_per_epoch)
        history.append(row)
        metrics.write(row)
        log.info(
            "%s epoch %d/%d: loss %.4f train %.2f%% test %.2f%% (%.1f s)",
            phase, epoch + 1, recipe.epochs, row["train_loss"], row["train_top1"], ev["top1"], train_s,
        )
        if save_state is not None and dist.is_main:
            save_state(
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": list(history),
                }
            )
    return TrainResult("ok", recipe.epochs, history, steps_per_epoch=steps_per_epoch)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
