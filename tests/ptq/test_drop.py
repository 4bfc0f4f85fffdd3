"""QDrop's counter-based masks (bench.ptq.drop) against SplitMix64 written out here per element, checked on the
published outputs of the generator; the C++ kernels against that reference and against torch.where's values and
gradients; the NumPy fallback against the kernels; and a QDrop reconstruction that is reproducible from its seed."""

from __future__ import annotations

import pytest
import torch

from bench.models.tiny import TinyNet
from bench.ptq import drop
from bench.ptq.calibrate import calibrate
from bench.ptq.recon import ReconSettings, Stage, reconstruct
from bench.ptq.units import partition
from bench.quant.insert import prepare
from bench.quant.profiles import load_profile
from tests.quant.compiler import needs_compiler

M64 = 2**64 - 1


def splitmix64(seed: int, n: int) -> list[int]:
    """The first ``n`` outputs of SplitMix64 seeded with ``seed``, one at a time (Steele, Lea & Flood 2014)."""
    out, state = [], seed % 2**64
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(z ^ (z >> 31))
    return out


def reference_mask(key: int, n: int, p: float) -> list[bool]:
    """Element i kept when output i's top 53 bits, as a fraction of 2**53, are below p (exact rational compare)."""
    return [(z >> 11) / 2**53 < p for z in splitmix64(key, n)]


def test_the_reference_generator_gives_splitmix64s_published_outputs():
    # the sequence for seed 1234567 (the C reference implementation, as quoted e.g. on Rosetta Code)
    assert splitmix64(1234567, 5) == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                                      4593380528125082431, 16408922859458223821]


@pytest.mark.parametrize("key", [0, 1234567, -1, -(2**63), 2**63 - 1])
@pytest.mark.parametrize("p", [0.5, 0.3, 0.0, 0.999])
def test_masks_are_the_generators_outputs_below_p(key, p):
    n = 40001  # more than one thread's share, and not a multiple of a vector
    want = torch.tensor(reference_mask(key, n, p))
    assert torch.equal(drop.keep_mask((n,), key, p), want)
    assert torch.equal(torch.from_numpy(drop.mask_numpy(n, key, p)), want)


def test_masks_keep_about_p_and_depend_on_the_key():
    a = drop.keep_mask((1000, 1000), 11, 0.5)
    assert abs(a.float().mean().item() - 0.5) < 0.002
    assert abs(drop.keep_mask((1000, 1000), 11, 0.25).float().mean().item() - 0.25) < 0.002
    assert (a != drop.keep_mask((1000, 1000), 12, 0.5)).float().mean().item() > 0.45
    assert torch.equal(a.reshape(-1)[:777], drop.keep_mask((777,), 11, 0.5))  # row-major element order
    with pytest.raises(ValueError, match="drop probability 1.5 must be in"):
        drop.keep_mask((3,), 0, 1.5)


def test_keys_come_from_the_given_generator():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    keys = [drop.draw_key(g1) for _ in range(3)]
    assert keys == [drop.draw_key(g2) for _ in range(3)] and len(set(keys)) == 3
    torch.manual_seed(9)
    k = drop.draw_key()
    torch.manual_seed(9)
    assert drop.draw_key() == k


@pytest.mark.parametrize("contiguous", [True, False])
def test_select_and_its_gradients_are_torch_where_bit_for_bit(contiguous):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 11, generator=g)
    q = torch.round(x * 4) / 4
    grad = torch.randn(3, 5, 7, 11, generator=g)
    grad[0, 0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    if not contiguous:  # the fallback route
        x, q, grad = x.transpose(1, 3), q.transpose(1, 3), grad.transpose(1, 3)
    key = -123456789
    keep = torch.tensor(reference_mask(key, x.numel(), 0.5)).reshape(x.shape)
    assert torch.equal(drop.select(x, q, key, 0.5), torch.where(keep, x, q))

    xa, qa = x.clone().requires_grad_(), q.clone().requires_grad_()
    xb, qb = x.clone().requires_grad_(), q.clone().requires_grad_()
    out = drop.drop(xa, qa, key, 0.5)
    ref = torch.where(keep, xb, qb)
    assert torch.equal(out, ref)
    out.backward(grad)
    ref.backward(grad)
    for a, b in ((xa.grad, xb.grad), (qa.grad, qb.grad)):  # NaN where the gradient is NaN, the rest equal
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\) differ"):
        drop.drop(torch.zeros(2), torch.zeros(3), key, 0.5)


