"""``FakeQuantize``: its modes (observing / enabled / disabled / bypass), calibration errors, per-channel buffers
and state_dict round trips, observer reset and configuration. Numerics against formulas written here."""

from __future__ import annotations

import pytest
import torch

from bench.quant.observers import build_observer
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec

SYM8 = QuantSpec(bits=8, signed=True, symmetric=True)
ADAPTIVE = QuantSpec(bits=8, signed=None, symmetric=True)
ASYM4 = QuantSpec(bits=4, signed=False, symmetric=False)
PER_CH0 = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)
PER_CH1 = QuantSpec(bits=4, signed=True, symmetric=False, per_channel=True, ch_axis=1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(spec: QuantSpec, kind: str = "act", observer: str | None = "minmax") -> FakeQuantize:
    return FakeQuantize(spec, kind, None if observer is None else build_observer(observer, spec))


def calibrated(spec: QuantSpec, *batches: torch.Tensor, kind: str = "act") -> FakeQuantize:
    fq = make(spec, kind)
    fq.observing = True
    for b in batches:
        fq(b)
    fq.observing = False
    fq.compute_qparams()
    return fq


def ref_fq(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    return s * (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z)


# ---------------------------------------------------------------- modes


def test_observing_passes_through_and_feeds_observer() -> None:
    fq = make(SYM8)
    fq.observing = True
    assert not fq.active
    a, b = torch.randn(4, 10), torch.randn(4, 10) * 3
    assert torch.equal(fq(a), a) and torch.equal(fq(b), b)  # unquantized
    obs = fq.observer
    assert obs.min_val.item() == min(a.min().item(), b.min().item())
    assert obs.max_val.item() == max(a.max().item(), b.max().item())
    assert not fq.calibrated


def test_enabled_quantizes_after_compute_qparams() -> None:
    a, b = torch.randn(64), torch.randn(64) * 2
    fq = calibrated(SYM8, a, b)
    assert fq.calibrated and fq.active
    amax = max(a.abs().max().item(), b.abs().max().item())
    s = torch.tensor(amax, dtype=torch.float32) / 127
    assert fq.scale.shape == (1,) and fq.scale.item() == s.item()
    assert fq.zero_point.dtype == torch.int32 and fq.zero_point.item() == 0
    x = torch.randn(3, 64) * 3
    assert torch.equal(fq(x), ref_fq(x, s, torch.tensor(0.0), -128, 127))


def test_asymmetric_quantizer_numerics() -> None:
    a = torch.rand(200) * 5 - 1  # [-1, 4)
    fq = calibrated(ASYM4, a)
    lo, hi = min(a.min().item(), 0.0), max(a.max().item(), 0.0)
    s = (torch.tensor(hi) - torch.tensor(lo)) / 15
    z = 0 - torch.round(torch.tensor(lo) / s)
    assert fq.scale.item() == s.item() and fq.zero_point.item() == int(z)
    assert fq.qrange == (0, 15)
    x = torch.randn(100) * 3
    assert torch.equal(fq(x), ref_fq(x, s, z, 0, 15))


def test_adaptive_signedness_resolved_by_calibration() -> None:
    fq = make(ADAPTIVE)
    assert fq.signed and fq.qrange == (-128, 127)  # default before calibration
    x = torch.rand(100) * 6
    fq = calibrated(ADAPTIVE, x)
    assert not fq.signed and fq.qrange == (0, 255)
    assert fq.scale.item() == (torch.tensor(x.max().item()) / 255).item()
    fq = calibrated(ADAPTIVE, x - 1)
    assert fq.signed and fq.qrange == (-128, 127)


def test_disabled_passes_through() -> None:
    fq = calibrated(SYM8, torch.randn(50))
    fq.enabled = False
    x = torch.randn(50) * 10
    assert not fq.active and torch.equal(fq(x), x)
    fq.enabled = True
    assert not torch.equal(fq(x), x)


@pytest.mark.parametrize("bits", [16, 32])
def test_bypass_bits_pass_through(bits: int) -> None:
    fq = make(SYM8.with_bits(bits))
    x = torch.randn(20)
    assert not fq.active
    assert torch.equal(fq(x), x)  # even before calibration
    fq.compute_qparams()
    assert fq.calibrated and torch.equal(fq(x), x)


def test_uncalibrated_use_raises() -> None:
    fq = make(SYM8, kind="weight")
    with pytest.raises(RuntimeError, match="weight quantizer used before calibration"):
        fq(torch.randn(3))


def test_compute_qparams_without_observer_or_data_raises() -> None:
    with pytest.raises(RuntimeError, match="no observer"):
        make(SYM8, observer=None).compute_qparams()
    with pytest.raises(RuntimeError, match="before any update"):
        make(SYM8).compute_qparams()
    # observing without an observer: nothing to feed, the input passes through
    fq = make(SYM8, observer=None)
    fq.observing = True
    x = torch.randn(5)
    assert torch.equal(fq(x), x)


def test_set_qparams_and_properties() -> None:
    fq = make(PER_CH0, kind="weight")
    fq.set_qparams(torch.tensor([[0.5], [0.25]]), torch.tensor([1, -1]), signed=False)
    assert fq.scale.shape == (2,) and fq.scale.dtype == torch.float32
    assert fq.zero_point.tolist() == [1, -1] and fq.zero_point.dtype == torch.int32
    assert not fq.signed and fq.qrange == (0, 15) and fq.ch_axis == 0 and fq.calibrated
    assert make(SYM8).ch_axis is None
    assert "weight: int4 sym per-channel(0)" in repr(fq) and "enabled=True" in repr(fq)
    # the buffers are registered (they follow state_dict)
    assert set(fq.state_dict()) == {"scale", "zero_point", "_extra_state"}


# ---------------------------------------------------------------- per-channel buffers, state_dict


@pytest.mark.parametrize("spec", [PER_CH0, PER_CH1], ids=["axis0", "axis1"])
def test_per_channel_buffers_resize_and_state_dict_round_trip(spec: QuantSpec) -> None:
    w = torch.randn(6, 5, 3, 3) * torch.linspace(0.1, 2.0, 6).reshape(6, 1, 1, 1)
    fq = calibrated(spec, w, kind="weight")
    channels = w.shape[spec.ch_axis]
    assert fq.scale.shape == (channels,) and fq.zero_point.shape == (channels,)
    # per-channel numerics
    rows = w.movedim(spec.ch_axis, 0).reshape(channels, -1)
    lo, hi = rows.min(1).values.clamp_max(0), rows.max(1).values.clamp_min(0)
    qmin, qmax = fq.qrange
    if spec.symmetric:
        s, z = torch.maximum(-lo, hi) / qmax, torch.zeros(channels)
    else:
        s = (hi - lo) / (qmax - qmin)
        z = torch.clamp(qmin - torch.round(lo / s), qmin, qmax)
    assert torch.equal(fq.scale, s) and torch.equal(fq.zero_point.float(), z)
    shape = [1] * w.dim()
    shape[spec.ch_axis] = -1
    expected = ref_fq(w, s.reshape(shape), z.reshape(shape), qmin, qmax)
    assert torch.equal(fq(w), expected)

    fresh = make(spec, kind="weight")
    assert fresh.scale.shape == (1,) and not fresh.calibrated
    fresh.load_state_dict(fq.state_dict())
    assert fresh.calibrated
    assert torch.equal(fresh.scale, fq.scale) and torch.equal(fresh.zero_point, fq.zero_point)
    assert fresh.zero_point.dtype == torch.int32
    assert torch.equal(fresh(w), expected)


def test_state_dict_round_trip_inside_a_parent_module() -> None:
    parent = torch.nn.Module()
    parent.fq = calibrated(PER_CH0, torch.randn(4, 3), kind="weight")
    other = torch.nn.Module()
    other.fq = make(PER_CH0, kind="weight")
    other.load_state_dict(parent.state_dict())
    assert torch.equal(other.fq.scale, parent.fq.scale) and other.fq.scale.shape == (4,)


def test_state_dict_round_trip_keeps_adaptive_signedness() -> None:
    x = torch.rand(100) * 4  # non-negative: unsigned grid
    fq = calibrated(ADAPTIVE, x)
    assert not fq.signed
    fresh = make(ADAPTIVE)
    fresh.load_state_dict(fq.state_dict())
    assert fresh.qrange == fq.qrange == (0, 255)
    assert torch.equal(fresh(x), fq(x))


# ---------------------------------------------------------------- observer reset and configuration


def test_reset_observer_forgets_statistics() -> None:
    fq = make(SYM8)
    fq.observing = True
    fq(torch.tensor([-100.0, 100.0]))
    fq.reset_observer()
    assert fq.observer.min_val is None
    small = torch.tensor([-1.0, 0.5, 2.0])
    fq(small)
    fq.observing = False
    fq.compute_qparams()
    assert fq.scale.item() == (torch.tensor(2.0) / 127).item()


def test_reset_observer_gives_a_new_observer_each_time() -> None:
    fq = make(SYM8)
    first = fq.observer
    fq.reset_observer()
    second = fq.observer
    fq.reset_observer()
    assert first is not second and second is not fq.observer
    second.update(torch.ones(3))
    assert fq.observer.min_val is None  # the template was not touched


def test_configure_observer_reaches_the_reset_template() -> None:
    gamma, beta = torch.tensor([0.5, -2.0, 1.0]), torch.tensor([0.1, 0.3, -0.2])
    hi = float((beta + 6 * gamma.abs()).max())
    fq = make(ADAPTIVE, observer="bn")
    fq.configure_observer(lambda o: o.set_bn(gamma, beta, relu=True))
    assert not fq.observer.fallback
    fq.reset_observer()  # a new calibration starts from the template: the BN setting must survive
    assert not fq.observer.fallback
    fq.observing = True
    fq(torch.randn(2, 3, 4, 4) * 100)  # data far outside the BN range: ignored
    fq.observing = False
    fq.compute_qparams()
    assert not fq.signed and fq.qrange == (0, 255)  # ReLU after BN: unsigned
    assert fq.scale.item() == pytest.approx(hi / 255, rel=1e-6)
    assert fq.zero_point.item() == 0

    # setting the BN on the live observer only is lost at the next reset
    other = make(ADAPTIVE, observer="bn")
    other.observer.set_bn(gamma, beta, relu=True)
    other.reset_observer()
    assert other.observer.fallback


def test_configure_observer_without_observer_is_a_no_op() -> None:
    fq = make(SYM8, observer=None)
    calls: list[object] = []
    fq.configure_observer(calls.append)
    assert calls == []
