"""Learning-rate schedule of the unified pipeline: linear warm-up then cosine decay (MQBench Sec. 2.1)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> float:
    """Multiplier of the base lr at ``step`` (0-based, applied to the step about to run)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> LambdaLR:
    """A per-step scheduler: ``warmup_steps`` of linear warm-up, then cosine to ``min_factor`` at ``total_steps``."""
    return LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, total_steps, warmup_steps, min_factor))
