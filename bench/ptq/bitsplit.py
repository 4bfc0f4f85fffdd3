"""Bit-Split and Stitching with Error Compensated Activation Quantization (Wang et al. 2020, seed 003).

Per weighted layer, per output channel ``k`` (one row ``W_k`` of the deployed float weight, BN folded), the method
learns integer codes ``q_k`` and one float scale ``alpha_k`` minimising the output reconstruction error

    ||y_k - alpha_k q_k^T X_hat||^2 = ||y_k||^2 - 2 alpha_k q_k . (W_k C) + alpha_k^2 q_k^T H q_k      (Eq. 2 / 14)

with ``y_k = W_k X`` the FP32 layer output, ``X`` / ``X_hat`` the im2col columns of the layer input in the FP32 /
quantized model, ``H = X_hat X_hat^T`` and ``C = X X_hat^T``. The M-bit code is split into M-1 ternary planes
(``q = sum_m 2^(m-1) q_m``, Eq. 3 / 9); ``alpha`` has a closed form (Eq. 4) and each plane is optimised by exact
coordinate descent (Eq. 8), alternately (Algorithm 1). ECAQ (Sec. 3.2) fits one scale ``beta_c`` per input channel
with ``X[c] ~ beta_c X_hat[c]`` (Eq. 11) and starts the optimisation from ``W_beta[:, c] = beta_c W[:, c]``
(Eq. 13); the target stays ``y = W X`` (Eq. 14), so beta only enters through the weights and the activation
quantizer keeps its calibrated per-tensor scale.

``bitsplit_model`` runs it layer by layer on a prepared, calibrated model and stores each result in a
:class:`~bench.ptq.frozen.FrozenWeightQuantizer` (fixed codes, per-channel scale ``alpha``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bench.ptq.frozen import FrozenWeightQuantizer
from bench.quant.insert import quantizers, weighted_modules
from bench.quant.profiles import HardwareProfile, load_profile, profile_names
from bench.quant.qmodules import QuantLinear
from bench.quant.quantizer import FakeQuantize

ALPHA_FLOOR = 1e-12  # "tiny positive" scale of a degenerate row (all-zero weight or input): its codes are 0
_BLOCK = 64  # coordinate-descent columns whose (H Q) entries are updated element by element (GEMM for the rest)
_REL_TOL = 1e-9  # outer iterations stop when the objective decreases by less than this (relative)
_MAX_UNFOLD = 1 << 24  # im2col elements per chunk when accumulating the statistics (bounds the memory)


# ---------------------------------------------------------------- planes


def qmax_of(bits: int) -> int:
    """Largest code of the narrow-range M-bit grid: ``2^(M-1) - 1`` (the paper's sign + M-1 magnitude bits)."""
    if bits < 2:
        raise ValueError(f"bit-split needs at least 2 bits, got {bits}")
    return 2 ** (bits - 1) - 1


def split_planes(q: Tensor, bits: int) -> Tensor:
    """Bit-Split (Fig. 1 a->b): integer codes ``q`` (any shape) -> ternary planes ``(bits-1, *q.shape)``.

    Plane ``m`` (0-based, base ``2^m``) holds bit ``m`` of ``|q|`` times ``sign(q)``, so ``stitch_planes`` gives
    ``q`` back exactly.
    """
    qmax = qmax_of(bits)
    qi = q.round().long()
    if bool((qi.abs() > qmax).any()):
        raise ValueError(f"codes outside [-{qmax}, {qmax}] cannot be split into {bits - 1} planes")
    mag, sgn = qi.abs(), qi.sign()
    dtype = q.dtype if q.is_floating_point() else torch.float32
    return torch.stack([((mag >> m) & 1) * sgn for m in range(bits - 1)]).to(dtype)


def stitch_planes(planes: Tensor) -> Tensor:
    """Bit-Stitching (Eq. 9): ``sum_m 2^m planes[m]`` (planes need not share a sign any more)."""
    base = 2.0 ** torch.arange(planes.shape[0], dtype=planes.dtype, device=planes.device)
    return (planes * base.reshape([-1] + [1] * (planes.dim() - 1))).sum(0)


# ---------------------------------------------------------------- closed forms


def closed_form_alpha(weight2d: Tensor, hessian: Tensor, cross: Tensor, q: Tensor) -> Tensor:
    """Eq. 4 per row: ``alpha_k = (W_k C) . q_k / (q_k^T H q_k)`` (the least-squares scale of ``q_k^T X_hat``
    against ``y_k``); NaN where ``q_k^T H q_k = 0``. Batched over leading group dims like :func:`bit_split`."""
    b = weight2d.double() @ cross.double()
    qd = q.double()
    return (b * qd).sum(-1) / ((qd @ hessian.double()) * qd).sum(-1)


def ecaq_beta(x: Tensor, x_hat: Tensor) -> Tensor:
    """ECAQ Eq. 11: per input channel (axis 1; a 2-d input's features) ``beta_c = <X[c], X_hat[c]> / <X_hat[c],
    X_hat[c]>``, the least-squares scale of the quantized channel; 1 where the quantized channel is all zero."""
    num, den = _beta_sums(x, x_hat)
    return _beta_from_sums(num, den)


def _beta_sums(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    dims = [d for d in range(x.dim()) if d != 1]
    xd, xh = x.double(), x_hat.double()
    return (xd * xh).sum(dims), (xh * xh).sum(dims)


def _beta_from_sums(num: Tensor, den: Tensor) -> Tensor:
    # a channel the quantizer zeroed carries no information to rescale: keep its weights (beta 1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(num))


# ---------------------------------------------------------------- solver


def bit_split(weight2d: Tensor, hessian: Tensor, cross: Tensor, bits: int, iters: int = 10,
              init: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bit-Split and Stitching (Algorithm 1, lines 10-20) for one group, or for ``G`` groups at once.

    ``weight2d`` ``(N, d)`` (or ``(G, N, d)``) is the FP32 weight defining the target ``y = W X``, ``hessian``
    ``H = X_hat X_hat^T`` and ``cross`` ``C = X X_hat^T`` are ``(d, d)`` (or ``(G, d, d)``). ``init`` (same shape
    as the weight; default the weight itself) is the starting point: ``alpha = max|init_k| / Qmax``,
    ``Q = round(init / alpha)`` (ECAQ passes ``W_beta``). Runs at most ``iters`` outer iterations (closed-form
    alpha, then coordinate descent over every plane) and stops earlier when the objective stops decreasing; a final
    closed-form alpha fits the last codes. Returns ``(alpha (N,) > 0, q (N, d))`` in the weight's dtype, ``q``
    integer-valued in ``[-Qmax, Qmax]``, ``Qmax = 2^(bits-1) - 1``. Rows with an all-zero weight, or a group whose
    input is all zero, get ``alpha = ALPHA_FLOOR`` and ``q = 0``; an input column that is always zero keeps its
    starting code (it does not change the objective). Solved in float64 on one intra-op thread.
    """
    single = weight2d.dim() == 2
    if single:
        weight2d, hessian, cross = weight2d[None], hessian[None], cross[None]
        init = None if init is None else init[None]
    with single_thread():
        alpha, q, _ = _solve(weight2d, hessian, cross, bits, iters, init)
    alpha, q = alpha.to(weight2d.dtype), q.to(weight2d.dtype)
    return (alpha[0], q[0]) if single else (alpha, q)


@contextmanager
def single_thread(threads: int | None = 1) -> Iterator[None]:
    """Run torch ops on ``threads`` intra-op threads meanwhile (None: leave the setting alone). The solver is
    thousands of tiny sequential ops: a second OpenMP thread buys nothing there, and on a loaded 2-core machine its
    barrier waits made them 10-100x slower."""
    n = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def _solve(weight: Tensor, hessian: Tensor, cross: Tensor, bits: int, iters: int,
           init: Tensor | None = None) -> tuple[Tensor, Tensor, list[float]]:
    """Batched solver: ``weight`` ``(G, N, d)``, ``hessian`` / ``cross`` ``(G, d, d)``. Returns alpha ``(G, N)``,
    codes ``(G, N, d)`` (float64) and the total objective after the initialisation and each outer iteration."""
    qmax = qmax_of(bits)
    w = weight.double()
    h = hessian.double()
    h = 0.5 * (h + h.transpose(1, 2))  # exactly symmetric: the rank-1 updates read rows as columns
    start = w if init is None else init.double()
    start = torch.where(start.abs().amax(-1, keepdim=True) > 0, start, w)  # an all-zero start row: start from W
    amax = start.abs().amax(-1)  # (G, N)
    hdiag = torch.diagonal(h, dim1=1, dim2=2).contiguous()  # (G, d)
    dead_group = hdiag.amax(-1) <= 0  # an input that is all zero: nothing to fit
    degenerate = (amax <= 0) | dead_group[:, None]
    # linear term W C, transposed (G, d, N); zero for degenerate rows, which then stay at q = 0 throughout
    bt = (w @ cross.double()).masked_fill(degenerate[..., None], 0.0).transpose(1, 2).contiguous()
    alpha = torch.where(degenerate, torch.full_like(amax, ALPHA_FLOOR), amax / qmax)
    q0 = torch.clamp(torch.round(start / alpha[..., None]), -qmax, qmax)
    q0 = torch.where(degenerate[..., None], torch.zeros_like(q0), q0)
    # elements whose input column never fires (H_ii = 0) do not change the objective: keep their initial code
    frozen = hdiag <= 1e-12 * hdiag.amax(-1, keepdim=True).clamp_min(1e-300)  # (G, d)
    frozen_any = frozen.any(0).tolist()

    planes = split_planes(q0.transpose(1, 2), bits).double().contiguous()  # (P, G, d, N): element rows contiguous
    qt = stitch_planes(planes)  # (G, d, N)
    hqt = h @ qt  # (H Q^T): (G, d, N)

    def total(a: Tensor, qt_: Tensor, hqt_: Tensor) -> Tensor:
        return a * a * (qt_ * hqt_).sum(1) - 2 * a * (bt * qt_).sum(1)  # per row (G, N)

    def refit(a: Tensor, qt_: Tensor, hqt_: Tensor) -> tuple[Tensor, Tensor]:
        # Eq. 4; a negative optimum flips the codes (same product alpha q, the objective is unchanged)
        num = (bt * qt_).sum(1)
        den = (qt_ * hqt_).sum(1)
        ok = (den > 0) & (num != 0) & ~degenerate
        new = torch.where(ok, num / den.clamp_min(1e-300), a)
        flip = torch.where(new < 0, -1.0, 1.0).to(new.dtype)
        return new * flip, flip

    history = [float(total(alpha, qt, hqt).sum())]
    for _ in range(iters):
        alpha, flip = refit(alpha, qt, hqt)
        if bool((flip < 0).any()):
            planes.mul_(flip[None, :, None, :])
            qt.mul_(flip[:, None, :])
            hqt.mul_(flip[:, None, :])
        bo = bt / alpha[:, None, :]  # the linear term over alpha: the decision below divides by alpha > 0
        for m in range(bits - 1):
            _sweep_plane(planes[m], float(2**m), h, hdiag, bo, qt, hqt, frozen, frozen_any)
        history.append(float(total(alpha, qt, hqt).sum()))
        prev, cur = history[-2], history[-1]
        if prev - cur <= _REL_TOL * max(abs(prev), 1e-300):
            break
    alpha, flip = refit(alpha, qt, hqt)
    qt = qt * flip[:, None, :]
    q = qt.transpose(1, 2).contiguous()
    alpha = torch.where(degenerate, torch.full_like(alpha, ALPHA_FLOOR), alpha)
    q = torch.where(degenerate[..., None], torch.zeros_like(q), q)
    return alpha, q, history


def _sweep_plane(plane: Tensor, s: float, h: Tensor, hdiag: Tensor, bo: Tensor, qt: Tensor, hqt: Tensor,
                 frozen: Tensor, frozen_any: list[bool]) -> None:
    """One coordinate-descent sweep (Eq. 8) over the elements of one plane ``(G, d, N)``, in place.

    With the plane's element ``i`` at value ``v`` and everything else fixed, setting it to ``t`` changes ``Q_i`` by
    ``s (t - v)``; the objective changes by ``A t^2 + r t`` (plus a constant) with ``A = alpha^2 s^2 H_ii`` and
    ``r = 2 alpha s (alpha (H Q')_i - (W C)_i)``, ``Q'`` = ``Q`` without the element. The best ternary ``t`` is
    ``-sign(r)`` when ``|r| > A``, else 0. Dividing by ``2 alpha^2 s`` (> 0): ``g = (H Q')_i - (W C)_i / alpha``
    against the threshold ``s H_ii / 2``, i.e. ``t = -clamp(round(g / (s H_ii)), -1, 1)`` (a tie rounds to 0).
    ``H Q`` is kept exact: element-wise rank-1 updates inside a block of columns, one GEMM per block for the rest
    (an element costs O(N B) instead of O(N d)).
    """
    d_ = plane.shape[1]
    shd = (s * hdiag).unsqueeze(-1)  # (G, d, 1): s H_ii
    ninv = torch.where(hdiag > 0, -1.0 / (s * hdiag), torch.zeros_like(hdiag)).unsqueeze(-1)
    for j0 in range(0, d_, _BLOCK):
        j1 = min(j0 + _BLOCK, d_)
        r_blk = hqt[:, j0:j1, :] - bo[:, j0:j1, :]  # (G, B, N): (H Q)_i - (W C)_i / alpha, kept current
        old = plane[:, j0:j1, :].clone()
        # per-element views made in one call each (Python-level indexing dominates the cost of a small step)
        vs, rs = plane[:, j0:j1, :].unbind(1), r_blk.unbind(1)
        shds, ninvs = shd[:, j0:j1].unbind(1), ninv[:, j0:j1].unbind(1)
        cols = h[:, j0:j1, j0:j1].unsqueeze(-1).unbind(2)  # (G, B, 1): H[block, i]
        for j in range(j1 - j0):
            v = vs[j]
            t = torch.addcmul(rs[j], shds[j], v, value=-1).mul_(ninvs[j]).round_().clamp_(-1, 1)
            if frozen_any[j0 + j]:
                t = torch.where(frozen[:, j0 + j : j0 + j + 1], v, t)
            delta = t - v
            v.copy_(t)
            r_blk.addcmul_(cols[j], delta.unsqueeze(1), value=s)
        dq = (plane[:, j0:j1, :] - old).mul_(s)  # (G, B, N) change of Q in this block
        qt[:, j0:j1, :] += dq
        hqt.add_(torch.bmm(h[:, :, j0:j1], dq))


# ---------------------------------------------------------------- storing the result


def frozen_quantizer(fq: FakeQuantize, q: Tensor, alpha: Tensor) -> FrozenWeightQuantizer:
    """A :class:`FrozenWeightQuantizer` deploying ``alpha_k q_k`` on ``fq``'s grid (``q`` weight-shaped, ``alpha``
    one scale per output channel).

    The narrow-range symmetric codes need zero point 0 on a signed grid (also FBGEMM's asymmetric signed one) and
    ``2^(bits-1)`` on an unsigned one (codes shifted). ValueError for a per-tensor / non-axis-0 / power-of-two grid
    or a code outside the grid.
    """
    spec = fq.spec
    if not spec.per_channel or spec.ch_axis != 0:
        raise ValueError(f"bit-split needs a per-channel (axis 0) weight grid, got {spec.describe()}")
    if spec.pot_scale:
        raise ValueError(f"bit-split's closed-form scales are not powers of two; grid {spec.describe()}")
    qmin, qmax = fq.qrange
    zp = 0 if qmin < 0 else 2 ** (spec.bits - 1)
    codes = q.round() + zp
    if bool((codes < qmin).any()) or bool((codes > qmax).any()):
        raise ValueError(f"bit-split codes [{int(q.min())}, {int(q.max())}] (zero point {zp}) do not fit the grid "
                         f"[{qmin}, {qmax}] of {spec.describe()}")
    scale = alpha.detach().float().reshape(-1)
    new = FrozenWeightQuantizer(fq, codes, scale, torch.full_like(scale, zp, dtype=torch.int32))
    new.enabled = fq.enabled
    return new


# ---------------------------------------------------------------- statistics of one layer


class _Stop(Exception):
    """Raised by the capture hook: the forward pass is not needed beyond the layer."""


def _capture(gm: nn.Module, module: nn.Module, x: Tensor) -> Tensor:
    """The input of ``module`` when ``gm`` runs on ``x``; the forward pass stops there."""
    box: list[Tensor] = []

    def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
        box.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        gm(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError("the layer was not reached by the forward pass")
    return box[0]


def _inner(m: nn.Module) -> nn.Conv2d | nn.Linear:
    return m.linear if isinstance(m, QuantLinear) else m.conv


def _columns(m: nn.Module, x: Tensor) -> Tensor:
    """im2col of the layer input per group: ``(G, d, P)``, ``d = C/G kh kw`` in the weight's flattening order
    (channel, kernel row, kernel column), ``P`` = batch x output positions."""
    layer = _inner(m)
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).t()[None]
    # pad as the conv does (zeros, 'same', reflect...); then a strided view and one copy (F.unfold's im2col was
    # 40x slower on a loaded 2-core machine, its parallel loop waiting on the busy core)
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    pads = layer._reversed_padding_repeated_twice
    if any(pads):
        x = F.pad(x, pads, mode=mode)
    b, c, hp, wp = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    st = x.stride()
    view = x.as_strided((c, kh, kw, b, ho, wo), (st[1], st[2] * dh, st[3] * dw, st[0], st[2] * sh, st[3] * sw))
    return view.reshape(layer.groups, -1, b * ho * wo)


class _LayerStats:
    """``H = X_hat X_hat^T``, ``C = X X_hat^T`` per group, ``||y_k||^2`` per output channel and the ECAQ sums,
    accumulated over batches (float64 accumulators)."""

    def __init__(self, m: nn.Module, weight: Tensor) -> None:
        self.m = m
        layer = _inner(m)
        self.groups = 1 if isinstance(layer, nn.Linear) else layer.groups
        self.w3 = weight.detach().reshape(self.groups, weight.shape[0] // self.groups, -1)  # (G, N, d)
        d = self.w3.shape[-1]
        dev = weight.device
        self.h = torch.zeros(self.groups, d, d, dtype=torch.float64, device=dev)
        self.c = torch.zeros_like(self.h)
        self.yy = torch.zeros(self.w3.shape[:2], dtype=torch.float64, device=dev)
        self.num: Tensor | None = None
        self.den: Tensor | None = None

    def add(self, x_fp: Tensor, x_q: Tensor) -> None:
        """Accumulate one batch of layer inputs (FP32 model, quantized model)."""
        if isinstance(_inner(self.m), nn.Linear):
            x_fp, x_q = x_fp.reshape(-1, x_fp.shape[-1]), x_q.reshape(-1, x_q.shape[-1])
        num, den = _beta_sums(x_fp, x_q)
        self.num = num if self.num is None else self.num + num
        self.den = den if self.den is None else self.den + den
        k = self.w3.shape[-1] * self.groups  # im2col rows per position; one image has at most numel/C positions
        per_image = max(1, k * x_fp[0].numel() // max(x_fp.shape[1], 1))
        step = max(1, _MAX_UNFOLD // per_image)
        w = self.w3.float()
        for i in range(0, x_fp.shape[0], step):
            cf = _columns(self.m, x_fp[i : i + step].float())
            cq = _columns(self.m, x_q[i : i + step].float())
            cqt = cq.transpose(1, 2)
            self.h += torch.bmm(cq, cqt).double()
            self.c += torch.bmm(cf, cqt).double()
            self.yy += torch.bmm(w, cf).double().pow(2).sum(-1)

    def beta(self) -> Tensor:
        """ECAQ Eq. 11 per input channel, laid out like the columns: ``(G, 1, d)``."""
        assert self.num is not None and self.den is not None
        beta = _beta_from_sums(self.num, self.den)  # (C_in,)
        d = self.w3.shape[-1]
        per_group = beta.reshape(self.groups, -1)  # (G, C/G): the input channels group g reads
        return per_group.repeat_interleave(d // per_group.shape[1], dim=1)[:, None, :]

    def error(self, w_hat3: Tensor) -> Tensor:
        """``||Y - W_hat X_hat||^2`` per output channel ``(G, N)`` from the statistics (the objective is
        quadratic)."""
        wh = w_hat3.double()
        lin = ((self.w3.double() @ self.c) * wh).sum(-1)
        quad = ((wh @ self.h) * wh).sum(-1)
        return self.yy - 2 * lin + quad


# ---------------------------------------------------------------- the model pass


def _graph_order(gm: fx.GraphModule) -> list[tuple[str, nn.Module]]:
    mods = dict(weighted_modules(gm))
    seen: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in mods and str(node.target) not in seen:
            seen.append(str(node.target))
    seen += [n for n in mods if n not in seen]  # (not called by the graph: never reached, kept for the error)
    return [(n, mods[n]) for n in seen]


def bitsplit_model(gm: fx.GraphModule, images: Tensor, *, batch_size: int = 256, iters: int = 10,
                   ecaq: bool = True, progress: bool = True, threads: int | None = 1) -> dict[str, Any]:
    """Bit-Split and Stitching (+ ECAQ) of every active weight quantizer of a prepared, calibrated model, in place.

    Layer by layer in graph order (Algorithm 1): the layer input is captured over ``images`` in the quantized model
    (earlier layers already replaced, activation quantizers on) and in the FP32 model (all quantizers off), ``H``,
    ``C`` and ``||y||^2`` are accumulated, the codes solved (:func:`bit_split`, from ``W_beta`` with ECAQ except for
    the first weighted layer, whose input is the image) and ``weight_fq`` replaced by a
    :class:`FrozenWeightQuantizer` (``alpha`` as its per-channel scale). Disabled / bypassed weight quantizers are
    skipped. Returns JSON-serialisable summaries: the number of layers, the mean relative output error
    ``||Y - Y_hat||^2 / ||Y||^2`` (pre-bias output, calibration images, quantized input) with round-to-nearest on the
    calibrated grid and after bit-split (None without layers), and both per layer (``bitsplit_layer_rel_err``:
    name -> [RTN, bit-split]). A layer whose output is all zero (e.g. a zero-initialised BN gamma) reports 0.

    ``threads``: torch intra-op threads during the pass (restored afterwards; None keeps the caller's). One thread by
    default: the pass is many small ops, and on a busy 2-core machine two threads made it 3-5x slower
    (resnet18_mini 48 s vs 15 s, mobilenetv2_mini 65 s vs 13 s).
    """
    with single_thread(threads), torch.no_grad():
        return _bitsplit_model(gm, images, batch_size, iters, ecaq, progress)


def _bitsplit_model(gm: fx.GraphModule, images: Tensor, batch_size: int, iters: int, ecaq: bool,
                    progress: bool) -> dict[str, Any]:
    layers = [(n, m) for n, m in _graph_order(gm) if isinstance(m.weight_fq, FakeQuantize) and m.weight_fq.active]
    first = _graph_order(gm)[0][1] if weighted_modules(gm) else None
    for name, m in layers:
        if not m.weight_fq.calibrated:
            raise RuntimeError(f"bitsplit_model needs a calibrated model; {name}.weight_fq is not calibrated")
        spec = m.weight_fq.spec
        if not spec.per_channel or spec.pot_scale:
            raise ValueError(f"bit-split needs per-channel float weight scales; {name} has {spec.describe()}")
    enabled = {n: fq.enabled for n, fq in quantizers(gm)}
    was_training = gm.training
    gm.eval()
    per_layer: dict[str, list[float]] = {}
    bar = tqdm(layers, desc="bitsplit", disable=not progress or None)
    try:
        for name, m in bar:
            old = m.weight_fq
            weight = m.folded_weight_bias()[0].detach()
            stats = _LayerStats(m, weight)
            for i in range(0, images.shape[0], batch_size):
                x = images[i : i + batch_size]
                for n, fq in quantizers(gm):
                    fq.enabled = enabled.get(n, True)
                x_q = _capture(gm, m, x)
                for _, fq in quantizers(gm):
                    fq.enabled = False
                x_fp = _capture(gm, m, x)
                stats.add(x_fp, x_q)
            for n, fq in quantizers(gm):
                fq.enabled = enabled.get(n, True)
            start = stats.w3 * stats.beta().to(stats.w3.dtype) if ecaq and m is not first else None
            alpha, q, _ = _solve(stats.w3, stats.h, stats.c, old.spec.bits, iters, start)
            rtn = old(weight).reshape(stats.w3.shape)
            energy = float(stats.yy.sum().clamp_min(1e-300))
            err_rtn = float(stats.error(rtn).sum()) / energy
            err_bs = float(stats.error(alpha[..., None] * q).sum()) / energy
            m.weight_fq = frozen_quantizer(old, q.reshape(weight.shape).float(), alpha.reshape(-1))
            per_layer[name] = [err_rtn, err_bs]
            bar.set_postfix_str(f"{name} rel err {err_rtn:.4g} -> {err_bs:.4g}")
    finally:
        for n, fq in quantizers(gm):
            fq.enabled = enabled.get(n, True)
        gm.train(was_training)
        bar.close()
    n = len(per_layer)
    return {
        "bitsplit_layers": n,
        "bitsplit_rel_err_rtn": sum(v[0] for v in per_layer.values()) / n if n else None,
        "bitsplit_rel_err": sum(v[1] for v in per_layer.values()) / n if n else None,
        "bitsplit_layer_rel_err": per_layer,
    }


# ---------------------------------------------------------------- profiles


def _refusal(profile: HardwareProfile) -> str | None:
    w = profile.weight
    if not w.per_channel:
        return f"hw={profile.name} quantizes weights per tensor"
    if w.pot_scale:
        return f"hw={profile.name} restricts weight scales to powers of two"
    return None


def bitsplit_unsupported(profile: HardwareProfile) -> str | None:
    """One-line reason why bit-split cannot run on ``profile``, or None: the construction needs one free float
    scale per output kernel (closed-form alpha; the paper uses per-channel weights, Sec. 2.3)."""
    why = _refusal(profile)
    if why is None:
        return None
    fits = [n for n in profile_names() if _refusal(load_profile(n)) is None]
    return (f"bitsplit needs per-channel weight scales (one closed-form alpha per output kernel, Wang et al. 2020 "
            f"Sec. 2.3); {why}; profiles that fit: {', '.join(fits)}")
