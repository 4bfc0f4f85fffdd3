"""DSQ's fake quantization with the fused kernels (``bench.quant.fused_dsq``, ``fused=true``): output (with and without
gradients) and the input's gradient bit for bit the eager ops', for every rounding, per tensor and per channel,
signed / unsigned / asymmetric grids, ties, the grid's ends, NaN and infinities; a non-contiguous gradient (eager
route); the probe. The eager formula itself is tested against DSQ's rules in tests/algos."""

from __future__ import annotations

import logging

import pytest
import torch

from bench.algos.dsq import dsq_fake_quantize
from bench.quant import fused_dsq, fused_lsq
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]

CASES = [  # (x shape, scale shape, grid, zero point)
    ([8, 6, 9, 11], [1], (-8, 7), 0.0),  # a signed per-tensor activation
    ([8, 6, 9, 11], [1], (0, 15), 0.0),  # unsigned
    ([8, 6, 9, 11], [1], (0, 255), 37.0),  # asymmetric
    ([12, 6, 3, 3], [12, 1, 1, 1], (-8, 7), 0.0),  # a symmetric per-channel weight
    ([12, 6, 3, 3], [12, 1, 1, 1], (0, 15), 3.0),  # an asymmetric per-channel weight
    ([10, 24], [10, 1], (-128, 127), 0.0),  # a linear layer's weight
]


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
@pytest.mark.parametrize("case", CASES, ids=["signed", "unsigned", "asymmetric", "channels", "channels-z", "linear"])
@pytest.mark.parametrize("contiguous_grad", [True, False])
def test_fused_dsq_is_bit_identical_to_eager(fresh, rounding, case, contiguous_grad):
    shape, sshape, (qmin, qmax), zp = case
    gen = torch.Generator().manual_seed(qmax)
    c = torch.Size(sshape).numel()
    s = (torch.rand(sshape, generator=gen) * 0.3 + 0.01) if c > 1 else torch.tensor([0.0371])
    z = torch.full(sshape, zp)
    x = torch.randn(shape, generator=gen) * (qmax - qmin) * s / 3
    flat = x.view(-1)
    flat[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    k = torch.arange(qmin - 2, qmax + 2.5, 0.5) - zp  # ties and the grid's ends, in units of the first channel's step
    k = k[:flat.numel() - 5]
    flat[5:5 + len(k)] = k * s.view(-1)[0]
    grad = torch.randn(list(reversed(shape)), generator=gen).permute(*reversed(range(len(shape)))) \
        if not contiguous_grad else torch.randn(shape, generator=gen)
    fused_lsq.set_enabled(True)
    assert fused_dsq.usable(x, s, z, rounding)  # probed, agreed
    # output with gradients, the input's gradient, output without gradients
    want, got = (fused_lsq.outputs_and_grads(f, [x.requires_grad_(True)], (s, z, qmin, qmax, 0.4, rounding), grad)
                 for f in (fused_dsq.eager, fused_dsq.fused))
    assert fused_lsq.enabled() and ("dsq", rounding) in fused_lsq._checked
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))
    assert torch.isfinite(got[1][1:]).all()  # a gradient flows (the soft step's), not only zeros and NaN
    assert (got[1] != 0).float().mean() > 0.3  # (the unsigned grid clips the negative half)


def test_dsq_fake_quantize_takes_the_fused_kernels_when_on(fresh, monkeypatch):
    calls = []
    real = fused_dsq.fused
    monkeypatch.setattr(fused_dsq, "fused", lambda *a: calls.append(1) or real(*a))
    x, s, z = torch.randn(4, 5), torch.tensor([0.1]), torch.tensor([0.0])
    want = dsq_fake_quantize(x, s, z, -8, 7, 0.4)
    assert not calls
    fused_lsq.set_enabled(True)
    assert torch.equal(dsq_fake_quantize(x, s, z, -8, 7, 0.4), want) and calls


def test_the_probe_turns_a_wrong_kernel_off(fresh, monkeypatch, caplog):
    real = fused_lsq.extension()

    class InclusiveClamp:  # the real kernels, but the gradient passed at the grid's ends, where torch's clamp gives 0
        dsq_fwd = real.dsq_fwd

        @staticmethod
        def dsq_bwd(x, t, grad, r, s, z, qmin, qmax, k, cf, ch):
            out = real.dsq_bwd(x, t, grad, r, s, z, qmin, qmax, k, cf, ch)
            v = x * r.reshape(-1)[0] + z.reshape(-1)[0]
            return torch.where((v == qmin) | (v == qmax), grad, out)

    monkeypatch.setattr(fused_lsq, "extension", lambda: InclusiveClamp)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert not fused_dsq.usable(torch.randn(4, 3), torch.tensor([0.1]), torch.tensor([0.0]), "half_even")
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_what_the_fused_kernels_do_not_take(fresh):
    fused_lsq.set_enabled(True)
    s, z = torch.tensor([0.1]), torch.tensor([0.0])
    assert not fused_dsq.usable(torch.randn(4, 6).t(), s, z, "half_even")  # non-contiguous
    assert not fused_dsq.usable(torch.randn(4, 6, dtype=torch.float64), s, z, "half_even")
    assert not fused_dsq.usable(torch.randn(4, 6), torch.rand(4, 6), torch.rand(4, 6), "half_even")  # per element
    assert not fused_dsq.usable(torch.randn(4, 6), s.clone().requires_grad_(True), z, "half_even")  # a learned step
    assert fused_dsq.usable(torch.randn(4, 6), torch.rand(4, 1), torch.zeros(4, 1), "half_even")
    fused_lsq.set_enabled(False)
    assert not fused_dsq.usable(torch.randn(4, 6), s, z, "half_even")
