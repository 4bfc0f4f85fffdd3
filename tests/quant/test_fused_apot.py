"""APoT's projection with the fused kernels (``bench.quant.fused_apot``, ``fused=true``): output (with and without
gradients) and the gradients of the input and the clip bit for bit the eager ops', for every level set (2 to 8 bits),
signed and unsigned ranges, the decision points between levels, the clip's ends, NaN and infinities; a non-contiguous
gradient (eager route); the probe. The eager formula itself is tested against APoT's rules in tests/algos."""

from __future__ import annotations

import logging

import pytest
import torch

from bench.algos.apot import apot_levels
from bench.quant import fused_apot, fused_lsq
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("lo", [0.0, -1.0], ids=["unsigned", "signed"])
@pytest.mark.parametrize("contiguous_grad", [True, False])
def test_fused_apot_is_bit_identical_to_eager(fresh, bits, lo, contiguous_grad):
    gen = torch.Generator().manual_seed(bits)
    levels = apot_levels(bits)
    alpha = torch.tensor([0.83])
    x = torch.randn(6, 5, 7, 9, generator=gen) * 0.6
    m = (levels[1:] + levels[:-1]) / 2  # the decision points, written out here
    edges = torch.cat([m, m.nextafter(torch.tensor(2.0)), -m, torch.tensor([1.0, -1.0])]) * alpha
    x.view(-1)[:len(edges)] = edges
    grad = torch.randn(9, 7, 5, 6, generator=gen).permute(3, 2, 1, 0) if not contiguous_grad else \
        torch.randn(6, 5, 7, 9, generator=gen)
    fused_lsq.set_enabled(True)
    assert fused_apot.usable(x, alpha, levels)  # probed, agreed
    # output with gradients, the gradients of the input and the clip, output without gradients
    tensors = [x.requires_grad_(True), alpha.requires_grad_(True)]
    want, got = (fused_lsq.outputs_and_grads(f, tensors, (levels, lo), grad)
                 for f in (fused_apot.eager, fused_apot.fused))
    assert fused_lsq.enabled() and ("apot",) in fused_lsq._checked
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))
    assert torch.isfinite(got[2]).all() and got[2].item() != 0  # the clip learns


def test_the_fused_projection_lands_on_the_nearest_level(fresh):
    # independently of the eager code: the output over alpha is the level nearest to clamp(x / alpha), sign kept
    levels = apot_levels(4)
    alpha = torch.tensor([1.5])
    x = torch.linspace(-2, 2, 4001)
    fused_lsq.set_enabled(True)
    assert fused_apot.usable(x, alpha, levels)
    got = fused_apot.fused(x, alpha, levels, -1.0) / alpha
    u = (x / alpha).clamp(-1, 1)
    dist = (u.abs()[:, None] - levels[None, :]).abs()
    nearest = levels[dist.argmin(1)] * u.sign()
    ties = (dist.sort(1).values[:, :2].diff(dim=1).abs() < 1e-6).squeeze(1)
    assert ties.sum() < 20 and torch.allclose(got[~ties], nearest[~ties], atol=1e-6)


def test_a_wrong_kernel_is_turned_off(fresh, monkeypatch, caplog):
    real = fused_lsq.extension()

    class RightClosed:  # the real kernels, but a value on a decision point sent to the upper level (right=True)
        apot_bwd = real.apot_bwd

        @staticmethod
        def apot_fwd(x, a, lo, mids, levels):
            u = (x / a).clamp(lo, 1.0)
            idx = torch.bucketize(u.abs(), mids, right=True)
            return ((levels[idx] * torch.sign(u)) * a).where(torch.isin(u.abs(), mids),
                                                             real.apot_fwd(x, a, lo, mids, levels))

    monkeypatch.setattr(fused_lsq, "extension", lambda: RightClosed)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert not fused_apot.usable(torch.randn(4, 3), torch.tensor([1.0]), apot_levels(4))
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_what_the_fused_kernels_do_not_take(fresh):
    fused_lsq.set_enabled(True)
    one, levels = torch.tensor([1.0]), apot_levels(4)
    assert not fused_apot.usable(torch.randn(4, 6).t(), one, levels)  # non-contiguous
    assert not fused_apot.usable(torch.randn(4, 6), torch.ones(4, 1), levels)  # a clip per row
    assert not fused_apot.usable(torch.randn(4, 6), one, levels.double())
    assert fused_apot.usable(torch.randn(4, 6), one, levels)
    fused_lsq.set_enabled(False)
    assert not fused_apot.usable(torch.randn(4, 6), one, levels)


def test_the_level_search_on_any_mid_count(fresh):
    """The kernel's level search (a register binary search for up to 31 sorted mids on AVX-512, counting otherwise)
    against torch.bucketize on made-up level sets: 2 to 40 levels, a duplicate mid, |u| exactly at mids and one float
    either side, NaN; a NaN mid sends the kernel to its counting path (same result as the count)."""
    ext = fused_lsq.extension()
    gen = torch.Generator().manual_seed(12)
    for n_levels in [2, 3, 8, 15, 16, 17, 24, 31, 32, 33, 40]:
        levels = torch.rand(n_levels, generator=gen).sort().values
        mids = ((levels[1:] + levels[:-1]) / 2).contiguous()
        if mids.numel() > 2:
            mids[mids.numel() // 2] = mids[mids.numel() // 2 - 1]  # a duplicate mid (still sorted)
        u = torch.cat([mids, mids.nextafter(torch.tensor(2.0)), mids.nextafter(torch.tensor(-2.0)),
                       torch.rand(997, generator=gen) * 2 - 1, torch.tensor([float("nan"), 1.0, -1.0, 0.0, -0.0])])
        got = ext.apot_fwd(u.contiguous(), 1.0, -1.0, mids, levels.contiguous())
        uc = u.clamp(-1.0, 1.0)
        p = levels[torch.bucketize(uc.abs(), mids)] * torch.sign(uc)
        want = uc + (p - uc)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    bad = torch.tensor([float("nan")])  # one NaN mid: counted, as torch.bucketize would not (no sorted order)
    out = ext.apot_fwd(torch.tensor([0.5, 0.2] * 16), 1.0, -1.0, bad, torch.tensor([0.0, 1.0]))
    assert torch.equal(out, torch.tensor([1.0, 1.0] * 16))  # !(NaN >= |u|): every mid counted


def test_a_double_backward_through_the_fused_node_raises(fresh):
    """The fused node is first-order (once_differentiable): differentiating its gradient again is an error, not a
    gradient missing its second-order terms."""
    levels = apot_levels(4)
    fused_lsq.set_enabled(True)
    x, alpha = torch.randn(64, requires_grad=True), torch.tensor([0.9], requires_grad=True)
    assert fused_apot.usable(x, alpha, levels)
    (gx,) = torch.autograd.grad(fused_apot.fused(x, alpha, levels, -1.0).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()
