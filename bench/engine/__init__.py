"""The unified train / evaluate loops shared by every cell."""

from bench.engine.evaluate import evaluate
from bench.engine.loop import Diverged, TrainHooks, TrainRecipe, TrainResult, train
from bench.engine.optim import build_optimizer
from bench.engine.schedule import warmup_cosine

__all__ = [
    "Diverged",
    "TrainHooks",
    "TrainRecipe",
    "TrainResult",
    "build_optimizer",
    "evaluate",
    "train",
    "warmup_cosine",
]