def test_qdrop_with_these_masks_is_reproducible_and_the_numpy_fallback_computes_the_same(monkeypatch, trained):
    def run(mask_rng: str = "splitmix") -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        gm = prepare(trained(TinyNet()), load_profile("tensorrt"), w_bits=3, a_bits=4, first_last_bits=None)
        x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(3)).abs()
        calibrate(gm, x)
        block = next(u for u in partition(gm, "block") if len(u.layers) == 2)
        stage = Stage("qdrop", acts_on=True, learn_acts=True, drop_prob=0.5, mask_rng=mask_rng)
        reconstruct(gm, x, stage, ReconSettings(iters=20, lr=1e-2, act_lr=1e-3), progress=False, only=[block.name])
        return {k: v.clone() for k, v in gm.state_dict().items() if isinstance(v, torch.Tensor)}

    fast = run()
    other = run("torch")
    assert any(not torch.equal(fast[k], other[k]) for k in fast)  # the masks matter: other masks, other results
    assert all(torch.equal(v, w) for v, w in zip(fast.values(), run().values(), strict=True))  # from the seed
    monkeypatch.setattr(drop, "_ext", None)
    monkeypatch.setattr(drop, "_no_ext", True)
    slow = run()
    assert fast.keys() == slow.keys() and all(torch.equal(fast[k], slow[k]) for k in fast)


@pytest.fixture
def fused_on():
    from bench.quant import fused_lsq

    fused_lsq._checked.clear()
    fused_lsq._failed = False
    fused_lsq.set_enabled(True)
    yield fused_lsq
    fused_lsq.set_enabled(False)
    fused_lsq._checked.clear()
    fused_lsq._failed = False


def _torch_where(a, b, p, gen):
    # QDrop's reference code: torch.rand_like(x) < p picks the full-precision x
    return torch.where(torch.rand(a.shape, generator=gen) < p, a, b)


@needs_compiler
@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("p", [0.5, 0.3])
@pytest.mark.parametrize("contiguous_grad", [True, False])
@pytest.mark.parametrize("offset", [0, 622, 623, 1000])  # where in the engine's 624-word state the draw starts
def test_fused_torch_masks_are_torch_rand_bit_for_bit(fused_on, seeded, p, contiguous_grad, offset):
    """``rand_where`` draws what ``torch.rand`` draws from the same generator (the masks, the state after) and gives
    ``torch.where``'s values and gradients (NaN, inf and -0 in the gradient included)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, 23, 9, generator=g)  # more than one thread's share
    q = torch.round(x * 4) / 4
    grad = torch.randn(x.shape, generator=g)
    grad.view(-1)[:3] = torch.tensor([float("inf"), float("nan"), -0.0])
    if not contiguous_grad:
        grad = grad.transpose(1, 3).contiguous().transpose(1, 3)
    res, states = [], []
    for fn in (_torch_where, drop.rand_where):
        gen = torch.Generator().manual_seed(7) if seeded else None
        torch.manual_seed(3)
        torch.rand(offset, generator=gen)
        xa, qa = x.clone().requires_grad_(), q.clone().requires_grad_()
        out = fn(xa, qa, p, gen)
        out.backward(grad)
        res.append([out.detach(), xa.grad, qa.grad])
        states.append((gen or torch.default_generator).get_state())
    for a, b in zip(*res, strict=True):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
        assert torch.equal(a.signbit(), b.signbit())
    assert torch.equal(states[0], states[1])
    assert ("rand_select",) in fused_on._checked
    kept = (res[0][0] == x).float().mean().item()
    assert abs(kept - p) < 0.1 + 0.1  # the kept share is about p (RTN leaves some elements unchanged too)


@needs_compiler
def test_fused_torch_masks_apply_to_contiguous_cpu_float32_only(fused_on):
    x = torch.randn(4, 6)
    assert drop.rand_where(x.t(), x.t().clone(), 0.5) is None  # not contiguous
    assert drop.rand_where(x.double(), x.double(), 0.5) is None
    assert drop.rand_where(x, torch.randn(6, 4), 0.5) is None  # shapes differ
    fused_on.set_enabled(False)
    assert drop.rand_where(x, x.clone(), 0.5) is None


@needs_compiler
def test_the_probe_catches_masks_that_are_not_torchs(fused_on, monkeypatch):
    other = torch.Generator().manual_seed(1)
    monkeypatch.setattr(drop._RandSelect, "apply", lambda a, b, p, g: _torch_where(a, b, p, other))
    assert not drop._probe_rand()
