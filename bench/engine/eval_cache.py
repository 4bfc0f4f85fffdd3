"""FP32 test evaluations remembered across cells.

Every quantized cell reports the top-1 of the FP32 model it starts from. That model is the same weights (by sha256)
for every cell of an arch, so evaluating it in each of a sweep's cells repeats the same computation: the first cell
stores the result under the cache directory, keyed by everything the numbers can depend on (the weights' sha256, the
arch, the data fingerprint, the evaluation's batch size and batch limit, torch's version, the thread count, the
device and this machine's CPU), and the others read it back. A missing or unreadable entry is computed again.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.engine import distributed
from bench.engine.evaluate import evaluate
from bench.results import write_atomic


@lru_cache(maxsize=1)
def machine() -> str:
    """This machine's CPU model (float arithmetic may differ between CPUs), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def eval_key(weights_sha256: str, context: dict[str, Any], device: torch.device | str) -> str:
    """The cache key of an evaluation of these weights in this ``context`` (arch, data, batch settings...)."""
    data = {"weights": weights_sha256, **context, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device), "machine": machine()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


def evaluate_cached(model: nn.Module, loader: Iterable, max_batches: int | None, *, weights_sha256: str | None,
                    context: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
    """:func:`evaluate`, or its stored result for the same weights, data and settings on this machine (with
    ``cached: true``); weights without a sha256 and distributed runs are always evaluated."""
    dist = distributed.current()
    if not weights_sha256 or dist.world_size > 1:
        return evaluate(model, loader, max_batches)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    path = Path(cache_dir) / f"{eval_key(weights_sha256, {**context, 'max_batches': max_batches}, device)}.json"
    try:
        stored = json.loads(path.read_text())
        if {"top1", "top5", "n"} <= set(stored):
            return {**stored, "cached": True}
    except (OSError, ValueError):
        pass
    ev = evaluate(model, loader, max_batches)
    text = json.dumps(ev)
    try:
        write_atomic(path, lambda tmp: tmp.write_text(text))
    except OSError:  # a read-only cache costs only the time saved
        pass
    return ev
