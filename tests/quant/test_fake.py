"""Fake-quantization maths against independent references: the integer range of every ``QuantSpec``, scale /
zero point from a range (numpy float32 arithmetic, step by step), the fake-quant op and its STE gradient
(bit-exact), ``round_ste``, ``quantize_to_int``, power-of-two scales and the 16/32-bit bypass."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bench.quant.fake import fake_quantize, pot_scale, qparams_from_range, quantize_to_int, round_ste
from bench.quant.spec import QuantSpec

BITS = list(range(2, 9))
F32_EPS = np.float32(np.finfo(np.float32).eps)
GRANULARITY = {"tensor": None, "ch0": 0, "ch1": 1}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- references


def ref_qrange(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Signed ``[-2^(b-1), 2^(b-1) - 1]`` (narrow: without the most negative code); unsigned ``[0, 2^b - 1]``
    (narrow: ``2^b - 1`` levels, keeping 0 representable)."""
    if signed:
        half = 1 << (bits - 1)
        return (-half + 1 if narrow else -half), half - 1
    return 0, (1 << bits) - 1 - (1 if narrow else 0)


def ref_qparams(lo: float, hi: float, spec: QuantSpec, signed: bool) -> tuple[np.float32, int]:
    """Scale / zero point of one row from the hand formulas, in numpy float32 arithmetic (one op at a time)."""
    qmin, qmax = ref_qrange(spec.bits, signed, spec.narrow_range)
    lo32, hi32 = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))  # widened to contain 0
    if spec.symmetric:
        amax = max(-lo32, hi32) if signed else hi32
        s = np.float32(amax / np.float32(qmax))
    else:
        s = np.float32((hi32 - lo32) / np.float32(qmax - qmin))
    s = max(s, F32_EPS)
    if spec.pot_scale:
        s = np.float32(2.0 ** math.ceil(math.log2(float(s))))  # the next power of two: no clipping
    if spec.symmetric:
        return s, 0
    z = qmin - int(np.round(np.float32(lo32 / s)))  # np.round: half to even, like torch.round
    return s, min(max(z, qmin), qmax)


