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

The default torch masks get a fused route too (:func:`rand_where`, with ``fused=true``): the C++ extension draws
torch's own uniform numbers from torch's generator (the same Mersenne Twister outputs in the same order, so the same
masks and the same generator state after) and selects in the same call; backward is one pass from the stored mask.
Probed against ``torch.rand`` and autograd's ``where`` on first use, like the other fused kernels.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

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
    @once_differentiable  # a first-order step, as the other fused nodes: a double backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        key, p = ctx.meta
        if _fast(grad):
            ga, gb = _kernels().split(grad, key, threshold(p))
        else:
            keep = keep_mask(grad.shape, key, p).to(grad.device)
            zero = torch.zeros_like(grad)
            ga, gb = torch.where(keep, grad, zero), torch.where(keep, zero, grad)
        return ga, gb, None, None


class _RandSelect(torch.autograd.Function):
    """``torch.where(torch.rand(a.shape, generator=generator) < p, a, b)`` in one C++ call, the mask saved as
    autograd's ``where`` saves it; backward ``(keep ? g : 0, keep ? 0 : g)`` in one pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, a: torch.Tensor, b: torch.Tensor, p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        out, keep = fused_lsq.extension().rand_select(a, b, p, generator)
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    @once_differentiable  # as the other fused nodes: a first-order reconstruction step
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        if grad.is_contiguous():
            ga, gb = fused_lsq.extension().keep_split(grad, keep)
        else:  # autograd's where backward, whose outputs follow the gradient's layout
            zero = torch.zeros((), dtype=grad.dtype)
            ga, gb = torch.where(keep, grad, zero), torch.where(keep, zero, grad)
        return ga, gb, None, None


def _eager_rand_where(a: torch.Tensor, b: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    # QDrop's reference form (recon.py's eager route)
    return torch.where(torch.rand(a.shape, generator=generator) < p, a, b)


def _probe_rand() -> bool:
    """:class:`_RandSelect` against :func:`_eager_rand_where` from the same generator state, on the global generator
    (its state saved and restored) and a seeded one: the output, both gradients (a contiguous gradient and one that is
    not) and the generator's state after; sizes under and over a thread's share, p of 0.5, 0.3, 0 and 1."""
    saved = torch.get_rng_state()
    try:
        data = torch.Generator().manual_seed(5)
        for n, p in ((7, 0.5), (40001, 0.3), (1000, 0.0), (1000, 1.0)):
            a, b = torch.randn(n, 2, generator=data), torch.randn(n, 2, generator=data)
            for grad in (torch.randn(n, 2, generator=data), torch.randn(2, n, generator=data).t()):
                for seeded in (False, True):
                    gens = [torch.Generator().manual_seed(9) if seeded else None for _ in range(2)]
                    start = torch.get_rng_state()
                    outs, states = [], []
                    for fn, gen in ((_eager_rand_where, gens[0]), (_RandSelect.apply, gens[1])):
                        torch.set_rng_state(start)
                        outs.append(fused_lsq.outputs_and_grads(fn, [a.requires_grad_(True), b.requires_grad_(True)],
                                                                (p, gen), grad, plain=False))
                        states.append(gen.get_state() if seeded else torch.get_rng_state())
                    if not (all(fused_lsq.same_bits(x, y) for x, y in zip(*outs, strict=True))
                            and torch.equal(states[0], states[1])):
                        return False
        return True
    finally:
        torch.set_rng_state(saved)


def rand_where(a: torch.Tensor, b: torch.Tensor, p: float,
               generator: torch.Generator | None = None) -> torch.Tensor | None:
    """``torch.where(torch.rand(a.shape, generator=generator) < p, a, b)`` (QDrop's torch masks; the global generator
    when None), differentiable in ``a`` and ``b``, from the fused kernels: the same draws from the same generator, the
    same numbers; None where they are off or do not apply (not contiguous float32 CPU tensors of one shape): the
    caller's eager ops then."""
    if not (fused_lsq.usable(a) and fused_lsq.usable(b) and a.shape == b.shape and a.is_contiguous()
            and b.is_contiguous()):
        return None
    if generator is not None and generator.device.type != "cpu":
        return None
    if not fused_lsq.probed(("rand_select",), _probe_rand):
        return None
    return _RandSelect.apply(a, b, p, generator)


def drop(x: torch.Tensor, q: torch.Tensor, key: int, p: float) -> torch.Tensor:
    """QDrop's output of an activation quantizer: ``x`` where kept (probability ``p``), its quantized ``q`` elsewhere,
    differentiable in both."""
    if x.shape != q.shape:
        raise ValueError(f"drop: shapes {tuple(x.shape)} and {tuple(q.shape)} differ")
    return _Select.apply(x, q, key, p)
