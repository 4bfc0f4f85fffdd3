"""Gradient tests of every QAT quantizer: autograd against the closed-form rules, written out here, on hand-made
tensors with values inside the grid and clipped on both sides."""

from __future__ import annotations

import math

import pytest
import torch

from bench.algos.apot import APoTQuantizer, apot_levels
from bench.algos.dorefa import DoReFaActQuantizer, DoReFaWeightQuantizer
from bench.algos.dsq import DSQActQuantizer, DSQWeightQuantizer
from bench.algos.lsq import LSQQuantizer
from bench.algos.pact import PACTActQuantizer
from bench.algos.qil import QILQuantizer
from bench.quant.spec import QuantSpec

SYM = QuantSpec(bits=4, signed=True, symmetric=True)
UNS = QuantSpec(bits=4, signed=False, symmetric=True)
ASYM = QuantSpec(bits=4, signed=False, symmetric=False)
POT = QuantSpec(bits=4, signed=True, symmetric=True, pot_scale=True)
PER_CH = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)


def make(cls, spec, kind="act", scale=0.5, zp=0, params=None, signed=None, init="calib"):
    q = cls(spec, kind, None, params, init)
    n = 1
    q.set_qparams(torch.full((n,), float(scale)), torch.full((n,), zp, dtype=torch.int32),
                  spec.signed if signed is None else signed)
    return q


# values chosen away from rounding ties: inside the grid and clipped on both sides
X = torch.tensor([-9.0, -3.3, -1.2, -0.4, 0.0, 0.2, 0.91, 1.7, 2.45, 3.1, 7.0, 12.0])


def _grads(q, x, upstream=None):
    x = x.clone().requires_grad_(True)
    y = q(x)
    g = torch.ones_like(y) if upstream is None else upstream
    y.backward(g)
    return y.detach(), x.grad.detach()


def test_lsq_symmetric_forward_and_gradients():
    q = make(LSQQuantizer, SYM, scale=0.5)
    up = torch.linspace(0.5, 1.5, X.numel())
    y, dx = _grads(q, X, up)
    s, qmin, qmax = 0.5, -8, 7
    v = X / s
    r = torch.clamp(torch.round(v), qmin, qmax)
    inside = (torch.round(v) >= qmin) & (torch.round(v) <= qmax)
    assert torch.equal(y, r * s)
    assert torch.equal(dx, up * inside.float())
    ds_elem = torch.where(inside, r - v, r)  # clamped: qmin or qmax
    g = 1.0 / math.sqrt(X.numel() * qmax)
    assert q.s.grad.item() == pytest.approx((up * ds_elem).sum().item() * g, rel=1e-5)


def test_lsq_asymmetric_learns_zero_point():
    q = make(LSQQuantizer, ASYM, scale=0.5, zp=4)
    y, dx = _grads(q, X)
    s, z, qmin, qmax = 0.5, 4, 0, 15
    code = torch.round(X / s) + z
    inside = (code >= qmin) & (code <= qmax)
    r = torch.clamp(code, qmin, qmax)
    assert torch.allclose(y, (r - z) * s)
    assert torch.equal(dx, inside.float())
    g = 1.0 / math.sqrt(X.numel() * qmax)
    ds = torch.where(inside, (r - z) - X / s, r - z).sum() * g
    dz = torch.where(inside, torch.zeros_like(X), torch.full_like(X, -s)).sum() * g
    assert q.s.grad.item() == pytest.approx(ds.item(), rel=1e-5)
    assert q.z.grad.item() == pytest.approx(dz.item(), rel=1e-5)


def test_lsq_per_channel_gradient_scale_counts_one_channel():
    q = LSQQuantizer(PER_CH, "weight", None)
    q.set_qparams(torch.tensor([0.5, 0.25]), torch.zeros(2, dtype=torch.int32), True)
    w = torch.stack([X, X / 2])
    w.requires_grad_(True)
    q(w).sum().backward()
    for c, s in enumerate((0.5, 0.25)):
        v = w[c].detach() / s
        r = torch.clamp(torch.round(v), -8, 7)
        inside = (torch.round(v) >= -8) & (torch.round(v) <= 7)
        want = torch.where(inside, r - v, r).sum() / math.sqrt(X.numel() * 7)
        assert q.s.grad[c].item() == pytest.approx(want.item(), rel=1e-5)


def test_lsq_power_of_two_scale_forward_uses_pot_and_passes_gradient():
    q = make(LSQQuantizer, POT, scale=0.3)  # 2**round(log2 0.3) = 0.25
    y, _ = _grads(q, X)
    assert torch.equal(y, torch.clamp(torch.round(X / 0.25), -8, 7) * 0.25)
    assert q.s.grad is not None and q.s.grad.item() != 0
    assert q.effective_qparams()[0].item() == 0.25