def ref_fake_quant(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``s * (clamp(round(x / s) + z, qmin, qmax) - z)`` with ``s`` / ``z`` already broadcastable to ``x``."""
    return s * (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z)


def bshape(x: torch.Tensor, axis: int | None) -> list[int]:
    """Shape that broadcasts a per-channel vector along ``axis`` (all ones per tensor)."""
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    return shape


def row_ranges(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor (0-d) or per-channel min / max, independent of the observers."""
    if axis is None:
        return x.min(), x.max()
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    return rows.min(dim=1).values, rows.max(dim=1).values


def sample(kind: str) -> torch.Tensor:
    """A (4, 5, 6) tensor whose channels (along axis 0 and 1) mix every sign pattern, incl. all-zero slices."""
    x = torch.randn(4, 5, 6) * torch.tensor([0.5, 2.0, 7.0, 0.01]).reshape(4, 1, 1)
    if kind == "nonneg":
        x = x.abs()
        x[:, 0] = 0.0  # an all-zero channel along axis 1
        return x
    x[0] = x[0].abs() + 0.1  # channel 0 (axis 0) strictly positive
    x[1] = -(x[1].abs()) - 0.2  # channel 1 strictly negative
    x[:, 2] = 0.0  # an all-zero channel along axis 1
    return x


def spec_grid() -> list[tuple[bool | None, bool, bool, bool]]:
    return list(itertools.product([True, False, None], [True, False], [False, True], [False, True]))


# ---------------------------------------------------------------- QuantSpec


@pytest.mark.parametrize("bits", BITS)
def test_qrange_every_bits_sign_and_narrow(bits: int) -> None:
    for signed, narrow in itertools.product([True, False], [False, True]):
        spec = QuantSpec(bits=bits, signed=signed, narrow_range=narrow)
        qmin, qmax = spec.qrange()
        assert (qmin, qmax) == ref_qrange(bits, signed, narrow)
        assert qmax - qmin + 1 == 2**bits - (1 if narrow else 0)
        assert qmin <= 0 <= qmax  # zero is always a code
        # the argument overrides the spec's signedness
        assert spec.qrange(not signed) == ref_qrange(bits, not signed, narrow)
    # adaptive (None) reads as signed unless told otherwise
    adaptive = QuantSpec(bits=bits, signed=None)
    assert adaptive.qrange() == ref_qrange(bits, True, False)
    assert adaptive.qrange(False) == ref_qrange(bits, False, False)
    assert adaptive.qrange(True) == ref_qrange(bits, True, False)


def test_qrange_known_values() -> None:
    assert QuantSpec(bits=8).qrange() == (-128, 127)
    assert QuantSpec(bits=8, narrow_range=True).qrange() == (-127, 127)
    assert QuantSpec(bits=8, signed=False).qrange() == (0, 255)
    assert QuantSpec(bits=4).qrange() == (-8, 7)
    assert QuantSpec(bits=2).qrange() == (-2, 1)
    assert QuantSpec(bits=2, signed=False).qrange() == (0, 3)


@pytest.mark.parametrize("bits", [*BITS, 16, 32])
def test_bypass_only_for_16_and_32_bits(bits: int) -> None:
    spec = QuantSpec(bits=bits)
    assert spec.bypass == (bits in (16, 32))
    assert QuantSpec(bits=4).with_bits(bits).bypass == (bits in (16, 32))


def test_with_bits_and_describe() -> None:
    spec = QuantSpec(bits=8, signed=None, symmetric=False, per_channel=True, ch_axis=1, pot_scale=True,
                     narrow_range=True)
    four = spec.with_bits(4)
    assert four.bits == 4 and spec.bits == 8
    assert (four.signed, four.symmetric, four.per_channel, four.ch_axis, four.pot_scale, four.narrow_range) == (
        None, False, True, 1, True, True)
    assert four.describe() == "(u)int4 asym per-channel(1) pot narrow"
    assert QuantSpec(bits=8).describe() == "int8 sym per-tensor fp32-scale"
    assert QuantSpec(bits=3, signed=False).describe() == "uint3 sym per-tensor fp32-scale"


# ---------------------------------------------------------------- power-of-two scale


def test_pot_scale_matches_log_rounding() -> None:
    s = torch.cat([torch.rand(1000) * 10, torch.rand(100) * 1e-3, torch.tensor([1.0, 0.5, 4.0, 2.0**-20, 3.0])])
    got = pot_scale(s)
    ref = torch.tensor([2.0 ** round(math.log2(float(v))) for v in s], dtype=torch.float32)
    assert torch.equal(got, ref)
    # exact powers of two are fixed points; the result is always a power of two
    p = torch.tensor([2.0**k for k in range(-10, 11)])
    assert torch.equal(pot_scale(p), p)
    m, _ = torch.frexp(got)
    assert torch.all(m == 0.5)


def test_pot_scale_of_zero_is_finite() -> None:
    out = pot_scale(torch.zeros(3))
    assert torch.isfinite(out).all() and (out > 0).all()


# ---------------------------------------------------------------- qparams_from_range


@pytest.mark.parametrize("gran", list(GRANULARITY))
@pytest.mark.parametrize(("signed", "symmetric", "pot", "narrow"), spec_grid())
@pytest.mark.parametrize("data", ["mixed", "nonneg"])
def test_qparams_from_range_matches_hand_formula(
    gran: str, signed: bool | None, symmetric: bool, pot: bool, narrow: bool, data: str
) -> None:
    axis = GRANULARITY[gran]
    x = sample(data)
    lo, hi = row_ranges(x, axis)
    for bits in BITS:
        spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, per_channel=axis is not None,
                         ch_axis=axis or 0, pot_scale=pot, narrow_range=narrow)
        scale, zp = qparams_from_range(lo, hi, spec)
        assert scale.dtype == torch.float32 and zp.dtype == torch.int32
        assert scale.shape == lo.shape and zp.shape == lo.shape
        # adaptive signedness: unsigned grid exactly when nothing negative was seen (one choice for all channels)
        resolved = signed if signed is not None else bool((lo < 0).any())
        assert resolved == (signed if signed is not None else data == "mixed")
        qmin, qmax = ref_qrange(bits, resolved, narrow)
        for i, (a, b) in enumerate(zip(lo.reshape(-1).tolist(), hi.reshape(-1).tolist(), strict=True)):
            s_ref, z_ref = ref_qparams(a, b, spec, resolved)
            assert scale.reshape(-1)[i].item() == float(s_ref), (bits, i, a, b)
            assert zp.reshape(-1)[i].item() == z_ref, (bits, i, a, b)
        assert torch.isfinite(scale).all() and (scale > 0).all()
        assert ((zp >= qmin) & (zp <= qmax)).all()
        if symmetric:
            assert (zp == 0).all()
        if pot:
            m, _ = torch.frexp(scale)
            assert torch.all(m == 0.5)
        # an explicit signed argument wins over the spec
        s_u, _ = qparams_from_range(lo, hi, spec, signed=False)
        s_ref_u = [ref_qparams(a, b, spec, False)[0] for a, b in zip(lo.reshape(-1).tolist(), hi.reshape(-1).tolist(),
                                                                    strict=True)]
        assert s_u.reshape(-1).tolist() == [float(v) for v in s_ref_u]


