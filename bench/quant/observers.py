"""Calibration observers: statistics of one tensor over calibration batches -> scale / zero point (MQBench App. C).

Every observer views its input as rows ``(C, N)``: one row per tensor, or one per channel along ``spec.ch_axis``
for per-channel specs, so that all statistics are vectorised over channels. Each method picks a clipping range and
turns it into qparams with :func:`~bench.quant.fake.qparams_from_range`, so symmetric / asymmetric / power-of-two /
narrow-range grids are handled in one place; MSE scores its candidate ranges through that same function and the
real fake-quantization op, so its search sees the grid actually used (power-of-two snapping included).

Methods (DESIGN.md Sec. 8): ``minmax``, ``mse``, ``kld`` (TensorRT entropy calibration), ``quantile``, ``norm``
(the LSQ initialisation), ``meanstd``, ``bn`` (``beta +- 6 gamma``, white paper Sec. 3.1) and ``batch_minmax``
(DSQ's activation range: an EMA of the batch-averaged per-sample min / max, MQBench App. F).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from bench.errors import BenchError
from bench.quant.fake import fake_quantize, pot_scale, qparams_from_range
from bench.quant.spec import QuantSpec
from bench.registry import Registry

OBSERVERS: Registry[type[Observer]] = Registry("calibration method")

_SAMPLE_OPTIONS: dict[str, Any] = {"max_samples": 2**20, "seed": 0}
_O = TypeVar("_O", bound="type[Observer]")


def _register(name: str, *, label: str, order: int, weights: bool = True) -> Callable[[_O], _O]:
    """Register an observer class under ``name`` (the ``calib.*`` value) with its display ``label``, table ``order``
    and whether it can calibrate weights (``calib.weight``; every one calibrates activations), and record the name on
    the class (for messages)."""

    def deco(cls: _O) -> _O:
        cls.name = name
        OBSERVERS.register(name, label=label, order=order, weights=weights)(cls)
        return cls

    return deco


class Observer:
    """Accumulates statistics of one tensor over calibration batches, then computes qparams for its spec.

    ``update`` may be called many times (activation batches) or once (weights); ``compute`` returns
    ``(scale float32, zero_point int32)`` of shape ``(1,)`` per tensor or ``(C,)`` per channel. Options are checked
    against the class's ``OPTIONS`` (name -> default); an unknown one is a one-line :class:`BenchError`.
    """

    name: ClassVar[str] = "observer"
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            accepted = ", ".join(sorted(self.OPTIONS)) or "none"
            raise BenchError(f"unknown option(s) {', '.join(unknown)} for calib {self.name}; accepted: {accepted}")
        self.spec = spec
        self.options: dict[str, Any] = {**self.OPTIONS, **options}
        self.min_val: torch.Tensor | None = None  # running per-row min / max of the raw data, shape (C,)
        self.max_val: torch.Tensor | None = None
        self._range: tuple[torch.Tensor, torch.Tensor] | None = None
        # pot_snap=mse: a sample of the data to choose between the two powers of two around a scale
        self._pot_sample = _ColumnSample(POT_SAMPLES, 0) if spec.pot_scale and spec.pot_snap == "mse" else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.describe()}, {self.options})"

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(C, N)`` float rows: channels along ``spec.ch_axis`` first, or a single row."""
        x = x.detach().float()
        if self.spec.per_channel:
            x = x.movedim(self.spec.ch_axis, 0)
            return x.reshape(x.shape[0], -1)
        return x.reshape(1, -1)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Accumulate the statistics of one batch (or of the weight tensor)."""
        if x.numel() == 0:
            return
        rows = self._rows(x)
        lo, hi = torch.aminmax(rows, dim=1)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            if lo.shape != self.min_val.shape:
                raise ValueError(f"calib {self.name}: {lo.numel()} channels after {self.min_val.numel()}")
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)
        if self._pot_sample is not None:
            self._pot_sample.add(rows)
        self._accumulate(rows)

    def _accumulate(self, rows: torch.Tensor) -> None:
        """Method-specific statistics of one batch's rows (the running min / max are kept by ``update``)."""

    def _observed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Running (min, max) per row; a clear error when nothing was observed."""
        if self.min_val is None or self.max_val is None:
            raise RuntimeError(f"calib {self.name}: compute() called before any update(); run calibration data first")
        return self.min_val, self.max_val

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The method's clipping range (min, max), each of shape (C,)."""
        raise NotImplementedError

    def _signed_min(self) -> torch.Tensor | None:
        """The minimum that decides adaptive signedness (the observed one; BN ranges override it)."""
        return self.min_val

    @property
    def signed(self) -> bool:
        """Resolved signedness: ``spec.signed``, or for adaptive specs whether anything negative was observed.

        Before any data an adaptive spec reads as signed (the quantizer's own default).
        """
        if self.spec.signed is not None:
            return self.spec.signed
        lo = self._signed_min()
        return True if lo is None else bool((lo < 0).any())

    @property
    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipping range (min, max) chosen by the last ``compute()`` (before widening to contain 0)."""
        if self._range is None:
            raise RuntimeError(f"calib {self.name}: range is known only after compute()")
        return self._range

    @torch.no_grad()
    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (float32) and zero point (int32) for the spec, from the statistics seen so far. On power-of-two grids
        with ``pot_snap=mse`` the scale is the power of two below or above (``round`` / ``ceil`` of ``log2``) with the
        smaller quantization error on the observed data, per row."""
        lo, hi = self._clip_range()
        self._range = (lo.float(), hi.float())
        if self._pot_sample is None or self._pot_sample.data is None:
            return qparams_from_range(self._range[0], self._range[1], self.spec, self.signed)
        return best_pot_qparams(self._pot_sample.data, self._range[0], self._range[1], self.spec, self.signed)