def test_pact_unsigned_gradient_rule():
    q = make(PACTActQuantizer, UNS, scale=0.2)  # calibrated range [0, 3.0] -> alpha 3.0
    assert q.alpha.item() == pytest.approx(3.0)
    y, dx = _grads(q, X)
    alpha, s = 3.0, 3.0 / 15
    clipped = torch.clamp(X, 0.0, alpha)
    assert torch.allclose(y, torch.round(clipped / s) * s, atol=1e-6)
    assert torch.equal(dx, ((X > 0) & (X < alpha)).float())
    assert q.alpha.grad.item() == pytest.approx((X >= alpha).sum().item())


def test_pact_symmetric_clip_both_sides_and_paper_init():
    q = make(PACTActQuantizer, SYM, scale=0.5, init="paper")
    assert q.alpha.item() == 6.0
    y, dx = _grads(q, X)
    s, qmin, qmax = 6.0 / 7, -8, 7
    lo = qmin * s  # the grid's lower end, one step below -alpha: two's complement has one more negative code
    assert torch.allclose(y, torch.clamp(torch.round(X / s), qmin, qmax) * s, atol=1e-6)
    assert torch.equal(dx, ((X > lo) & (X < 6)).float())
    assert q.alpha.grad.item() == pytest.approx(((X >= 6).sum() + qmin / qmax * (X <= lo).sum()).item())


@pytest.mark.parametrize("cls", [PACTActQuantizer, DoReFaActQuantizer, LSQQuantizer])
@pytest.mark.parametrize("spec", [SYM, UNS, ASYM, POT], ids=["signed", "unsigned", "asymmetric", "pot"])
def test_act_codes_are_the_targets_clamped_round(cls, spec):
    # an integer target computes clamp(round(x / s) + z, qmin, qmax) with the exported (s, z): every x, in the grid,
    # beyond both ends and around the clip points, must get that code from the simulation
    q = make(cls, spec, scale=0.37, zp=5 if not spec.symmetric else 0)
    s, z = (t.item() for t in q.effective_qparams())
    qmin, qmax = q.qrange
    x = torch.linspace(-12.0, 12.0, 24001)
    x = x[((x / s) - (x / s).floor() - 0.5).abs() > 1e-3]  # off the rounding ties: no mode question here
    code = torch.round(q(x).detach() / s) + z
    assert torch.equal(code, torch.clamp(torch.round(x / s) + z, qmin, qmax))


def test_pact_asymmetric_learns_lower_clip():
    q = make(PACTActQuantizer, QuantSpec(bits=4, signed=False, symmetric=False), scale=0.4, zp=5)
    beta, alpha = q.beta.item(), q.alpha.item()
    assert beta == pytest.approx(-2.0) and alpha == pytest.approx(4.0)
    _, dx = _grads(q, X)
    assert torch.equal(dx, ((X > beta) & (X < alpha)).float())
    assert q.alpha.grad.item() == pytest.approx((X >= alpha).sum().item())
    assert q.beta.grad.item() == pytest.approx((X <= beta).sum().item())


def test_dorefa_weight_forward_and_gradient():
    w = torch.tensor([[-1.5, -0.3, 0.05, 0.4], [0.9, -0.7, 0.2, 2.2]])
    q = make(DoReFaWeightQuantizer, SYM, kind="weight")
    y, dw = _grads(q, w)
    t = torch.tanh(w)
    s = 2 * t.abs().max() / 15  # MQBench Eq. 15: 2 / (Nmax - Nmin) on the normalised weight
    code = torch.round(t / s)
    assert torch.allclose(y, torch.clamp(code, -8, 7) * s)
    inside = (code >= -8) & (code <= 7)
    assert torch.allclose(dw, (1 - t**2) * inside.float())


def test_dorefa_activation_clips_to_unit_interval():
    q = make(DoReFaActQuantizer, UNS)
    y, dx = _grads(q, X)
    assert torch.allclose(y, torch.round(X.clamp(0, 1) * 15) / 15, atol=1e-6)
    assert torch.equal(dx, ((X > 0) & (X < 1)).float())
    qs = make(DoReFaActQuantizer, SYM)  # hardware: the grid for [-1, 1], s = 1 / 7, down to its end -8 s
    ys, _ = _grads(qs, X)
    assert ys.min().item() == pytest.approx(-8 / 7) and ys.max().item() == pytest.approx(1.0)


def test_dsq_forward_is_hard_quantization_and_gradient_is_tanh_slope():
    q = make(DSQActQuantizer, SYM, scale=0.5)  # EMA range starts at the calibrated [-4, 3.5]
    q.eval()
    y, dx = _grads(q, X)
    s = q.effective_qparams()[0]
    u = torch.clamp(X / s, -8, 7)
    assert torch.allclose(y, torch.round(u) * s)
    a = 0.4
    ts = 1 / (1 - a)
    k = math.log((ts + 1) / (ts - 1))
    f = u - torch.floor(u)
    want = 0.5 * ts * k * (1 - torch.tanh(k * (f - 0.5)) ** 2)
    inside = (X / s > -8) & (X / s < 7)
    assert torch.allclose(dx, torch.where(inside, want, torch.zeros_like(want)), atol=1e-6)