def test_qparams_known_values() -> None:
    lo, hi = torch.tensor(-1.0), torch.tensor(3.0)
    s, z = qparams_from_range(lo, hi, QuantSpec(bits=8))
    assert s.item() == pytest.approx(3.0 / 127) and z.item() == 0
    s, z = qparams_from_range(lo, hi, QuantSpec(bits=8, signed=False))
    assert s.item() == pytest.approx(3.0 / 255) and z.item() == 0
    s, z = qparams_from_range(lo, hi, QuantSpec(bits=8, signed=False, symmetric=False))
    assert s.item() == pytest.approx(4.0 / 255) and z.item() == round(1.0 / (4.0 / 255))  # 64
    s, z = qparams_from_range(lo, hi, QuantSpec(bits=8, signed=True, symmetric=False))
    assert s.item() == pytest.approx(4.0 / 255) and z.item() == -128 + 64
    s, _ = qparams_from_range(lo, hi, QuantSpec(bits=8, pot_scale=True))
    assert s.item() == 2.0**-5  # log2(3/127) = -5.4 -> up to -5
    s, _ = qparams_from_range(lo, torch.tensor(2.5), QuantSpec(bits=8, pot_scale=True))
    assert s.item() == 2.0**-5  # log2(2.5/127) = -5.67: rounding would give 2^-6 and clip 2.5 to 1.98
    # a strictly positive range is widened to contain 0: z stays at qmin
    s, z = qparams_from_range(torch.tensor(2.0), torch.tensor(4.0), QuantSpec(bits=8, signed=False, symmetric=False))
    assert s.item() == pytest.approx(4.0 / 255) and z.item() == 0


@pytest.mark.parametrize(("signed", "symmetric", "pot", "narrow"), spec_grid())
def test_all_zero_tensor_gives_finite_scale(signed: bool | None, symmetric: bool, pot: bool, narrow: bool) -> None:
    for bits, axis in itertools.product(BITS, [None, 0, 1]):
        x = torch.zeros(3, 4, 2)
        spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, per_channel=axis is not None,
                         ch_axis=axis or 0, pot_scale=pot, narrow_range=narrow)
        lo, hi = row_ranges(x, axis)
        scale, zp = qparams_from_range(lo, hi, spec)
        assert torch.isfinite(scale).all() and (scale > 0).all()
        qmin, qmax = spec.qrange(signed if signed is not None else False)
        assert ((zp >= qmin) & (zp <= qmax)).all()
        out = fake_quantize(x, scale, zp, qmin, qmax, axis)
        assert torch.equal(out, x)  # zero is exactly representable


# ---------------------------------------------------------------- fake_quantize, STE gradient


@pytest.mark.parametrize("gran", list(GRANULARITY))
@pytest.mark.parametrize(("signed", "symmetric", "pot", "narrow"), spec_grid())
def test_fake_quantize_bit_exact_and_ste_gradient(
    gran: str, signed: bool | None, symmetric: bool, pot: bool, narrow: bool
) -> None:
    axis = GRANULARITY[gran]
    calib = sample("mixed")
    lo, hi = row_ranges(calib, axis)
    # the input goes beyond the calibrated range (clamping); exact half-way points: see the tie tests below
    x = torch.cat([calib * 2.7, torch.randn(4, 5, 6) * 3], dim=2)  # 2.7x: beyond even a power-of-two grid
    clamped = 0
    for bits in BITS:
        spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, per_channel=axis is not None,
                         ch_axis=axis or 0, pot_scale=pot, narrow_range=narrow)
        scale, zp = qparams_from_range(lo, hi, spec)
        qmin, qmax = spec.qrange(signed if signed is not None else True)
        s, z = scale.reshape(bshape(x, axis)), zp.reshape(bshape(x, axis)).float()
        xx = x.clone().requires_grad_(True)
        out = fake_quantize(xx, scale, zp, qmin, qmax, axis)
        ref = ref_fake_quant(xx.detach(), s, z, qmin, qmax)
        assert torch.equal(out.detach(), ref), (bits, gran)
        out.backward(torch.ones_like(out))
        q = torch.round(xx.detach() / s) + z
        inside = ((q >= qmin) & (q <= qmax)).float()
        assert torch.equal(xx.grad, inside), (bits, gran)
        clamped += int(inside.numel() - inside.sum())
        assert inside.sum() > 0
    assert clamped > 0  # the zero-gradient case is exercised


