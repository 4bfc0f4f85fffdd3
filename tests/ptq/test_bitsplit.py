"""Bit-Split and Stitching + ECAQ (Wang et al. 2020) against references written here: output reconstruction errors
from ``F.conv2d`` / ``F.linear`` (not from the solver's statistics), least-squares scales from ``torch.linalg.lstsq``,
plane arithmetic from the sum formula, and the model pass's reported errors recomputed from hooked layer inputs."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import bench.ptq.bitsplit as bs
from bench.models.tiny import TinyNet
from bench.ptq.bitsplit import (
    ALPHA_FLOOR,
    bit_split,
    bitsplit_model,
    bitsplit_unsupported,
    closed_form_alpha,
    ecaq_beta,
    frozen_quantizer,
    split_planes,
    stitch_planes,
)
from bench.ptq.calibrate import calibrate
from bench.ptq.frozen import FrozenWeightQuantizer
from bench.quant.debug import set_mode
from bench.quant.insert import prepare, quantizers, weighted_modules
from bench.quant.profiles import load_profile
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread keeps this file fast on a busy 2-core machine (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def act_fq(x: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """Per-tensor unsigned min-max fake quantization of a non-negative activation (the quantized input X_hat)."""
    s = x.max() / (2**bits - 1)
    return torch.clamp(torch.round(x / s), 0, 2**bits - 1) * s


def rtn_per_channel(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Round to nearest on the symmetric per-channel min-max grid ``[-(2^(b-1)-1), 2^(b-1)-1]``."""
    qmax = 2 ** (bits - 1) - 1
    s = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / qmax
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


