"""QDrop's keep-in-full-precision masks from a counter-based generator (``algo.params.mask_rng=splitmix``).

QDrop keeps each activation element in full precision with probability ``p`` during reconstruction. Its reference
code draws the masks as ``torch.rand_like(x) < p`` (``mask_rng=torch``, the default): on the CPU torch fills that
tensor serially from one Mersenne Twister, which costs more than the block's convolutions at QDrop's batch sizes
(``benchmarks/recon_speed.py``). Here element ``i`` of a mask is kept when the ``i``-th output of SplitMix64
(Steele, Lea & Flood 2014; Java's ``SplittableRandom``) seeded with a 64-bit ``key`` has its top 53 bits, read as a
fraction of ``2**53``, below ``p``. Each element is a pure function of ``(key, i)``, so the mask is computed in
parallel, fused with the selection it drives, and recomputed in backward instead of stored. One key is drawn per
mask from torch's generator (the seeded one of the loop, or the global one), so runs stay reproducible from the seed.

Other random numbers than ``torch.rand``: the same distribution, other masks, so other reconstruction results (a
different ``config_hash``). The kernels live in :mod:`bench.quant.fused_lsq`'s C++ extension; where it cannot be
built, a NumPy implementation computes the same masks (slower).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from bench.quant import fused_lsq

log = logging.getLogger(__name__)

MASK_RNGS = ("torch", "splitmix")  # algo.params.mask_rng of QDrop
GAMMA, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # SplitMix64's constants

_ext: Any = None
_no_ext = False  # the build failed once: NumPy for the rest of the process


def threshold(p: float) -> int:
    """The integer ``t`` with ``(z >> 11) < t`` exactly when ``(z >> 11) / 2**53 < p`` (``p * 2**53`` is exact)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability {p} must be in [0, 1]")
    return math.ceil(p * 2.0**53)


def draw_key(generator: torch.Generator | None = None) -> int:
    """A 64-bit key (as a signed int64) drawn from ``generator`` (torch's global CPU generator when None)."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=generator))


def _kernels() -> Any:
    global _ext, _no_ext
    if _ext is None and not _no_ext:
        try:
            _ext = fused_lsq.extension()
        except Exception as e:  # no compiler: NumPy computes the same masks
            log.warning("QDrop mask kernels unavailable (%s); NumPy masks, the same values", type(e).__name__)
            _no_ext = True
    return _ext


def mask_numpy(n: int, key: int, p: float) -> np.ndarray:
    """The keep mask of ``n`` elements in NumPy (uint64 arithmetic wraps modulo ``2**64``, as SplitMix64 needs)."""
    t = np.uint64(threshold(p))
    with np.errstate(over="ignore"):
        z = np.uint64(key % 2**64) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GAMMA))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)) < t


def keep_mask(shape: torch.Size | tuple[int, ...], key: int, p: float) -> torch.Tensor:
    """The bool keep mask of a tensor of ``shape`` (row-major element order), on the CPU."""
    n = math.prod(shape)
    ext = _kernels()
    if ext is not None:
        return ext.mask(n, key, threshold(p)).reshape(shape)
    return torch.from_numpy(mask_numpy(n, key, p)).reshape(shape)


def _fast(*ts: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in ts) and (
        _kernels() is not None
    )


def select(a: torch.Tensor, b: torch.Tensor, key: int, p: float) -> torch.Tensor:
    """``torch.where(keep, a, b)`` with the keep mask of ``(key, p)``, without gradients (the inputs of a unit)."""
    if a.shape != b.shape:
        raise ValueError(f"drop select: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    if _fast(a, b):
        return _kernels().select(a, b, key, threshold(p))
    return torch.where(keep_mask(a.shape, key, p).to(a.device), a, b)


class _Select(torch.autograd.Function):
    """``torch.where(keep, a, b)`` and its gradients ``(keep ? g : 0, keep ? 0 : g)``, bit for bit what autograd gives
    for ``torch.where``; with the C++ kernels one pass each way, the mask recomputed from the key, never stored."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, key: int, p: float) -> torch.Tensor:  # type: ignore[override]
        ctx.meta = (key, p)
        return select(a, b, key, p)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        key, p = ctx.meta
        if _fast(grad):
            ga, gb = _kernels().split(grad, key, threshold(p))
        else:
            keep = keep_mask(grad.shape, key, p).to(grad.device)
            zero = torch.zeros_like(grad)
            ga, gb = torch.where(keep, grad, zero), torch.where(keep, zero, grad)
        return ga, gb, None, None


def drop(x: torch.Tensor, q: torch.Tensor, key: int, p: float) -> torch.Tensor:
    """QDrop's output of an activation quantizer: ``x`` where kept (probability ``p``), its quantized ``q`` elsewhere,
    differentiable in both."""
    if x.shape != q.shape:
        raise ValueError(f"drop: shapes {tuple(x.shape)} and {tuple(q.shape)} differ")
    return _Select.apply(x, q, key, p)