POT_SAMPLES = 2**18  # values kept to choose between two powers of two (pot_snap=mse)


def quant_error(rows: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec, signed: bool,
                p: float = 2.0) -> torch.Tensor:
    """Per row of ``rows`` (C, N): the sum of ``|fake_quantize(x) - x|^p`` on the spec's grid with these qparams."""
    qmin, qmax = spec.qrange(signed)
    ch_axis = 0 if scale.numel() > 1 else None
    q = fake_quantize(rows, scale, zero_point, qmin, qmax, ch_axis, spec.rounding)
    return q.sub_(rows).abs_().pow_(p).sum(dim=1)


def best_pot_qparams(rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec, signed: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``pot_snap=mse``: the qparams of range ``[lo, hi]`` with the scale snapped down (``round``) or up (``ceil``)
    to a power of two, whichever quantizes ``rows`` with the smaller squared error (per row; ties keep ``ceil``)."""
    s_up, z_up = qparams_from_range(lo, hi, spec, signed, snap="ceil")
    s_rd, z_rd = qparams_from_range(lo, hi, spec, signed, snap="round")
    if rows.shape[0] != s_up.numel():  # per-tensor qparams over one row of samples
        rows = rows.reshape(1, -1)
    better = quant_error(rows, s_rd, z_rd, spec, signed) < quant_error(rows, s_up, z_up, spec, signed)
    return torch.where(better, s_rd, s_up), torch.where(better, z_rd, z_up)


def tensor_rows(x: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    """``x`` as ``(C, N)`` float rows: one per channel along ``ch_axis``, or a single row."""
    x = x.detach().float()
    if ch_axis is None:
        return x.reshape(1, -1)
    x = x.movedim(ch_axis, 0)
    return x.reshape(x.shape[0], -1)


def range_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec, signed: bool, data: torch.Tensor,
                  ch_axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`qparams_from_range` for quantizers that see their tensor (rule-based weight ranges): on power-of-two
    grids with ``pot_snap=mse`` the snap is chosen on ``data`` (:func:`best_pot_qparams`)."""
    if spec.pot_scale and spec.pot_snap == "mse":
        return best_pot_qparams(tensor_rows(data, ch_axis), lo.reshape(-1), hi.reshape(-1), spec, signed)
    return qparams_from_range(lo, hi, spec, signed)


def snap_scale(scale: torch.Tensor, spec: QuantSpec, signed: bool, data: torch.Tensor, ch_axis: int | None
               ) -> torch.Tensor:
    """A symmetric scale (zero point 0) snapped to a power of two with the spec's ``pot_snap`` (``mse``: the power of
    two below or above with the smaller quantization error on ``data``, per row)."""
    if spec.pot_snap != "mse":
        return pot_scale(scale, spec.pot_snap)
    up, rd = pot_scale(scale, "ceil").reshape(-1), pot_scale(scale, "round").reshape(-1)
    z = torch.zeros_like(up, dtype=torch.int32)
    rows = tensor_rows(data, ch_axis)
    better = quant_error(rows, rd, z, spec, signed) < quant_error(rows, up, z, spec, signed)
    return torch.where(better, rd, up).reshape(scale.shape)


def build_observer(name: str, spec: QuantSpec, **options: Any) -> Observer:
    """The observer registered as ``name`` for ``spec``; an unknown name is a one-line ``RegistryError``."""
    return OBSERVERS.get(name)(spec, **options)


class _ColumnSample:
    """A uniform random sample, without replacement, of up to ``cap`` columns of a stream of ``(C, N)`` rows.

    Bottom-k sampling: every column gets a seeded random key and the ``cap`` smallest keys are kept. That is a uniform
    sample of everything seen whatever the batch sizes, deterministic for a seed, and all the data (in order) while
    under the cap.
    """

    def __init__(self, cap: int, seed: int) -> None:
        if cap < 1:
            raise BenchError(f"calib max_samples must be >= 1, got {cap}")
        self.cap, self.seed = int(cap), int(seed)
        self.data: torch.Tensor | None = None
        self._keys: torch.Tensor | None = None
        self._gen: torch.Generator | None = None

    def add(self, rows: torch.Tensor) -> None:
        """Offer the columns of ``rows`` to the sample."""
        if self._gen is None:
            self._gen = torch.Generator(device=rows.device)
            self._gen.manual_seed(self.seed)
        keys = torch.rand(rows.shape[1], generator=self._gen, device=rows.device)
        if self._keys is not None and self._keys.numel() >= self.cap:
            new = keys < self._keys.max()  # only columns that can enter a full sample
            keys, rows = keys[new], rows[:, new]
        if self._keys is None or self.data is None:
            # clone: the caller's tensor may be modified in place later (inplace ReLU after the quantizer)
            self._keys, self.data = keys, rows.clone()
        else:
            self._keys, self.data = torch.cat([self._keys, keys]), torch.cat([self.data, rows], dim=1)
        if self._keys.numel() > self.cap:
            keep = torch.topk(self._keys, self.cap, largest=False).indices
            self._keys, self.data = self._keys[keep], self.data[:, keep]


class _SampledObserver(Observer):
    """Keeps a bounded seeded sample of the values: up to ``max_samples`` per tensor, or per channel (the whole
    weight tensor in practice)."""

    OPTIONS: ClassVar[dict[str, Any]] = dict(_SAMPLE_OPTIONS)

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._sample = _ColumnSample(self.options["max_samples"], self.options["seed"])

    def _accumulate(self, rows: torch.Tensor) -> None:
        self._sample.add(rows)

    def _samples(self) -> torch.Tensor:
        """The sampled rows ``(C, M)``."""
        self._observed()
        assert self._sample.data is not None
        return self._sample.data


def _clip_sym(min_val: torch.Tensor, max_val: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The observed range clipped to ``[-t, t]`` (what a threshold on ``|x|`` means for any grid)."""
    return torch.maximum(min_val, -t), torch.minimum(max_val, t)


@_register("minmax", label="MinMax", order=10)
class MinMaxObserver(Observer):
    """Running min / max over all batches: no clipping error."""

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._observed()


@_register("mse", label="MSE", order=20)
class MSEObserver(_SampledObserver):
    """Grid search of the clip range ``(f * min, f * max)``, ``f = i / steps`` for ``i = 1..steps``, minimising the
    Lp reconstruction error (``p = 2.4``) of real fake quantization on the (sampled) values.

    Ties keep the wider range, so the result is never worse than min-max (``f = 1``) on the sample. The sample is
    smaller by default (2^18 values) since it is fake-quantized ``steps`` times.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {**_SAMPLE_OPTIONS, "max_samples": 2**18, "p": 2.4, "steps": 100}

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        min_val, max_val = self._observed()
        data = self._samples()
        signed = self.signed
        qmin, qmax = self.spec.qrange(signed)
        ch_axis = 0 if self.spec.per_channel else None
        p, steps = float(self.options["p"]), int(self.options["steps"])
        best_err = torch.full(min_val.shape, math.inf, device=min_val.device)
        best_lo, best_hi = min_val.clone(), max_val.clone()
        # pot_snap=mse: every candidate range is scored with both neighbouring powers of two
        snaps = ("ceil", "round") if self.spec.pot_scale and self.spec.pot_snap == "mse" else (None,)
        for i in range(steps, 0, -1):  # widest first: strict improvement below keeps the wider range on ties
            lo, hi = min_val * (i / steps), max_val * (i / steps)
            for snap in snaps:
                scale, zero_point = qparams_from_range(lo, hi, self.spec, signed, snap=snap)
                diff = fake_quantize(data, scale, zero_point, qmin, qmax, ch_axis, self.spec.rounding)
                err = diff.sub_(data).abs_().pow_(p).sum(dim=1)
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
        return best_lo, best_hi


def _kl_per_threshold(hist: torch.Tensor, levels: int) -> torch.Tensor:
    """KL(P || Q) of TensorRT's entropy calibration for every candidate ``i = levels..B`` of every row of ``hist``.

    ``P = hist[:i]`` with the outliers ``sum(hist[i:])`` added to its last bin. ``Q`` is ``hist[:i]`` (without the
    outliers, as in TensorRT, so clipping is penalised) merged into ``levels`` groups (bin ``b`` goes to group
    ``floor(b * levels / i)``) and expanded back evenly over the group's bins where ``P`` is non-zero; both are
    normalised. With ``N = sum P``, ``M = sum Q``, group sums ``S_g`` of ``hist`` and ``T_g`` of ``P`` and ``n_g``
    non-empty bins: ``N * KL = sum_b P_b log P_b + sum_g T_g (log n_g - log S_g) + N log(M / N)``, evaluated for all
    candidates at once with prefix sums (``inf`` where ``Q`` is 0 but ``P`` is not). Returns ``(rows, B - levels + 1)``.
    """
    rows, nbins = hist.shape
    dev = hist.device
    cand = torch.arange(levels, nbins + 1, device=dev)  # bins kept
    zero = hist.new_zeros(rows, 1)
    cs = torch.cat([zero, hist.cumsum(1)], 1)  # cs[:, b] = sum(hist[:, :b])
    nz = torch.cat([zero, (hist > 0).to(hist.dtype).cumsum(1)], 1)
    hl = torch.cat([zero, torch.xlogy(hist, hist).cumsum(1)], 1)
    total = cs[:, -1:]
    kept = cs[:, cand]  # M, shape (rows, K)
    out = total - kept  # outliers
    last_h = hist[:, cand - 1]
    last = last_h + out
    p_log_p = hl[:, cand - 1] + torch.xlogy(last, last)
    g = torch.arange(levels + 1, device=dev)
    edges = (g[None, :] * cand[:, None] + levels - 1) // levels  # ceil(g * i / levels): group starts, (K, L+1)
    shape = (rows, cand.numel(), levels + 1)
    s = cs[:, edges.reshape(-1)].reshape(shape).diff(dim=2)  # group sums of hist, (rows, K, L)
    n = nz[:, edges.reshape(-1)].reshape(shape).diff(dim=2)  # non-empty bins per group
    # all groups but the last are the same in P and hist; xlogy makes empty groups 0 and S = 0 < T groups +inf
    groups = (torch.xlogy(s[..., :-1], n[..., :-1]) - torch.xlogy(s[..., :-1], s[..., :-1])).sum(-1)
    s_last = s[..., -1]
    t_last = s_last + out
    n_last = n[..., -1] + ((last_h == 0) & (out > 0)).to(n.dtype)  # the last bin became non-empty with outliers
    groups += torch.xlogy(t_last, n_last) - torch.xlogy(t_last, s_last)
    kl = (p_log_p + groups) / total + (kept / total).log()
    return torch.where(kept > 0, kl, torch.full_like(kl, math.inf)).nan_to_num(nan=math.inf, posinf=math.inf)


@_register("kld", label="KLD", order=30)
class KLDObserver(Observer):
    """TensorRT entropy calibration: a ``bins``-bin histogram of ``|x|`` (per tensor or per channel), threshold
    ``T = (i + 0.5) * bin_width`` for the ``i`` minimising KL(P || Q) (:func:`_kl_per_threshold`), capped at the
    observed ``max |x|``.

    The histogram of ``|x|`` serves every grid: for non-negative data it is the histogram of ``x`` from 0; the clip
    range is the observed range cut at ``[-T, T]``. ``Q`` has ``2^(bits-1)`` levels on a signed grid, ``2^bits`` on
    an unsigned one (at most ``bins``). When a batch exceeds the histogram's range, the range grows by an integer
    factor ``k`` and old bins merge ``k`` at a time (exact re-binning, at the cost of coarser bins).

    ``flatten_zero_bin`` (default on) replaces the count of the first bin by the second's before the search, as
    NVIDIA's TensorRT calibrator for PyTorch does: after ReLU half the values are exact zeros, and that spike
    otherwise dominates P and pulls the threshold far down (a half-normal at uint8 was clipped at 2.2 sigma of 4.7).
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"bins": 2048, "flatten_zero_bin": True}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self.bins = int(self.options["bins"])
        if self.bins < 2:
            raise BenchError(f"calib kld needs at least 2 bins, got {self.bins}")
        self._hist: torch.Tensor | None = None  # (C, bins) float64 counts
        self._hmax: torch.Tensor | None = None  # (C,) upper edge of the histogram

    def _accumulate(self, rows: torch.Tensor) -> None:
        a = rows.abs()
        amax = a.amax(dim=1)
        nbins = self.bins
        if self._hist is None or self._hmax is None:
            self._hist = torch.zeros(a.shape[0], nbins, dtype=torch.float64, device=a.device)
            self._hmax = torch.zeros_like(amax)
        grow = (amax > self._hmax) & (self._hmax > 0)
        if bool(grow.any()):
            k = torch.where(grow, torch.ceil(amax / self._hmax), torch.ones_like(amax))
            # exact re-binning: old bin j lands in new bin j // k
            idx = torch.arange(nbins, device=a.device)[None, :] // k.clamp_max(nbins).long()[:, None]
            self._hist = torch.zeros_like(self._hist).scatter_add_(1, idx, self._hist)
            self._hmax = self._hmax * k
        # the first non-zero batch fixes the range (an all-zero history sits in bin 0, valid for any range)
        self._hmax = torch.where(self._hmax > 0, self._hmax, amax)
        inv = torch.where(self._hmax > 0, nbins / self._hmax, torch.zeros_like(self._hmax))
        idx = torch.floor(a * inv[:, None]).long().clamp_(0, nbins - 1)
        offsets = torch.arange(a.shape[0], device=a.device)[:, None] * nbins
        counts = torch.bincount((idx + offsets).reshape(-1), minlength=a.shape[0] * nbins)
        self._hist += counts.reshape(a.shape[0], nbins).to(torch.float64)

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        min_val, max_val = self._observed()
        assert self._hist is not None and self._hmax is not None
        levels = 2 ** (self.spec.bits - 1) if self.signed else 2**self.spec.bits
        levels = max(1, min(levels, self.bins))
        # rows per pass: bounds the (rows, candidates, levels) temporaries to a few 2^22-element tensors
        chunk = max(1, 2**22 // ((self.bins - levels + 1) * (levels + 1)))
        hist = self._hist
        if self.options["flatten_zero_bin"] and self.bins > 1:
            hist = hist.clone()
            hist[:, 0] = hist[:, 1]
        best = torch.cat([_kl_per_threshold(h, levels).argmin(dim=1) for h in hist.split(chunk)]) + levels
        width = self._hmax / self.bins
        amax = torch.maximum(min_val.abs(), max_val.abs())
        t = torch.minimum((best.to(width.dtype) + 0.5) * width, amax)
        return _clip_sym(min_val, max_val, t)


def _quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``q`` quantile with linear interpolation, bit-exact with ``torch.quantile`` (float32 ``q``, rank in
    double), but via ``kthvalue`` so that it has no input-size limit."""
    n = rows.shape[1]
    rank = float(torch.tensor(q, dtype=torch.float32)) * (n - 1)
    below, above = math.floor(rank), math.ceil(rank)
    v_below = rows.kthvalue(below + 1, dim=1).values
    v_above = v_below if above == below else rows.kthvalue(above + 1, dim=1).values
    weight = torch.tensor(rank - below, dtype=torch.float32, device=rows.device)
    return torch.lerp(v_below, v_above, weight)


@_register("quantile", label="Quantile", order=40)
class QuantileObserver(_SampledObserver):
    """Clip at the ``q`` quantile (0.9999) of the (sampled) values: of ``|x|`` for symmetric specs, the ``1 - q``
    and ``q`` quantiles of ``x`` for asymmetric ones."""

    OPTIONS: ClassVar[dict[str, Any]] = {**_SAMPLE_OPTIONS, "q": 0.9999}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        q = float(self.options["q"])
        if not 0.0 <= q <= 1.0:
            raise BenchError(f"calib quantile q must be in [0, 1], got {q}")
        self.q = max(q, 1.0 - q)

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        min_val, max_val = self._observed()
        data = self._samples()
        if self.spec.symmetric:
            return _clip_sym(min_val, max_val, _quantile(data.abs(), self.q))
        return _quantile(data, 1.0 - self.q), _quantile(data, self.q)


@_register("norm", label="Norm", order=50)
class NormObserver(Observer):
    """The LSQ initialisation ``s = 2 mean(|x|) / sqrt(Qp)`` (``Qp`` = qmax of the resolved grid), as a range.

    Symmetric: ``[-s Qp, s Qp]`` (``[0, s Qp]`` unsigned). Asymmetric: a span ``S = s (qmax - qmin)`` placed at
    ``lo = clamp(mid - S/2, min(min x, 0), 0)``, ``hi = lo + S`` with ``mid`` the centre of the observed range: a span
    wider than the data starts at the data's minimum (LSQ+'s zero point at ``qmin`` for non-negative data), a
    narrower one clips both tails evenly and keeps 0 inside. (Anchoring the span at the minimum instead put weights
    of SNPE's uint8 grid entirely below zero: every positive weight clipped to 0, 10% accuracy.) Power-of-two specs
    snap ``s`` in ``qparams_from_range``. The mean of ``|x|`` runs over all batches (float64).
    """

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._abs_sum: torch.Tensor | None = None
        self._count = 0

    def _accumulate(self, rows: torch.Tensor) -> None:
        s = rows.abs().sum(dim=1, dtype=torch.float64)
        self._abs_sum = s if self._abs_sum is None else self._abs_sum + s
        self._count += rows.shape[1]

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        min_val, max_val = self._observed()
        assert self._abs_sum is not None
        signed = self.signed
        qmin, qmax = self.spec.qrange(signed)
        step = 2.0 * (self._abs_sum / self._count) / math.sqrt(qmax)
        if self.spec.symmetric:
            hi = step * qmax
            return (-hi if signed else torch.zeros_like(hi)), hi
        span = step * (qmax - qmin)
        data_lo = min_val.double().clamp_max(0.0)
        mid = (min_val.double() + max_val.double()) / 2
        lo = torch.minimum(torch.maximum(mid - span / 2, data_lo), torch.zeros_like(data_lo))
        return lo, lo + span


@_register("meanstd", label="MeanStd", order=60)
class MeanStdObserver(Observer):
    """Range ``mean -+ k std`` (``k = 3``; DSQ uses 2.6) with running mean / population variance over batches
    (Chan's parallel update, float64), kept within the observed ``[min, max]`` (never wider than min-max)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"k": 3.0}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._n = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None  # sum of squared deviations from the mean

    def _accumulate(self, rows: torch.Tensor) -> None:
        var, mean = torch.var_mean(rows.double(), dim=1, correction=0)
        n = rows.shape[1]
        if self._mean is None or self._m2 is None:
            self._n, self._mean, self._m2 = n, mean, var * n
            return
        total = self._n + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + var * n + delta.square() * (self._n * n / total)
        self._n = total

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        min_val, max_val = self._observed()
        assert self._mean is not None and self._m2 is not None
        k = float(self.options["k"])
        std = (self._m2 / self._n).clamp_min(0.0).sqrt()
        lo, hi = self._mean - k * std, self._mean + k * std
        return torch.maximum(lo, min_val.double()), torch.minimum(hi, max_val.double())


@_register("batch_minmax", label="BatchMinMax", order=80, weights=False)
class BatchMinMaxObserver(Observer):
    """DSQ's "BatchMinMax" activation range (MQBench App. F): per batch, the per-sample min and max averaged over the
    batch dimension, smoothed across batches with an exponential moving average (``momentum`` 0.9, started from the
    first batch) -- the statistic DSQ's activation quantizer keeps updating during training. Per-channel specs
    average each channel's per-sample range; with no batch dimension (a weight per output channel) a row's own
    min / max is used."""

    OPTIONS: ClassVar[dict[str, Any]] = {"momentum": 0.9}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._ema: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        super().update(x)
        x = x.detach().float()
        axis = self.spec.ch_axis if self.spec.per_channel else None
        if x.dim() < 2 or axis == 0:  # no batch dimension to average over: the rows' own min / max
            rows = self._rows(x)
            lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        elif axis is None:
            flat = x.reshape(x.shape[0], -1)
            lo, hi = flat.amin(dim=1).mean().reshape(1), flat.amax(dim=1).mean().reshape(1)
        else:  # per channel: each sample's channel min / max, averaged over the batch
            per = x.movedim(axis, 1).reshape(x.shape[0], x.shape[axis], -1)
            lo, hi = per.amin(dim=2).mean(dim=0), per.amax(dim=2).mean(dim=0)
        if self._ema is None:
            self._ema = (lo, hi)
        else:
            m = float(self.options["momentum"])
            self._ema = (self._ema[0] * m + lo * (1 - m), self._ema[1] * m + hi * (1 - m))

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._observed()
        assert self._ema is not None
        return self._ema


@_register("bn", label="BN", order=70, weights=False)
class BNObserver(Observer):
    """BN-based activation range (white paper Sec. 3.1): ``[beta - k |gamma|, beta + k |gamma|]`` per channel
    (``k = 6``), reduced to the overall min / max per tensor, from the BatchNorm producing the tensor.

    The graph code calls :meth:`set_bn`; without it the observer falls back to min-max over the observed data and
    ``fallback`` is True. With a BN range, signedness follows that range (a ReLU makes it unsigned) and no
    calibration data is needed.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"k": 6.0}

    def __init__(self, spec: QuantSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._bn_range: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def set_bn(
        self, gamma: torch.Tensor, beta: torch.Tensor, relu: bool = False, relu_max: float | None = None
    ) -> None:
        """Use the BN's affine parameters; ``relu`` clamps the range at 0, ``relu_max`` (ReLU6: 6) also caps it
        (and implies the clamp at 0)."""
        g, b = gamma.detach().float().reshape(-1), beta.detach().float().reshape(-1)
        k = float(self.options["k"])
        lo, hi = b - k * g.abs(), b + k * g.abs()
        if relu or relu_max is not None:
            lo, hi = lo.clamp_min(0.0), hi.clamp_min(0.0)
        if relu_max is not None:
            lo, hi = lo.clamp_max(relu_max), hi.clamp_max(relu_max)
        self._bn_range = (lo, hi)

    @property
    def fallback(self) -> bool:
        """True when no BN was given and the range is min-max over the observed data."""
        return self._bn_range is None

    def _bn_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._bn_range is not None
        lo, hi = self._bn_range
        if self.spec.per_channel:
            return lo, hi
        return lo.amin().reshape(1), hi.amax().reshape(1)

    def _signed_min(self) -> torch.Tensor | None:
        return self.min_val if self._bn_range is None else self._bn_rows()[0]

    def _clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._bn_range is None:
            return self._observed()
        lo, hi = self._bn_rows()
        if self.min_val is not None and self.min_val.shape != lo.shape:
            raise ValueError(f"calib bn: BN has {lo.numel()} channels, the observed tensor {self.min_val.numel()}")
        return lo, hi


def calib_names(kind: str) -> list[str]:
    """The ``calib.weight`` (``kind="weight"``) or ``calib.act`` (``"act"``) methods, in table order."""
    names = [n for n in OBSERVERS.names() if kind == "act" or OBSERVERS.entry(n).meta["weights"]]
    return sorted(names, key=lambda n: (OBSERVERS.entry(n).order, n))