def conv_stats(x: torch.Tensor, xh: torch.Tensor, conv: dict, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``H = X_hat X_hat^T`` and ``C = X X_hat^T`` per group from ``F.unfold`` columns, ``(G, d, d)``."""

    def cols(t: torch.Tensor) -> torch.Tensor:
        u = F.unfold(t, conv["k"], dilation=conv["dilation"], padding=conv["padding"], stride=conv["stride"])
        b, _, n = u.shape
        return u.reshape(b, groups, -1, n).permute(1, 2, 0, 3).reshape(groups, -1, b * n).double()

    cf, cq = cols(x), cols(xh)
    return cq @ cq.transpose(1, 2), cf @ cq.transpose(1, 2)


# ---------------------------------------------------------------- planes


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_split_planes_reconstructs_codes_and_stitch_is_the_sum_formula(bits: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    q = torch.randint(-qmax, qmax + 1, (7, 13), generator=gen(bits)).float()
    planes = split_planes(q, bits)
    assert planes.shape == (bits - 1, 7, 13)
    assert set(planes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    # every digit carries the code's sign (Fig. 1 b), and |q| in binary
    assert ((planes == 0) | (planes == q.sign())).all()
    mag = q.abs().long()
    for m in range(bits - 1):
        assert torch.equal(planes[m].abs().long(), (mag // 2**m) % 2)
    assert torch.equal(stitch_planes(planes), q)
    # stitching arbitrary ternary planes (mixed signs after optimisation, Fig. 1 c->d) is sum_m 2^m q_m
    mixed = torch.randint(-1, 2, (bits - 1, 5, 6), generator=gen(10 + bits)).float()
    ref = sum(2.0**m * mixed[m] for m in range(bits - 1))
    assert torch.equal(stitch_planes(mixed), ref)
    assert stitch_planes(mixed).abs().max() <= qmax
    with pytest.raises(ValueError):
        split_planes(torch.tensor([qmax + 1.0]), bits)


# ---------------------------------------------------------------- solver on single layers

LAYERS = {
    # name: (input shape, weight shape, conv geometry or None for linear, groups)
    "conv": ((24, 6, 8, 8), (10, 6, 3, 3), {"k": 3, "stride": 1, "padding": 1, "dilation": 1}, 1),
    "conv_grouped_strided": ((24, 8, 9, 9), (6, 4, 3, 3), {"k": 3, "stride": 2, "padding": 2, "dilation": 2}, 2),
    "depthwise": ((24, 12, 8, 8), (12, 1, 3, 3), {"k": 3, "stride": 1, "padding": 1, "dilation": 1}, 12),
    "linear": ((400, 40), (12, 40), None, 1),
}


def layer_case(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict | None, int]:
    xs, ws, conv, groups = LAYERS[kind]
    x = torch.relu(torch.randn(xs, generator=gen(seed)))
    w = torch.randn(ws, generator=gen(seed + 1))
    return x, act_fq(x), w, conv, groups


def layer_out(x: torch.Tensor, w: torch.Tensor, conv: dict | None, groups: int) -> torch.Tensor:
    if conv is None:
        return F.linear(x, w)
    return F.conv2d(x, w, stride=conv["stride"], padding=conv["padding"], dilation=conv["dilation"], groups=groups)


def solve_layer(kind: str, bits: int, iters_list: tuple[int, ...] = (10,)) -> tuple:
    """Statistics of one test layer, solved once per entry of ``iters_list`` (the weight estimates ``W_hat``)."""
    x, xh, w, conv, groups = layer_case(kind)
    h, c = ((xh.T @ xh).double(), (x.T @ xh).double()) if conv is None else conv_stats(x, xh, conv, groups)
    w_hats, alphas, qs = [], [], []
    for iters in iters_list:
        if conv is None:
            alpha, q = bit_split(w, h, c, bits, iters)
            w_hat = alpha[:, None] * q
        else:
            alpha, q = bit_split(w.reshape(groups, w.shape[0] // groups, -1), h.float(), c.float(), bits, iters)
            w_hat = (alpha[..., None] * q).reshape(w.shape)
            alpha, q = alpha.reshape(-1), q.reshape(w.shape[0], -1)
        w_hats.append(w_hat)
        alphas.append(alpha)
        qs.append(q)
    return x, xh, w, conv, groups, alphas, qs, w_hats


def rel_err(x: torch.Tensor, xh: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor, conv: dict | None,
            groups: int) -> float:
    y = layer_out(x, w, conv, groups).double()
    return float((y - layer_out(xh, w_hat, conv, groups).double()).pow(2).sum() / y.pow(2).sum())


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_bit_split_beats_round_to_nearest_on_the_output(kind: str, bits: int) -> None:
    x, xh, w, conv, groups, (alpha,), (q,), (w_hat,) = solve_layer(kind, bits)
    qmax = 2 ** (bits - 1) - 1
    assert (alpha > 0).all() and alpha.shape == (w.shape[0],)
    assert torch.equal(q, q.round()) and q.abs().max() <= qmax
    err_bs = rel_err(x, xh, w, w_hat, conv, groups)
    err_rtn = rel_err(x, xh, w, rtn_per_channel(w, bits), conv, groups)
    assert err_bs < err_rtn * (0.9 if bits < 4 else 0.99), (err_bs, err_rtn)


def test_batched_groups_equal_one_group_at_a_time() -> None:
    x, xh, w, conv, groups = layer_case("conv_grouped_strided")
    h, c = conv_stats(x, xh, conv, groups)
    w3 = w.reshape(groups, -1, h.shape[-1])
    alpha, q = bit_split(w3.double(), h, c, 3)
    for g in range(groups):
        a1, q1 = bit_split(w3[g].double(), h[g], c[g], 3)
        torch.testing.assert_close(a1, alpha[g])
        assert torch.equal(q1, q[g])


def test_alpha_closed_form_is_least_squares() -> None:
    d, p, n = 15, 300, 4
    x = torch.relu(torch.randn(d, p, generator=gen(3))).double()
    xh = act_fq(x, 3)
    w = torch.randn(n, d, generator=gen(4)).double()
    q = torch.randint(-3, 4, (n, d), generator=gen(5)).double()
    alpha = closed_form_alpha(w, xh @ xh.T, x @ xh.T, q)
    y = w @ x
    for k in range(n):
        a = (q[k] @ xh)[:, None]  # the output of the integer kernel on the quantized input
        ref = torch.linalg.lstsq(a, y[k][:, None]).solution.item()
        assert alpha[k].item() == pytest.approx(ref, rel=1e-9)
    # the solver's returned scale is the closed form of its returned codes (final refit)
    a_bs, q_bs = bit_split(w, xh @ xh.T, x @ xh.T, 3)
    torch.testing.assert_close(a_bs, closed_form_alpha(w, xh @ xh.T, x @ xh.T, q_bs))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_objective_never_increases_over_outer_iterations(kind: str) -> None:
    x, xh, w, conv, groups, _, _, w_hats = solve_layer(kind, 3, tuple(range(7)))
    errs = [rel_err(x, xh, w, w_hat, conv, groups) for w_hat in w_hats]
    for before, after in zip(errs, errs[1:], strict=False):
        assert after <= before * (1 + 1e-9) + 1e-12, errs
    assert errs[-1] < 0.9 * errs[0], errs  # and the iterations do something


def test_converged_ternary_codes_are_coordinatewise_optimal() -> None:
    """At 2 bits there is one plane, q itself: once converged, no single element change to -1 / 0 / +1 (alpha
    fixed) lowers ``||y - alpha q X_hat||^2`` (Eq. 8 is exact coordinate minimisation)."""
    d, p, n = 10, 120, 6
    x = torch.relu(torch.randn(d, p, generator=gen(20))).double()
    xh = act_fq(x, 3)
    w = torch.randn(n, d, generator=gen(21)).double()
    alpha, q = bit_split(w, xh @ xh.T, x @ xh.T, 2, iters=100)
    y = w @ x

    def err(k: int, qk: torch.Tensor) -> float:
        return float((y[k] - alpha[k] * (qk @ xh)).pow(2).sum())

    for k in range(n):
        base = err(k, q[k])
        for i in range(d):
            for t in (-1.0, 0.0, 1.0):
                trial = q[k].clone()
                trial[i] = t
                assert err(k, trial) >= base - 1e-9 * base, (k, i, t)


def test_start_point_and_degenerate_rows() -> None:
    d, p = 12, 200
    x = torch.relu(torch.randn(d, p, generator=gen(6))).double()
    x[5] = 0  # an input that never fires: H_55 = 0
    xh = act_fq(x)
    w = torch.randn(4, d, generator=gen(7)).double()
    w[2] = 0  # an all-zero kernel
    init = w * torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    h, c = xh @ xh.T, x @ xh.T
    # iters=0: the codes are round(init / alpha0), alpha0 = max|init_k| / Qmax (Algorithm 1, lines 10-12)
    _, q0 = bit_split(w, h, c, 3, iters=0, init=init)
    amax = init.abs().amax(1, keepdim=True).clamp_min(1e-30)
    assert torch.equal(q0, torch.round(init / (amax / 3)))
    alpha, q = bit_split(w, h, c, 3, init=init)
    assert alpha[2].item() == ALPHA_FLOOR and (q[2] == 0).all()
    assert (alpha > 0).all()
    assert torch.equal(q[:, 5], q0[:, 5])  # a dead input column keeps its starting code
    # an all-zero input: nothing to fit
    alpha_z, q_z = bit_split(w, torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 3)
    assert (alpha_z == ALPHA_FLOOR).all() and (q_z == 0).all()


def test_ecaq_beta_is_per_channel_least_squares() -> None:
    x = torch.relu(torch.randn(6, 5, 7, 7, generator=gen(8)) * torch.linspace(0.5, 2, 5)[None, :, None, None])
    xh = act_fq(x, 4)
    xh[:, 4] = 0  # a channel the quantizer zeroed
    beta = ecaq_beta(x, xh)
    for ch in range(4):
        a = xh[:, ch].reshape(-1, 1).double()
        ref = torch.linalg.lstsq(a, x[:, ch].reshape(-1, 1).double()).solution.item()
        assert beta[ch].item() == pytest.approx(ref, rel=1e-9)
    assert beta[4].item() == 1.0
    assert not torch.allclose(beta[:4], torch.ones(4, dtype=beta.dtype), atol=1e-3)  # 4-bit: beta differs from 1
    # 2-d input (linear layer): one beta per feature
    x2 = torch.relu(torch.randn(50, 3, generator=gen(9)))
    xh2 = act_fq(x2, 3)
    b2 = ecaq_beta(x2, xh2)
    for f in range(3):
        ref = torch.linalg.lstsq(xh2[:, f : f + 1].double(), x2[:, f : f + 1].double()).solution.item()
        assert b2[f].item() == pytest.approx(ref, rel=1e-9)


# ---------------------------------------------------------------- storing the result


def test_frozen_quantizer_grids() -> None:
    q = torch.tensor([[-3.0, 0.0, 3.0], [1.0, -2.0, 2.0]])
    alpha = torch.tensor([0.5, 0.25])
    for spec in (QuantSpec(bits=3, per_channel=True), QuantSpec(bits=3, symmetric=False, per_channel=True)):
        fz = frozen_quantizer(FakeQuantize(spec, "weight"), q, alpha)
        assert isinstance(fz, FrozenWeightQuantizer) and (fz.zero_point == 0).all()
        torch.testing.assert_close(fz(torch.zeros(2, 3)), alpha[:, None] * q)
    # unsigned grid [0, 7]: codes shifted by 2^(b-1)
    fz = frozen_quantizer(FakeQuantize(QuantSpec(bits=3, signed=False, per_channel=True), "weight"), q, alpha)
    assert (fz.zero_point == 4).all() and fz.int_repr.min() == 1 and fz.int_repr.max() == 7
    torch.testing.assert_close(fz.dequantized(), alpha[:, None] * q)
    with pytest.raises(ValueError, match="grid"):  # unsigned narrow range [0, 6] cannot hold +3
        frozen_quantizer(FakeQuantize(QuantSpec(bits=3, signed=False, per_channel=True, narrow_range=True),
                                      "weight"), q, alpha)
    with pytest.raises(ValueError, match="per-channel"):
        frozen_quantizer(FakeQuantize(QuantSpec(bits=3), "weight"), q, alpha)


@pytest.mark.parametrize("hw", ["academic", "tvm", "snpe", "tensorrt", "acl", "fbgemm"])
def test_bitsplit_unsupported(hw: str) -> None:
    why = bitsplit_unsupported(load_profile(hw))
    if hw in ("academic", "tvm", "snpe"):
        assert why is not None and "\n" not in why and f"hw={hw}" in why
        assert "per tensor" in why
        assert "profiles that fit: acl, fbgemm, tensorrt" in why
    else:
        assert why is None


# ---------------------------------------------------------------- the model pass


def fp_tiny() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet().train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        for _ in range(3):
            model(torch.randn(32, 1, 16, 16))
    return model.eval()


def layer_io(gm: fx.GraphModule, name: str, x: torch.Tensor, quantized: bool) -> torch.Tensor:
    """Input of layer ``name`` in the quantized model (quantizers as they are) or the FP32 model (all off)."""
    state = {n: fq.enabled for n, fq in quantizers(gm)}
    if not quantized:
        set_mode(gm, bypass=True)
    seen: list[torch.Tensor] = []
    h = gm.get_submodule(name).register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    with torch.no_grad():
        gm.eval()(x)
    h.remove()
    for n, fq in quantizers(gm):
        fq.enabled = state[n]
    return seen[0]


def direct_rel_err(m: nn.Module, x: torch.Tensor, xh: torch.Tensor, w_hat: torch.Tensor) -> float:
    """``||W X - W_hat X_hat||^2 / ||W X||^2`` (no bias) with the layer's own conv geometry."""
    w = m.folded_weight_bias()[0].detach()
    if hasattr(m, "linear"):
        y, yh = F.linear(x, w), F.linear(xh, w_hat)
    else:
        y, yh = m.conv._conv_forward(x, w, None), m.conv._conv_forward(xh, w_hat, None)
    return float((y - yh).double().pow(2).sum() / y.double().pow(2).sum())


def test_bitsplit_model_tinynet_tensorrt_w3a8() -> None:
    model = fp_tiny()
    gm = prepare(model, load_profile("tensorrt"), w_bits=3, a_bits=8)
    calib = torch.randn(64, 1, 16, 16, generator=gen(11))
    held_out = torch.randn(64, 1, 16, 16, generator=gen(12))
    calibrate(gm, calib, 32)
    gm.get_submodule("ir1_pw").weight_fq.enabled = False  # a bypassed layer is left alone
    rtn = copy.deepcopy(gm)
    out = bitsplit_model(gm, calib, batch_size=64, iters=6, progress=False)
    per_layer = out["bitsplit_layer_rel_err"]
    assert out["bitsplit_layers"] == 9 and "ir1_pw" not in per_layer
    for name, m in weighted_modules(gm):
        fq = m.weight_fq
        if name == "ir1_pw":
            assert type(fq) is FakeQuantize and not fq.enabled
            continue
        assert isinstance(fq, FrozenWeightQuantizer) and fq.enabled
        bits = fq.spec.bits
        assert bits == (8 if name in ("stem_conv", "fc") else 3)
        assert (fq.zero_point == 0).all() and fq.int_repr.abs().max() <= 2 ** (bits - 1) - 1
        assert fq.int_repr.shape == m.folded_weight_bias()[0].shape and (fq.scale > 0).all()
        assert per_layer[name][1] < per_layer[name][0], (name, per_layer[name])
    assert out["bitsplit_rel_err"] < 0.8 * out["bitsplit_rel_err_rtn"]
    # the reported errors are the layer's output errors (depthwise stride 2, 3x3, linear)
    for name in ("ir2_dw", "b1_conv2", "fc"):
        m, m_rtn = gm.get_submodule(name), rtn.get_submodule(name)
        x, xh = layer_io(gm, name, calib, False), layer_io(gm, name, calib, True)
        w = m.folded_weight_bias()[0].detach()
        # (the statistics are float32 GEMMs: about 1e-7 of ||Y||^2 absolute)
        tol = {"rel": 1e-3, "abs": 1e-6}
        assert direct_rel_err(m, x, xh, m.weight_fq.dequantized()) == pytest.approx(per_layer[name][1], **tol)
        assert direct_rel_err(m, x, xh, m_rtn.weight_fq(w)) == pytest.approx(per_layer[name][0], **tol)
    with torch.no_grad():
        ref, y_rtn, y_bs = model(held_out), rtn.eval()(held_out), gm.eval()(held_out)
    mse_rtn, mse_bs = (y_rtn - ref).pow(2).mean().item(), (y_bs - ref).pow(2).mean().item()
    assert mse_bs < 0.5 * mse_rtn, (mse_bs, mse_rtn)


class GroupedNet(nn.Module):
    """A grouped, strided, dilated conv with reflect padding after a first conv; then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect")
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("ecaq", [True, False])
def test_bitsplit_model_grouped_conv_statistics_and_ecaq_start(ecaq: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    model = GroupedNet().eval()
    with torch.no_grad():
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
    gm = prepare(model, load_profile("fbgemm"), w_bits=4, a_bits=4, first_last_bits=None)
    images = torch.randn(20, 1, 8, 8, generator=gen(13))
    calibrate(gm, images, 8)
    calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    solve = bs._solve

    def spy(weight, hessian, cross, bits, iters, init=None):  # type: ignore[no-untyped-def]
        calls.append((weight.clone(), None if init is None else init.clone()))
        return solve(weight, hessian, cross, bits, iters, init)

    monkeypatch.setattr(bs, "_solve", spy)
    torch.set_num_threads(2)
    out = bitsplit_model(gm, images, batch_size=8, iters=5, ecaq=ecaq, progress=False)
    assert torch.get_num_threads() == 2  # the pass's single thread is given back
    assert list(out["bitsplit_layer_rel_err"]) == ["conv1", "conv2", "fc"] and len(calls) == 3
    assert calls[0][1] is None  # the first layer reads the image: no ECAQ
    for (w3, init), name in zip(calls[1:], ["conv2", "fc"], strict=True):
        m = gm.get_submodule(name)
        x, xh = layer_io(gm, name, images, False), layer_io(gm, name, images, True)
        dims = (0, 2, 3) if x.dim() == 4 else (0,)  # one beta per input channel / per feature
        beta = ((x * xh).sum(dims) / (xh * xh).sum(dims)).double()
        w = m.folded_weight_bias()[0].detach().double()
        # the statistics respect groups, stride, dilation and reflect padding: reported = direct error
        reported = out["bitsplit_layer_rel_err"][name][1]
        assert direct_rel_err(m, x, xh, m.weight_fq.dequantized()) == pytest.approx(reported, rel=1e-3, abs=1e-6)
        if not ecaq:
            assert init is None
            continue
        assert init is not None
        init = init.double()
        assert not torch.allclose(init, w3.double())
        # W_beta[:, c] = beta_c W[:, c]: output o of conv2 (groups 2) reads input channels 2 (o // 3) + {0, 1}
        per_row = beta.reshape(2, 2).repeat_interleave(3, dim=0)[:, :, None, None] if name == "conv2" else beta
        torch.testing.assert_close(init, (w * per_row).reshape(init.shape), rtol=1e-5, atol=1e-7)
