"""Strategy 4's BN fold (:meth:`bench.quant.qmodules.QuantConvBn2d.pre_bn`) with fused CPU kernels (``fused=true``):
the fold factor ``f = sign(f0) * max(|f0|, floor)``, ``f0 = gamma / sqrt(var + eps)``, and the gradient of the
per-channel division ``y / f``, from the C++ extension of :mod:`bench.quant.fused_lsq`.

Bit for bit the eager ops: the factor's forward and gamma's gradient go through autograd's formulas for each eager op
(add, sqrt, div, abs, clamp_min, where, mul) per channel in the same order, in one autograd node defined in C++
instead of about seven ops and six autograd nodes per layer; the division's backward (where the division and its BN
are not one node, :mod:`bench.quant.fused_divbn`) computes ``grad / f`` and ``(z / f) * grad`` in one
pass instead of three, and sums the latter with the eager reduction. Probed against the eager formulas on first use,
like the LSQ kernels, and off with them.
"""

from __future__ import annotations

import torch

from bench.quant import fused_lsq


def _eager_factor(gamma: torch.Tensor, var: torch.Tensor, eps: float, floor: float) -> torch.Tensor:
    # pre_bn's eager form
    f = gamma / torch.sqrt(var + eps)
    return torch.where(f < 0, -1.0, 1.0) * f.abs().clamp_min(floor)


def _probe_factor() -> bool:
    """Factor and gamma's gradient against autograd on the eager ops: signs, zeros, values at, just above and below
    the floor (``var = 1``, ``eps = 0``: ``sigma = 1``), random values."""
    g = torch.Generator().manual_seed(0)
    fl = torch.tensor(1e-5).item()  # the floor as float32 sees it
    edge = torch.tensor([0.0, -0.0, 1.0, -1.0, fl, -fl, fl * 1.5, -fl * 1.5, fl / 2, -fl / 2, 3e-38, -3e-38])
    cases = [(edge, torch.ones_like(edge), 0.0)]
    for n in (1, 7, 64):
        cases.append((torch.randn(n, generator=g) * 10.0 ** torch.randint(-6, 2, (n,), generator=g),
                      torch.rand(n, generator=g) * 4, 1e-5))
    for gamma, var, eps in cases:
        grad = torch.randn(gamma.shape, generator=g)
        gt = gamma.clone().requires_grad_(True)
        want_f = _eager_factor(gt, var, eps, 1e-5)
        want_f.backward(grad)
        f, f0, sigma = fused_lsq.extension().fold_factor(gamma, var, eps, 1e-5)
        got_g = fused_lsq.extension().fold_factor_grad(grad, f0, sigma, 1e-5)
        if not (torch.equal(f, want_f.detach()) and torch.equal(got_g, gt.grad)):
            return False
    return True


def _probe_div() -> bool:
    """The division's two backward products against the eager ops, on runs shorter and longer than a vector (short
    runs: the repeated-factor loop over whole samples)."""
    g = torch.Generator().manual_seed(1)
    for shape in ([2, 3, 1, 5], [3, 40, 2, 2], [2, 24, 4, 4], [4, 16, 9, 9], [2, 5, 64, 65]):
        z, grad = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        sign = torch.where(torch.rand(shape[1], generator=g) < 0.3, -1, 1).reshape(1, -1, 1, 1)
        f = (torch.rand(1, shape[1], 1, 1, generator=g) + 0.1) * sign
        gy, prod = fused_lsq.extension().div_channels_grad(grad, z, f)
        if not (torch.equal(gy, grad / f) and torch.equal(prod, (z / f).mul_(grad))):
            return False
    return True


def _plain(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()


def fold_factor(gamma: torch.Tensor, var: torch.Tensor, eps: float, floor: float) -> torch.Tensor | None:
    """Strategy 4's factor from the fused kernels, or None where they are off or do not apply (then the caller
    computes it eagerly: the same numbers)."""
    if not (_plain(gamma) and _plain(var)) or not fused_lsq.probed(("fold_factor",), _probe_factor):
        return None
    # an autograd node defined in C++ (forward fold_factor, backward fold_factor_grad to gamma; var is a buffer)
    return fused_lsq.extension().fold_apply(gamma, var, float(eps), float(floor))


def div_channels_grad(grad: torch.Tensor, z: torch.Tensor, f: torch.Tensor) -> list[torch.Tensor] | None:
    """``[grad / f, (z / f) * grad]`` in one pass for ``z = y / f`` of shape ``[N, C, H, W]`` and ``f`` of shape
    ``[1, C, 1, 1]``, or None where the fused kernels are off or do not apply (non-contiguous, not float32 CPU)."""
    if not (_plain(grad) and _plain(z) and _plain(f)) or z.dim() != 4:
        return None
    if not fused_lsq.probed(("div_channels",), _probe_div):
        return None
    return fused_lsq.extension().div_channels_grad(grad, z, f)
