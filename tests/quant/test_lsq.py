"""LSQ fake quantization (``bench.quant.lsq``): the LSQ paper's gradients against the rules written out here, element
by element, per tensor and per channel, with and without a learned zero point; the band just beyond the clip point
where PyTorch's fused kernel differs; the fused kernel as an explicit option. Every test runs twice: with the eager
kernel and with the fused CPU kernels of ``bench.quant.fused_lsq`` (a cell's ``fused=true``)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.quant import fused_lsq
from bench.quant.fake import fake_quantize
from bench.quant.lsq import lsq_fake_quantize
from tests.quant.compiler import needs_compiler


@pytest.fixture(autouse=True, params=[False, pytest.param(True, marks=needs_compiler)], ids=["eager", "fused"])
def kernels(request):
    fused_lsq.set_enabled(request.param)
    yield request.param
    assert fused_lsq.enabled() == request.param  # the fused run did not fall back to eager
    fused_lsq.set_enabled(False)


def _round(v: float, rounding: str) -> float:
    fl = math.floor(v)
    d = v - fl
    if d != 0.5:
        return float(round(v))
    return {"half_even": fl + (fl % 2), "half_up": fl + 1, "half_away": fl + 1 if v > 0 else fl}[rounding]


def reference(x: list[float], s: float, z: float, qmin: int, qmax: int, g: float, rounding: str = "half_even"):
    """Forward values and d/dx, d/ds, d/dz (summed, times g) by the LSQ paper's rules (Esser et al. 2020, Eq. 3;
    LSQ+ for the zero point), deciding "clipped" on v = x / s + z before rounding."""
    zr = min(max(math.floor(z + 0.5), qmin), qmax)
    out, dx, ds, dz = [], [], 0.0, 0.0
    for xi in x:
        u = xi / s
        v = u + zr
        q = min(max(_round(u, rounding) + zr, qmin), qmax)
        out.append((q - zr) * s)
        if v <= qmin:
            dx.append(0.0)
            ds += qmin - zr
            dz += -s
        elif v >= qmax:
            dx.append(0.0)
            ds += qmax - zr
            dz += -s
        else:
            dx.append(1.0)
            ds += _round(u, rounding) - u
    return out, dx, ds * g, dz * g


def test_the_band_beyond_the_clip_point_follows_the_paper() -> None:
    # 4-bit signed, s = 1, x = 7.3: the paper gives ds = Qp / sqrt(N Qp) = 7 / sqrt(7) and dx = 0; PyTorch's fused
    # kernel gives round(7.3) - 7.3 = -0.3 (times the factor) and dx = 1
    x = torch.tensor([7.3], requires_grad=True)
    s = torch.tensor([1.0], requires_grad=True)
    z = torch.zeros(1, requires_grad=True)
    g = 1.0 / math.sqrt(1 * 7)
    lsq_fake_quantize(x, s, z, -8, 7, g).sum().backward()
    assert x.grad.item() == 0.0
    assert s.grad.item() == pytest.approx(7 / math.sqrt(7), rel=1e-6)  # 2.6458
    x2, s2 = torch.tensor([7.3], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    lsq_fake_quantize(x2, s2, torch.zeros(1), -8, 7, g, kernel="torch").sum().backward()
    assert x2.grad.item() == 1.0 and s2.grad.item() == pytest.approx(-0.3 * g, abs=1e-5)  # the fused kernel's rule
    # the mirror band below qmin
    x3, s3 = torch.tensor([-8.4], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    lsq_fake_quantize(x3, s3, torch.zeros(1), -8, 7, g).sum().backward()
    assert x3.grad.item() == 0.0 and s3.grad.item() == pytest.approx(-8 * g, rel=1e-6)


@pytest.mark.parametrize("qmin, qmax, z", [(-8, 7, 0.0), (0, 15, 3.4), (-128, 127, -2.6), (0, 3, 0.5)])
@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
def test_per_tensor_forward_and_gradients_match_the_rules(qmin: int, qmax: int, z: float, rounding: str) -> None:
    torch.manual_seed(0)
    s_val = 0.25  # a power of two: x / s is exact, so half-way points are real ties
    x = (torch.randn(200) * (qmax - qmin) * s_val / 3).tolist()
    x += [s_val * (k + 0.5) for k in range(qmin - 3, qmax + 3)]  # exact ties and the bands beyond both ends
    xt = torch.tensor(x, requires_grad=True)
    s = torch.tensor([s_val], requires_grad=True)
    zt = torch.tensor([z], requires_grad=True)
    g = 0.37
    y = lsq_fake_quantize(xt, s, zt, qmin, qmax, g, rounding=rounding)
    w = torch.linspace(-1.0, 2.0, len(x))  # a non-uniform upstream gradient
    (y * w).sum().backward()
    out, dx, _, _ = reference(x, s_val, z, qmin, qmax, g, rounding)
    assert y.tolist() == pytest.approx(out, abs=1e-6)
    assert xt.grad.tolist() == pytest.approx([d * wi for d, wi in zip(dx, w.tolist(), strict=True)])
    ds = sum(wi * r for wi, r in zip(w.tolist(), _per_elem(x, s_val, z, qmin, qmax, rounding, "s"), strict=True))
    dz = sum(wi * r for wi, r in zip(w.tolist(), _per_elem(x, s_val, z, qmin, qmax, rounding, "z"), strict=True))
    assert s.grad.item() == pytest.approx(ds * g, rel=1e-4, abs=1e-4)
    assert zt.grad.item() == pytest.approx(dz * g, rel=1e-4, abs=1e-4)


def _per_elem(x: list[float], s: float, z: float, qmin: int, qmax: int, rounding: str, which: str) -> list[float]:
    zr = min(max(math.floor(z + 0.5), qmin), qmax)
    out = []
    for xi in x:
        u = xi / s
        v = u + zr
        clipped = v <= qmin or v >= qmax
        if which == "s":
            out.append((qmin - zr if v <= qmin else qmax - zr) if clipped else _round(u, rounding) - u)
        else:
            out.append(-s if clipped else 0.0)
    return out


def test_per_channel_sums_gradients_per_channel() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 4, 5) * 2
    s = torch.tensor([0.1, 0.3, 0.5, 1.0])
    z = torch.tensor([0.0, 1.0, -2.0, 3.0])
    xt, st, zt = x.clone().requires_grad_(), s.clone().requires_grad_(), z.clone().requires_grad_()
    y = lsq_fake_quantize(xt, st, zt, -8, 7, 0.5, ch_axis=1)
    y.sum().backward()
    for c in range(4):
        xc = x[:, c].reshape(-1).tolist()
        out, dx, ds, dz = reference(xc, float(s[c]), float(z[c]), -8, 7, 0.5)
        assert y[:, c].reshape(-1).tolist() == pytest.approx(out, abs=1e-6)
        assert xt.grad[:, c].reshape(-1).tolist() == dx
        assert st.grad[c].item() == pytest.approx(ds, rel=1e-4, abs=1e-5)
        assert zt.grad[c].item() == pytest.approx(dz, rel=1e-4, abs=1e-5)


def test_forward_is_the_fake_quantization_of_its_grid() -> None:
    torch.manual_seed(2)
    x = torch.randn(4096) * 3
    for s, z, lo, hi in ((0.37, 0, -8, 7), (0.11, 3, 0, 15), (0.02, -5, -128, 127)):
        a = lsq_fake_quantize(x, torch.tensor([s]), torch.tensor([float(z)]), lo, hi, 1.0)
        b = fake_quantize(x, torch.tensor([s]), torch.tensor([z]), lo, hi)
        assert torch.equal(a, b)


def test_the_torch_kernel_is_refused_for_other_roundings_and_unknown_kernels() -> None:
    x, s, z = torch.randn(8), torch.tensor([0.5]), torch.zeros(1)
    with pytest.raises(ValueError, match="half to even"):
        lsq_fake_quantize(x, s, z, -8, 7, 1.0, rounding="half_up", kernel="torch")
    with pytest.raises(ValueError, match="accepted: paper, torch"):
        lsq_fake_quantize(x, s, z, -8, 7, 1.0, kernel="cuda")


@pytest.mark.parametrize("qmin, qmax, z", [(-8, 7, 0.0), (0, 15, 3.4), (-128, 127, -2.6), (0, 3, 0.0)])
@pytest.mark.parametrize("ch_axis", [None, 1])
@pytest.mark.parametrize("learn_z", [False, True])
def test_gradients_equal_the_plain_formulas_bit_for_bit(qmin: int, qmax: int, z: float, ch_axis: int | None,
                                                         learn_z: bool) -> None:
    # the kernel's reordered passes (no v = u + 0, clipped gradients zeroed, ds built in place) give the values of
    # the formulas written the plain way, with the same reductions
    torch.manual_seed(6)
    x = torch.randn(5, 4, 6, 3) * 3
    x.view(-1)[:24] = (torch.arange(-12, 12) + 0.5) * 0.25  # ties and both clip bands at s = 0.25
    c = 1 if ch_axis is None else x.shape[ch_axis]
    s = torch.full((c,), 0.25) if ch_axis is None else torch.rand(c) * 0.5 + 0.1
    zt = torch.full((c,), z)
    up = torch.randn_like(x)
    xa, sa, za = x.clone().requires_grad_(), s.clone().requires_grad_(), zt.clone().requires_grad_(learn_z)
    y = lsq_fake_quantize(xa, sa, za, qmin, qmax, 0.3, ch_axis=ch_axis)
    (y * up).sum().backward()

    shape = [1] * 4
    if ch_axis is not None:
        shape[ch_axis] = -1
    sb = s.reshape(shape) if ch_axis is not None else s.reshape(())
    zr = torch.floor(zt + 0.5).clamp(qmin, qmax)
    zb = zr.reshape(shape) if ch_axis is not None else zr.reshape(())
    u = x * sb.reciprocal()
    code = torch.clamp(torch.round(u), qmin - zb, qmax - zb)
    assert torch.equal(y, code * sb)
    v = u + zb
    inside = ~((v <= qmin) | (v >= qmax))
    dims = [d for d in range(4) if d != ch_axis]
    assert torch.equal(xa.grad, up * inside)
    ref_s = (up * torch.where(inside, code - u, code)).sum(dim=dims).reshape(s.shape) * 0.3
    assert torch.equal(sa.grad, ref_s)
    if learn_z:
        ref_z = (up * torch.where(inside, torch.zeros_like(v), -sb.expand_as(v))).sum(dim=dims).reshape(zr.shape) * 0.3
        assert torch.equal(za.grad, ref_z)
    else:
        assert za.grad is None
