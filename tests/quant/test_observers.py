"""Calibration observers against independent references (plain torch / numpy formulas written here)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.quant.observers import OBSERVERS, Observer, _kl_per_threshold, build_observer
from bench.quant.spec import QuantSpec
from bench.registry import RegistryError

QParams = Callable[[float, float], tuple[float, int]]  # (lo, hi) -> (scale, zero point)
NAMES = ["batch_minmax", "bn", "kld", "meanstd", "minmax", "mse", "norm", "quantile"]
SYM8 = QuantSpec(bits=8, signed=True, symmetric=True)
SYM4 = QuantSpec(bits=4, signed=True, symmetric=True)
ADAPT_ASYM = QuantSpec(bits=8, signed=None, symmetric=False)
PER_CH = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0)
POT = QuantSpec(bits=4, signed=None, symmetric=True, pot_scale=True)


def laplace(n: int, outliers: int = 5) -> torch.Tensor:
    """Laplace sample (global RNG, seeded per test) with a few large outliers: the case where clipping pays off."""
    x = torch.distributions.Laplace(0.0, 1.0).sample((n,))
    x[:outliers] = torch.linspace(12.0, 20.0, outliers)
    return x


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def observe(name: str, spec: QuantSpec, *batches: torch.Tensor, **options: object) -> Observer:
    obs = build_observer(name, spec, **options)
    for b in batches:
        obs.update(b)
    return obs


def ref_fake_quant(x: torch.Tensor, s: float, z: int, qmin: int, qmax: int) -> torch.Tensor:
    """``s * (clamp(round(x / s) + z, qmin, qmax) - z)`` written out."""
    return s * (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z)


# ---------------------------------------------------------------- registry, API, errors


def test_registry_names_and_unknown_name() -> None:
    assert OBSERVERS.names() == NAMES
    with pytest.raises(RegistryError) as err:
        build_observer("entropy", SYM8)
    msg = str(err.value)
    assert "\n" not in msg and "'entropy'" in msg and "accepted: " + ", ".join(NAMES) in msg
    assert isinstance(err.value, BenchError)


def test_unknown_option_is_one_line_bench_error() -> None:
    with pytest.raises(BenchError, match=r"^unknown option\(s\) p for calib minmax; accepted: none$"):
        build_observer("minmax", SYM8, p=2.0)
    assert build_observer("mse", SYM8, p=2.0).options["p"] == 2.0


@pytest.mark.parametrize("name", NAMES)
def test_compute_before_update_raises(name: str) -> None:
    obs = build_observer(name, SYM8)
    with pytest.raises(RuntimeError, match="before any update"):
        obs.compute()
    with pytest.raises(RuntimeError, match="after compute"):
        _ = obs.range


def test_channel_count_must_not_change() -> None:
    obs = observe("minmax", PER_CH, torch.randn(4, 3))
    with pytest.raises(ValueError, match="channels"):
        obs.update(torch.randn(5, 3))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", [SYM8, ADAPT_ASYM, POT])
def test_per_tensor_shapes_and_dtypes(name: str, spec: QuantSpec) -> None:
    obs = observe(name, spec, torch.randn(8, 3, 5, 5))
    scale, zp = obs.compute()
    assert scale.shape == (1,) and zp.shape == (1,)
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    lo, hi = obs.range
    assert lo.shape == (1,) and hi.shape == (1,)


@pytest.mark.parametrize("name", NAMES)
def test_per_channel_matches_per_tensor_on_each_channel(name: str) -> None:
    """Vectorised per-channel statistics equal the per-tensor observer run on each channel slice."""
    x = torch.randn(6, 4, 7, 7) * torch.tensor([0.5, 1.0, 2.0, 4.0]).reshape(1, 4, 1, 1)
    x[0, 2, 0, 0] = 30.0  # an outlier in one channel
    spec = QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=1)
    obs = observe(name, spec, x)
    scale, zp = obs.compute()
    assert scale.shape == (4,) and zp.shape == (4,)
    for c in range(4):
        one = observe(name, QuantSpec(bits=4, signed=True, symmetric=True), x[:, c])
        s1, z1 = one.compute()
        torch.testing.assert_close(scale[c : c + 1], s1)
        torch.testing.assert_close(obs.range[1][c : c + 1], one.range[1])
        assert torch.equal(zp[c : c + 1], z1)


# ---------------------------------------------------------------- signedness, power of two, edge cases


@pytest.mark.parametrize("name", NAMES)
def test_adaptive_signedness(name: str) -> None:
    spec = QuantSpec(bits=8, signed=None, symmetric=True)
    pos = observe(name, spec, torch.randn(4096).relu())
    scale, zp = pos.compute()
    assert pos.signed is False and int(zp) == 0
    neg = observe(name, spec, torch.randn(4096))
    neg.compute()
    assert neg.signed is True
    fixed = observe(name, QuantSpec(bits=8, signed=True), torch.randn(4096).relu())
    assert fixed.signed is True  # an explicit spec wins


def test_adaptive_unsigned_minmax_scale_uses_full_grid() -> None:
    x = torch.rand(1000) * 3.0
    scale, zp = observe("minmax", QuantSpec(bits=8, signed=None), x).compute()
    assert torch.equal(scale, (x.max() / 255).reshape(1)) and int(zp) == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", [POT, QuantSpec(bits=8, signed=True, symmetric=False, pot_scale=True)])
def test_power_of_two_scales(name: str, spec: QuantSpec) -> None:
    obs = observe(name, spec, laplace(4096) * 0.37)
    scale, _ = obs.compute()
    log2 = torch.log2(scale)
    assert torch.equal(log2, torch.round(log2))


EDGE = {
    "zeros": torch.zeros(3, 4),
    "constant+": torch.full((3, 4), 3.0),
    "constant-": torch.full((3, 4), -2.0),
    "single": torch.tensor([[0.7]]),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(EDGE))
@pytest.mark.parametrize("spec", [SYM8, ADAPT_ASYM, PER_CH, POT])
def test_edge_cases_give_valid_qparams(name: str, case: str, spec: QuantSpec) -> None:
    obs = observe(name, spec, EDGE[case])
    scale, zp = obs.compute()
    qmin, qmax = spec.qrange(obs.signed)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert ((zp >= qmin) & (zp <= qmax)).all()
    lo, hi = obs.range
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()


def test_empty_batch_is_ignored() -> None:
    obs = observe("minmax", SYM8, torch.empty(0, 3), torch.tensor([1.0, -2.0]), torch.empty(0))
    obs.compute()
    assert obs.range[0].item() == -2.0 and obs.range[1].item() == 1.0


# ---------------------------------------------------------------- multi-batch accumulation


@pytest.mark.parametrize("name", ["minmax", "meanstd", "norm", "quantile", "mse", "kld", "bn"])
@pytest.mark.parametrize("spec", [SYM4, ADAPT_ASYM, QuantSpec(bits=4, per_channel=True, ch_axis=1)])
def test_multi_batch_equals_concatenation(name: str, spec: QuantSpec) -> None:
    x = torch.randn(12, 3, 9) * 2 + 0.5
    x[0, :, 0] = 15.0  # the first batch holds the maxima (no KLD histogram growth)
    batches = x.split([4, 5, 3])
    one = observe(name, spec, x)
    many = observe(name, spec, *batches)
    s1, z1 = one.compute()
    s2, z2 = many.compute()
    torch.testing.assert_close(s2, s1)
    assert torch.equal(z2, z1)
    for a, b in zip(many.range, one.range, strict=True):
        torch.testing.assert_close(a, b)
    if name in ("minmax", "kld", "quantile", "mse", "bn"):  # no float accumulation: exactly equal
        assert torch.equal(s2, s1)


# ---------------------------------------------------------------- minmax


def test_minmax_reference() -> None:
    x = laplace(5000)
    obs = observe("minmax", SYM8, x[:2000], x[2000:])
    scale, zp = obs.compute()
    assert obs.range[0].item() == float(x.min()) and obs.range[1].item() == float(x.max())
    ref = np.float32(np.abs(x.numpy()).max()) / np.float32(127)
    assert scale.item() == ref and int(zp) == 0

    asym = observe("minmax", QuantSpec(bits=8, signed=False, symmetric=False), x)
    scale, zp = asym.compute()
    s_ref = (np.float32(x.max()) - np.float32(x.min())) / np.float32(255)
    assert scale.item() == s_ref and int(zp) == min(255, max(0, int(np.round(-np.float32(x.min()) / s_ref))))


# ---------------------------------------------------------------- mse


def ref_mse_search(
    x: torch.Tensor, lo: float, hi: float, qparams: QParams, qmin: int, qmax: int, p: float = 2.4, steps: int = 100
) -> tuple[float, float, list[float]]:
    """Brute force in numpy: every clip (f lo, f hi), f = i/steps; keeps the wider range on ties. Returns the best
    range and all errors (index 0 = f of 1, min-max)."""
    xn = x.numpy()
    errs, ranges = [], []
    for i in range(steps, 0, -1):
        clo, chi = float(np.float32(lo) * np.float32(i / steps)), float(np.float32(hi) * np.float32(i / steps))
        s, z = qparams(clo, chi)
        xq = np.float32(s) * (np.clip(np.rint(xn / np.float32(s)) + z, qmin, qmax) - z)
        errs.append(float(np.sum(np.abs(xq - xn).astype(np.float64) ** p)))
        ranges.append((clo, chi))
    best = int(np.argmin(errs))
    return ranges[best][0], ranges[best][1], errs


def sym_qparams(qmax: int, pot: bool = False) -> QParams:
    def f(lo: float, hi: float) -> tuple[float, int]:
        s = float(np.float32(max(-lo, hi, 0.0)) / np.float32(qmax))
        return (2.0 ** math.ceil(math.log2(s)) if pot else s), 0

    return f


def asym_qparams(qmin: int, qmax: int) -> QParams:
    def f(lo: float, hi: float) -> tuple[float, int]:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = float((np.float32(hi) - np.float32(lo)) / np.float32(qmax - qmin))
        return s, int(np.clip(qmin - np.round(np.float32(lo) / np.float32(s)), qmin, qmax))

    return f


@pytest.mark.parametrize(
    ("spec", "qparams"),
    [
        (SYM4, sym_qparams(7)),
        (QuantSpec(bits=4, signed=True, symmetric=True, pot_scale=True), sym_qparams(7, pot=True)),
        (QuantSpec(bits=3, signed=True, symmetric=False), asym_qparams(-4, 3)),
    ],
)
def test_mse_matches_brute_force_and_beats_minmax(spec: QuantSpec, qparams: QParams) -> None:
    x = laplace(8000) + 0.3
    obs = observe("mse", spec, x[:3000], x[3000:])
    obs.compute()
    qmin, qmax = spec.qrange(True)
    lo, hi, errs = ref_mse_search(x, float(x.min()), float(x.max()), qparams, qmin, qmax)
    assert obs.range[0].item() == pytest.approx(lo, rel=1e-6) and obs.range[1].item() == pytest.approx(hi, rel=1e-6)
    assert obs.range[1].item() < float(x.max())  # the outliers are clipped
    assert min(errs) <= errs[0]  # <= min-max's error (f = 1)


def test_mse_per_channel_matches_brute_force() -> None:
    w = torch.randn(3, 400) * torch.tensor([[0.1], [1.0], [3.0]])
    w[1, 0] = 9.0
    obs = observe("mse", PER_CH, w)
    obs.compute()
    for c in range(3):
        lo, hi, _ = ref_mse_search(w[c], float(w[c].min()), float(w[c].max()), sym_qparams(7), -8, 7)
        assert obs.range[1][c].item() == pytest.approx(hi, rel=1e-6)


def test_mse_error_not_worse_than_minmax_on_spec_grid() -> None:
    x = laplace(10000)
    for spec in (SYM4, POT, ADAPT_ASYM):
        mse, mm = observe("mse", spec, x), observe("minmax", spec, x)
        errs = []
        for obs in (mse, mm):
            s, z = obs.compute()
            qmin, qmax = spec.qrange(obs.signed)
            errs.append(float((ref_fake_quant(x, float(s), int(z), qmin, qmax) - x).abs().pow(2.4).sum()))
        assert errs[0] <= errs[1] * (1 + 1e-6)


def test_sample_is_bounded_uniform_and_deterministic() -> None:
    batches = [torch.full((700,), float(i)) for i in range(5)]  # value = batch index
    a = observe("quantile", SYM8, *batches, max_samples=1000)
    b = observe("quantile", SYM8, *batches, max_samples=1000)
    sample = a._sample.data
    assert sample is not None and sample.shape == (1, 1000)
    assert torch.equal(sample, b._sample.data)
    counts = torch.bincount(sample.reshape(-1).long(), minlength=5)
    assert ((counts > 120) & (counts < 280)).all(), counts  # each batch ~200: no bias to early or late batches


def test_sample_survives_inplace_changes_of_the_input() -> None:
    x = torch.randn(500)
    obs = observe("quantile", SYM8, x)
    ref = observe("quantile", SYM8, x.clone())
    x.relu_()  # e.g. an inplace ReLU right after the quantizer
    assert torch.equal(obs.compute()[0], ref.compute()[0])


# ---------------------------------------------------------------- kld


def ref_histogram(a: np.ndarray, hmax: np.float32, nbins: int = 2048) -> np.ndarray:
    idx = np.clip(np.floor(a * (np.float32(nbins) / hmax)).astype(np.int64), 0, nbins - 1)
    return np.bincount(idx, minlength=nbins).astype(np.float64)


def ref_kl_curve(hist: np.ndarray, levels: int) -> list[float]:
    """TensorRT entropy calibration written out: KL(P || Q) for i = levels..len(hist)."""
    out = []
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers into the last bin
        group = (np.arange(i) * levels) // i
        sums = np.bincount(group, weights=hist[:i], minlength=levels)  # Q quantizes the bins without outliers
        nonzero = np.bincount(group, weights=(p > 0).astype(np.float64), minlength=levels)
        q = np.where(p > 0, sums[group] / np.maximum(nonzero[group], 1), 0.0)  # expand over P's non-empty bins
        if q.sum() == 0:
            out.append(math.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        m = p > 0
        out.append(math.inf if (q[m] == 0).any() else float(np.sum(p[m] * np.log(p[m] / q[m]))))
    return out


def ref_kld_threshold(x: torch.Tensor, levels: int, nbins: int = 2048, flatten_zero_bin: bool = True) -> float:
    a = np.abs(x.numpy().astype(np.float32)).ravel()
    amax = a.max()
    hist = ref_histogram(a, amax, nbins)
    if flatten_zero_bin:
        hist[0] = hist[1]  # NVIDIA's calibrator: the spike of exact zeros (ReLU) does not count
    curve = ref_kl_curve(hist, levels)
    best = int(np.argmin(curve)) + levels
    return float(min(np.float32(best + 0.5) * (amax / np.float32(nbins)), amax))


@pytest.mark.parametrize(
    ("spec", "data", "levels"),
    [
        (SYM8, "laplace", 128),
        (QuantSpec(bits=7, signed=None), "relu", 128),  # unsigned 7 bit: 2^7 levels
        (QuantSpec(bits=6, signed=True, symmetric=False), "gauss", 32),
    ],
)
def test_kld_matches_reference(spec: QuantSpec, data: str, levels: int) -> None:
    x = {"laplace": laplace(30000), "relu": torch.randn(30000).relu(), "gauss": torch.randn(30000) * 2}[data]
    obs = observe("kld", spec, x)
    obs.compute()
    t = ref_kld_threshold(x, levels)
    lo, hi = obs.range
    assert hi.item() == pytest.approx(min(t, float(x.max())), rel=1e-6)
    assert lo.item() == pytest.approx(max(-t, float(x.min())), rel=1e-6)
    if data == "laplace":
        assert hi.item() < 0.5 * float(x.max())  # the outliers are clipped


def test_kld_zero_spike_option() -> None:
    x = torch.randn(30000).relu()
    spec = QuantSpec(bits=8, signed=None)
    plain = observe("kld", spec, x, flatten_zero_bin=False)
    plain.compute()
    assert plain.range[1].item() == pytest.approx(ref_kld_threshold(x, 256, flatten_zero_bin=False), rel=1e-6)
    flat = observe("kld", spec, x)
    flat.compute()
    assert flat.range[1].item() > plain.range[1].item()  # the zero spike no longer drags the threshold down


def test_kl_closed_form_equals_direct_kl() -> None:
    x = laplace(20000)
    a = np.abs(x.numpy())
    hist = ref_histogram(a, a.max(), 512)
    hist[100:110] = 0  # empty stretches make empty groups and empty last bins
    ours = _kl_per_threshold(torch.from_numpy(hist)[None], 64)[0].numpy()
    ref = np.array(ref_kl_curve(hist, 64))
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ours))
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-9, atol=1e-12)


def test_kld_histogram_grows_by_exact_rebinning() -> None:
    x1 = torch.randn(5000)
    x2 = torch.randn(5000) * 1.5
    x2[0] = 2.5 * float(x1.abs().max())  # needs a 3x wider histogram
    obs = observe("kld", SYM8, x1, x2)
    a1, a2 = np.abs(x1.numpy()), np.abs(x2.numpy())
    h1 = ref_histogram(a1, a1.max())
    merged = np.bincount(np.arange(2048) // 3, weights=h1, minlength=2048)
    ref = merged + ref_histogram(a2, a1.max() * np.float32(3))
    assert obs._hist is not None
    np.testing.assert_array_equal(obs._hist[0].numpy(), ref)
    assert obs._hist.sum().item() == 10000
    obs.compute()
    assert 0 < obs.range[1].item() <= float(x2.abs().max())


def test_kld_per_channel_matches_reference() -> None:
    w = torch.randn(3, 2000) * torch.tensor([[0.2], [1.0], [5.0]])
    obs = observe("kld", QuantSpec(bits=8, signed=True, per_channel=True), w)
    obs.compute()
    for c in range(3):
        t = ref_kld_threshold(w[c], 128)
        assert obs.range[0][c].item() == pytest.approx(max(-t, float(w[c].min())), rel=1e-6)
        assert obs.range[1][c].item() == pytest.approx(min(t, float(w[c].max())), rel=1e-6)


# ---------------------------------------------------------------- quantile


def test_quantile_matches_torch_and_numpy() -> None:
    x = laplace(40000).reshape(40, 1000)
    q = 0.9999
    sym = observe("quantile", SYM8, x[:15], x[15:])
    sym.compute()
    t = torch.quantile(x.abs().flatten(), q)
    assert sym.range[1].item() == float(torch.minimum(t, x.max()))
    assert sym.range[0].item() == float(torch.maximum(-t, x.min()))
    # numpy with the same float32 q (torch.quantile rounds q to the input's dtype)
    assert sym.range[1].item() == pytest.approx(float(np.quantile(np.abs(x.numpy()), float(np.float32(q)))), rel=1e-5)

    asym = observe("quantile", ADAPT_ASYM, x)
    asym.compute()
    assert asym.range[0].item() == float(torch.quantile(x.flatten(), 1 - q))
    assert asym.range[1].item() == float(torch.quantile(x.flatten(), q))

    pc = observe("quantile", QuantSpec(bits=8, symmetric=False, per_channel=True), x, q=0.99)
    pc.compute()
    assert torch.equal(pc.range[0], torch.quantile(x, 1 - 0.99, dim=1))
    assert torch.equal(pc.range[1], torch.quantile(x, 0.99, dim=1))


# ---------------------------------------------------------------- norm, meanstd


def test_norm_is_lsq_init() -> None:
    x = laplace(6000)
    obs = observe("norm", SYM4, x[:1000], x[1000:])
    scale, zp = obs.compute()
    s = 2.0 * (x.double().abs().sum() / x.numel()) / math.sqrt(7)
    assert torch.equal(obs.range[1], (s * 7).float().reshape(1))
    assert torch.equal(obs.range[0], (-s * 7).float().reshape(1))
    assert scale.item() == pytest.approx(float(s), rel=1e-6) and int(zp) == 0

    unsigned = observe("norm", QuantSpec(bits=4, signed=None), x.abs())
    scale, _ = unsigned.compute()
    s = 2.0 * (x.double().abs().sum() / x.numel()) / math.sqrt(15)
    assert unsigned.signed is False and scale.item() == pytest.approx(float(s), rel=1e-6)

    asym = observe("norm", QuantSpec(bits=4, signed=None, symmetric=False), x)
    scale, zp = asym.compute()
    s = 2.0 * (x.double().abs().sum() / x.numel()) / math.sqrt(7)
    span = s * 15
    mid = (x.double().min() + x.double().max()) / 2
    lo = min(max(float(mid - span / 2), float(x.double().min())), 0.0)  # centred, inside the data, 0 kept
    assert asym.range[0].item() == pytest.approx(lo, rel=1e-6)
    assert asym.range[1].item() == pytest.approx(lo + float(span), rel=1e-6)
    assert scale.item() == pytest.approx(float(s), rel=1e-6)
    assert int(zp) == int(np.clip(-8 - np.round(lo / scale.item()), -8, 7))
    # a span wider than non-negative data starts at 0 (zero point at qmin, as LSQ+); signed weights on an unsigned
    # grid keep zero inside the range with positive and negative values representable
    relu = observe("norm", QuantSpec(bits=8, signed=False, symmetric=False), x.abs())
    assert relu.compute()[1].item() == 0 and relu.range[0].item() == 0.0
    w = observe("norm", QuantSpec(bits=8, signed=False, symmetric=False), x)
    w.compute()
    assert w.range[0].item() < 0 < w.range[1].item()


@pytest.mark.parametrize("k", [3.0, 2.6])
def test_meanstd_reference(k: float) -> None:
    x = laplace(6000).numpy().astype(np.float64)
    obs = observe("meanstd", SYM8, torch.from_numpy(x[:2500]).float(), torch.from_numpy(x[2500:]).float(), k=k)
    obs.compute()
    xf = x.astype(np.float32).astype(np.float64)
    mean, std = xf.mean(), xf.std()
    lo, hi = max(mean - k * std, xf.min()), min(mean + k * std, xf.max())
    assert obs.range[0].item() == pytest.approx(lo, rel=1e-6, abs=1e-7)
    assert obs.range[1].item() == pytest.approx(hi, rel=1e-6)
    assert obs.range[1].item() < xf.max()

    # a uniform tensor: mean +- 3 std would exceed the data, so the range stays the observed one
    u = torch.rand(5000)
    wide = observe("meanstd", QuantSpec(signed=None), u)
    wide.compute()
    assert wide.range[0].item() == float(u.min()) and wide.range[1].item() == float(u.max())


# ---------------------------------------------------------------- bn


def test_bn_range_from_gamma_beta() -> None:
    gamma = torch.tensor([0.5, -1.0, 2.0, 0.1])
    beta = torch.tensor([0.2, 1.0, -3.0, 4.0])
    lo_ref, hi_ref = beta - 6 * gamma.abs(), beta + 6 * gamma.abs()

    obs = build_observer("bn", QuantSpec(bits=8, signed=None))
    obs.set_bn(gamma, beta, relu=False)
    scale, _ = obs.compute()  # no data needed with a BN
    assert not obs.fallback and obs.signed is True
    assert torch.equal(obs.range[0], lo_ref.min().reshape(1)) and torch.equal(obs.range[1], hi_ref.max().reshape(1))
    assert scale.item() == np.float32(float(max(-lo_ref.min(), hi_ref.max()))) / np.float32(127)

    relu = build_observer("bn", QuantSpec(bits=8, signed=None))
    relu.set_bn(gamma, beta, relu=True)
    relu.compute()
    assert relu.signed is False and relu.range[0].item() == 0.0 and relu.range[1].item() == float(hi_ref.max())

    relu6 = build_observer("bn", QuantSpec(bits=8, signed=None))
    relu6.set_bn(gamma, beta, relu=True, relu_max=6.0)
    relu6.compute()
    assert relu6.range[1].item() == 6.0 and relu6.signed is False

    pc = build_observer("bn", QuantSpec(bits=8, per_channel=True, ch_axis=1), k=3.0)
    pc.set_bn(gamma, beta, relu=False)
    pc.update(torch.randn(2, 4, 3, 3))
    scale, _ = pc.compute()
    assert scale.shape == (4,)
    assert torch.equal(pc.range[0], beta - 3 * gamma.abs()) and torch.equal(pc.range[1], beta + 3 * gamma.abs())


def test_bn_falls_back_to_minmax() -> None:
    x = laplace(3000)
    obs = observe("bn", SYM8, x)
    mm = observe("minmax", SYM8, x)
    assert obs.fallback
    assert torch.equal(obs.compute()[0], mm.compute()[0])
    assert all(torch.equal(a, b) for a, b in zip(obs.range, mm.range, strict=True))


def test_every_observer_feeds_a_fake_quantize() -> None:
    """The quantizer's protocol: update(x.detach()), compute() -> (scale, zp), observer.signed."""
    from bench.quant.quantizer import FakeQuantize

    x = torch.randn(16, 3, 4, 4).relu()
    for name in NAMES:
        fq = FakeQuantize(QuantSpec(bits=4, signed=None), "act", build_observer(name, QuantSpec(bits=4, signed=None)))
        fq.observing = True
        fq(x)
        fq.observing = False
        fq.compute_qparams()
        assert fq.signed is False and fq.calibrated
        y = fq(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_batch_minmax_is_an_ema_of_batch_averaged_per_sample_ranges() -> None:
    # DSQ's BatchMinMax (MQBench App. F): per batch the mean over samples of each sample's min / max, EMA 0.9
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 4, 4) * (i + 1) + i for i in range(3)]
    obs = build_observer("batch_minmax", QuantSpec(bits=8, signed=True, symmetric=False))
    lo = hi = None
    for b in batches:
        obs.update(b)
        blo = float(torch.stack([s.min() for s in b]).mean())
        bhi = float(torch.stack([s.max() for s in b]).mean())
        lo, hi = (blo, bhi) if lo is None else (0.9 * lo + 0.1 * blo, 0.9 * hi + 0.1 * bhi)
    obs.compute()
    got_lo, got_hi = obs.range
    assert got_lo.item() == pytest.approx(lo, rel=1e-6) and got_hi.item() == pytest.approx(hi, rel=1e-6)


@pytest.mark.parametrize("name", ["minmax", "norm", "mse", "kld"])
def test_pot_snap_mse_takes_the_power_of_two_with_the_smaller_error(name: str) -> None:
    # 2^ceil never clips the calibrated range, 2^round is nearer in the log domain; mse keeps the one that quantizes
    # the observed data better (squared error), computed here independently from the two candidates
    torch.manual_seed(4)
    x = torch.randn(64, 8, 5, 5) * 0.7
    x[0, 0, 0, 0] = 5.0
    base = QuantSpec(bits=4, signed=True, symmetric=True, pot_scale=True)
    got, _ = observe(name, dataclasses.replace(base, pot_snap="mse"), x).compute()
    s_up, _ = observe(name, dataclasses.replace(base, pot_snap="ceil"), x).compute()
    s_rd, _ = observe(name, dataclasses.replace(base, pot_snap="round"), x).compute()

    def err(s: torch.Tensor) -> float:
        return float(((torch.clamp(torch.round(x / s), -8, 7) * s - x) ** 2).sum())

    assert float(got) in (float(s_up), float(s_rd))
    assert err(got) == pytest.approx(min(err(s_up), err(s_rd)), rel=1e-5)