def test_dsq_activation_range_tracks_batch_minmax_with_ema():
    q = make(DSQActQuantizer, SYM, scale=0.5)
    lo0, hi0 = q.ema_min.item(), q.ema_max.item()
    q.train()
    x = torch.tensor([[-1.0, 2.0], [-3.0, 4.0]])
    q(x)
    assert q.ema_min.item() == pytest.approx(0.9 * lo0 + 0.1 * (-2.0))
    assert q.ema_max.item() == pytest.approx(0.9 * hi0 + 0.1 * 3.0)


def test_dsq_weight_range_is_mean_2_6_std():
    w = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    q = make(DSQWeightQuantizer, SYM, kind="weight")
    s, _ = q.effective_qparams(w)
    amax = max(abs(w.mean() - 2.6 * w.std(correction=0)), abs(w.mean() + 2.6 * w.std(correction=0)))
    amax = min(amax, w.abs().max())
    assert s.item() == pytest.approx(amax.item() / 7, rel=1e-5)


def test_qil_transformer_gradients():
    q = make(QILQuantizer, UNS, scale=0.4)  # range [0, 6]: c = d = 3
    assert q.c.item() == pytest.approx(3.0) and q.d.item() == pytest.approx(3.0)
    with torch.no_grad():
        q.c.fill_(3.5)
        q.d.fill_(2.5)  # interval [1, 6]
    y, dx = _grads(q, X)
    c, d, qmax = 3.5, 2.5, 15
    t = torch.clamp((X - (c - d)) / (2 * d), 0, 1)
    assert torch.allclose(y, torch.round(t * qmax) / qmax * 2 * d)
    inside = ((X - (c - d)) / (2 * d) > 0) & ((X - (c - d)) / (2 * d) < 1)
    # y = 2d_detached * t (STE round): dy/dx = 1 inside; dt/dc = -1/(2d); dt/dd = (2d - 2 (x - c + d)) / (2d)^2
    assert torch.allclose(dx, inside.float())
    g = 1 / math.sqrt(X.numel() * qmax)
    dc = (2 * d * -1 / (2 * d) * inside.float()).sum() * g
    dd = (2 * d * (2 * d - 2 * (X - c + d)) / (2 * d) ** 2 * inside.float()).sum() * g
    assert q.c.grad.item() == pytest.approx(dc.item(), rel=1e-5)
    assert q.d.grad.item() == pytest.approx(dd.item(), rel=1e-5)


def test_qil_weights_prune_small_magnitudes():
    q = make(QILQuantizer, SYM, kind="weight", scale=0.5)
    with torch.no_grad():
        q.c.fill_(2.0)
        q.d.fill_(1.0)  # prune |w| < 1, clip |w| > 3
    y, _ = _grads(q, X)
    assert torch.all(y[X.abs() < 1] == 0)
    assert torch.allclose(y[X.abs() > 3].abs(), torch.full_like(y[X.abs() > 3], 2.0))


def test_apot_levels_match_reference_construction():
    lv = apot_levels(4)  # B=4: a in {0, 2^-1, 2^-3, 2^-5}, b in {0, 2^-2, 2^-4, 2^-6}
    a = [0, 2**-1, 2**-3, 2**-5]
    b = [0, 2**-2, 2**-4, 2**-6]
    ref = sorted({x + y for x in a for y in b})
    assert torch.allclose(lv, torch.tensor(ref) / max(ref))
    assert len(apot_levels(3)) == 8 and len(apot_levels(2)) == 4


def test_apot_activation_alpha_gradient_rule():
    q = make(APoTQuantizer, UNS, scale=0.4)  # alpha = 6
    y, dx = _grads(q, X)
    alpha = 6.0
    u = (X / alpha).clamp(0, 1)
    lv = apot_levels(4)
    p = lv[(u[:, None] - lv[None]).abs().argmin(1)]
    assert torch.allclose(y, p * alpha)
    inside = (X / alpha > 0) & (X / alpha < 1)
    assert torch.equal(dx, inside.float())
    want = torch.where(inside, p - X / alpha, torch.where(X / alpha >= 1, torch.ones_like(X), torch.zeros_like(X)))
    assert q.alpha.grad.item() == pytest.approx(want.sum().item(), rel=1e-5)


def test_apot_weight_standardises_and_keeps_units():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)) * 0.05
    q = APoTQuantizer(SYM, "weight", None, init="paper")
    q.set_qparams(torch.tensor([0.01]), torch.zeros(1, dtype=torch.int32), True)
    assert q.alpha.item() == 3.0
    y = q(w)
    std, mean = torch.std_mean(w)
    u = ((w - mean) / std / 3.0).clamp(-1, 1)
    lv = apot_levels(3)
    p = lv[(u.abs().reshape(-1, 1) - lv[None]).abs().argmin(1)].reshape(w.shape) * torch.sign(u)
    assert torch.allclose(y, p * 3.0 * std, atol=1e-7)