def test_fake_quantize_ties_round_half_to_even() -> None:
    s = torch.tensor([0.25])
    z = torch.zeros(1, dtype=torch.int32)
    x = torch.tensor([0.125, 0.375, -0.125, -0.375, 0.625])  # x / s = 0.5, 1.5, -0.5, -1.5, 2.5
    out = fake_quantize(x, s, z, -128, 127)
    assert torch.equal(out, torch.tensor([0.0, 0.5, -0.0, -0.5, 0.5]))


@pytest.mark.parametrize("axis", [None, 0])
def test_fake_quantize_exact_at_power_of_two_ties(axis: int | None) -> None:
    # x / s lands exactly on k + 0.5 with a power-of-two scale: the reference formula holds bit-exactly there too
    s = torch.tensor([0.125])
    x = ((torch.arange(-140, 140).float() + 0.5) * 0.125).reshape(1, -1)
    out = fake_quantize(x, s, torch.tensor([3], dtype=torch.int32), -128, 127, axis)
    assert torch.equal(out, ref_fake_quant(x, s, torch.tensor(3.0), -128, 127))


@pytest.mark.parametrize("axis", [None, 0])
def test_quantize_to_int_agrees_with_fake_quantize_at_ties(axis: int | None) -> None:
    # the integer codes of the deployed model and the fake-quantized model must be the same values
    s = torch.tensor([0.0802])
    zp = torch.tensor([0], dtype=torch.int32)
    x = ((torch.arange(-100, 100).float() + 0.5) * s).reshape(1, -1)
    q = quantize_to_int(x, s, zp, -128, 127, axis)
    assert torch.equal(s * q, fake_quantize(x, s, zp, -128, 127, axis))


def test_fake_quantize_accepts_scalar_and_1_element_params() -> None:
    x = torch.randn(50)
    a = fake_quantize(x, torch.tensor(0.1), torch.tensor(3), -8, 7)
    b = fake_quantize(x, torch.tensor([0.1]), torch.tensor([3], dtype=torch.int32), -8, 7)
    assert torch.equal(a, b)
    assert torch.equal(a, ref_fake_quant(x, torch.tensor(0.1), torch.tensor(3.0), -8, 7))


# ---------------------------------------------------------------- round_ste, quantize_to_int


def test_round_ste_forward_and_backward() -> None:
    x = torch.tensor([-2.5, -1.5, -0.5, -0.4, 0.0, 0.4, 0.5, 0.6, 1.5, 2.5, 3.7], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y.detach(), torch.tensor([-2.0, -2.0, -0.0, -0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 4.0]))
    w = torch.arange(11, dtype=torch.float32)
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)  # identity backward, even at the ties


@pytest.mark.parametrize("gran", list(GRANULARITY))
@pytest.mark.parametrize(("signed", "symmetric"), [(True, True), (False, False), (True, False), (None, True)])
def test_quantize_to_int_codes(gran: str, signed: bool | None, symmetric: bool) -> None:
    axis = GRANULARITY[gran]
    calib = sample("mixed")
    lo, hi = row_ranges(calib, axis)
    x = calib * 1.3
    for bits in BITS:
        spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, per_channel=axis is not None,
                         ch_axis=axis or 0)
        scale, zp = qparams_from_range(lo, hi, spec)
        qmin, qmax = spec.qrange(signed if signed is not None else True)
        q = quantize_to_int(x, scale, zp, qmin, qmax, axis)
        assert q.shape == x.shape
        assert torch.equal(q, torch.round(q))
        assert q.min() >= qmin and q.max() <= qmax
        s, z = scale.reshape(bshape(x, axis)), zp.reshape(bshape(x, axis)).float()
        assert torch.equal(q, torch.clamp(torch.round(x / s) + z, qmin, qmax))
        # dequantized codes are what fake_quantize returns
        assert torch.equal(s * (q - z), fake_quantize(x, scale, zp, qmin, qmax, axis))
