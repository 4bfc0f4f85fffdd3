"""The fused input gradient of a one-channel conv (``bench.quant.fused_conv``, ``fused=true``): the kernel's values
against an independent float64 formula, every result bit for bit ATen's whichever route served it, the per-key check
catching a kernel that differs, the weight and bias gradients, what the route applies to, and a QuantConvBn2d with an
input quantizer trained with fused on and off."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bench.quant import fused_conv, fused_lsq
from bench.quant.qmodules import QuantConvBn2d
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]

# (N, OC, H, W, kernel, stride, padding): the mini archs' first convs (stride 2 on 32x32 and 28x28, 16 and 8 channels),
# 32 channels, odd maps, stride 1, a 5x5 kernel, tiny maps
SHAPES = [(128, 16, 32, 32, 3, 2, 1), (37, 8, 28, 28, 3, 2, 1), (26, 32, 15, 17, 3, 2, 1), (40, 16, 12, 12, 3, 1, 1),
          (13, 16, 20, 20, 5, 2, 2), (2, 16, 3, 5, 3, 2, 1), (15, 4, 9, 40, 3, (2, 1), (1, 0))]


@pytest.fixture
def reset():
    fused_lsq.set_enabled(False)
    fused_conv._agrees.clear()
    yield
    fused_lsq.set_enabled(False)
    fused_conv._agrees.clear()


def _pair(v: int | tuple[int, int]) -> list[int]:
    return list(v) if isinstance(v, tuple) else [v, v]


def _reference(grad: torch.Tensor, w: torch.Tensor, h: int, wd: int, stride: list[int], pad: list[int]) -> torch.Tensor:
    """dL/dx[n, 0, ih, iw] = sum over oc, kh, kw with ih = oh * sh - ph + kh (and the same for w) of
    w[oc, 0, kh, kw] * grad[n, oc, oh, ow], in float64, by scattering every kernel tap."""
    n, oc, oh, ow = grad.shape
    out = torch.zeros(n, 1, h + 2 * pad[0] + stride[0] * oh, wd + 2 * pad[1] + stride[1] * ow, dtype=torch.float64)
    g, k = grad.double(), w.double()
    for kh in range(w.size(2)):
        for kw in range(w.size(3)):
            contrib = (g * k[:, 0, kh, kw].reshape(1, oc, 1, 1)).sum(1, keepdim=True)
            out[:, :, kh:kh + stride[0] * oh:stride[0], kw:kw + stride[1] * ow:stride[1]] += contrib
    return out[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_matches_the_float64_formula(shape):
    n, oc, h, wd, k, s, p = shape
    stride, pad = _pair(s), _pair(p)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, h, wd, generator=g)
    w = torch.randn(oc, 1, k, k, generator=g)
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    grad = torch.randn(y.shape, generator=g)
    got = fused_lsq.extension().conv1_input_grad(grad, w, h, wd, stride[0], stride[1], pad[0], pad[1])
    want = _reference(grad, w, h, wd, stride, pad)
    assert got.shape == (n, 1, h, wd)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def _conv(oc: int, k: int, s, p, bias: bool) -> nn.Conv2d:
    torch.manual_seed(1)
    return nn.Conv2d(1, oc, k, stride=s, padding=p, bias=bias)


def _grads(conv: nn.Conv2d, x: torch.Tensor, up: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    fused_lsq.set_enabled(fused)
    c = copy.deepcopy(conv)
    xx = x.clone().requires_grad_(True)
    out = fused_conv.conv2d(c, xx, c.weight, c.bias)
    (out * up).sum().backward()
    res = [out.detach(), xx.grad, c.weight.grad]
    return res + ([c.bias.grad] if c.bias is not None else [])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_every_route_gives_atens_bits(reset, shape, bias):
    n, oc, h, wd, k, s, p = shape
    conv = _conv(oc, k, s, p, bias)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 1, h, wd, generator=g)
    up = torch.randn(conv(x).shape, generator=g)
    assert not fused_conv._agrees  # fused off: the route is not taken
    for _ in range(3):  # the key's first call (checked), then later ones with gradients the check never saw
        up = torch.randn(up.shape, generator=g)
        want = _grads(conv, x, up, fused=False)
        got = _grads(conv, x, up, fused=True)
        assert all(fused_lsq.same_bits(a, b) for a, b in zip(want, got, strict=True))
    assert len(fused_conv._agrees) == 1


def test_the_check_catches_a_kernel_that_differs(reset, monkeypatch):
    conv = _conv(16, 3, 2, 1, False)
    x = torch.randn(8, 1, 32, 32)
    up = torch.randn(conv(x).shape)
    want = _grads(conv, x, up, fused=False)
    real = fused_conv._kernel
    monkeypatch.setattr(fused_conv, "_kernel", lambda *a: torch.nextafter(real(*a), torch.tensor(float("inf"))))
    for _ in range(2):
        got = _grads(conv, x, up, fused=True)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert list(fused_conv._agrees.values()) == [False]


def test_a_kernel_that_agreed_serves_later_calls(reset, monkeypatch):
    """Once a key agreed, the kernel's result is what backward returns (so the check, not luck, keeps the bits)."""
    conv = _conv(16, 3, 2, 1, False)
    x = torch.randn(8, 1, 32, 32)
    up = torch.randn(conv(x).shape)
    _grads(conv, x, up, fused=True)
    key = next(iter(fused_conv._agrees))
    fused_conv._agrees[key] = True  # as if it had agreed on this machine
    monkeypatch.setattr(fused_conv, "_kernel", lambda grad, x, *a: torch.full(x.shape, 7.0))
    assert torch.equal(_grads(conv, x, up, fused=True)[1], torch.full(x.shape, 7.0))


@pytest.mark.parametrize("case", ["no grad", "three channels", "groups", "dilation", "reflect", "same", "double"])
def test_what_the_route_applies_to(reset, case):
    fused_lsq.set_enabled(True)
    conv, x = _conv(16, 3, 2, 1, False), torch.randn(2, 1, 8, 8, requires_grad=True)
    if case == "no grad":
        x = x.detach()
    elif case == "three channels":
        conv, x = nn.Conv2d(3, 6, 3), torch.randn(2, 3, 8, 8, requires_grad=True)
    elif case == "groups":
        conv, x = nn.Conv2d(2, 2, 3, groups=2), torch.randn(2, 2, 8, 8, requires_grad=True)
    elif case == "dilation":
        conv = nn.Conv2d(1, 4, 3, dilation=2)
    elif case == "reflect":
        conv = nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")
    elif case == "same":
        conv = nn.Conv2d(1, 4, 3, padding="same")
    else:
        x = x.double()
    assert not fused_conv.applies(conv, x) or case == "double"
    out = fused_conv.conv2d(conv.to(x.dtype), x, conv.weight, conv.bias)
    assert out.grad_fn is None or type(out.grad_fn).__name__ != "_Conv1Backward"
    assert fused_conv.applies(_conv(16, 3, 2, 1, False), torch.randn(2, 1, 8, 8, requires_grad=True))


def test_a_first_layer_with_its_input_quantizer_trains_bit_for_bit(reset):
    """QuantConvBn2d (strategy 4) behind an 8-bit input quantizer whose step is learned: every parameter after three
    SGD steps, fused against eager."""
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
    fq = FakeQuantize(QuantSpec(bits=4, signed=True, symmetric=True, per_channel=True, ch_axis=0), "weight")
    s = (conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 7).clamp_min(1e-3)
    fq.set_qparams(s, torch.zeros_like(s, dtype=torch.int32), signed=True)
    step = nn.Parameter(torch.tensor(0.02))
    x, up = torch.randn(16, 1, 32, 32), torch.randn(16, 16, 16, 16)

    def train(fused: bool) -> list[torch.Tensor]:
        m, st = QuantConvBn2d(copy.deepcopy(conv), copy.deepcopy(bn), 4, copy.deepcopy(fq)).train(), copy.deepcopy(step)
        opt = torch.optim.SGD([*m.parameters(), st], lr=0.1)
        fused_lsq.set_enabled(fused)
        for _ in range(3):
            opt.zero_grad()
            xq = torch.fake_quantize_per_tensor_affine(x, st.detach(), 0, -128, 127)
            xq = xq + (x / st - (x / st).detach()) * st  # a learned step's gradient path through the input
            (m(xq) * up).sum().backward()
            opt.step()
        return [p.detach().clone() for p in [*m.parameters(), st]]

    want, got = train(False), train(True)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert fused_conv._agrees  # the route was taken


def test_a_gradient_that_is_not_contiguous_goes_to_aten(reset, monkeypatch):
    conv = _conv(16, 3, 2, 1, False)
    x = torch.randn(8, 1, 32, 32)
    up = torch.randn(conv(x).shape).contiguous(memory_format=torch.channels_last)  # a channels-last gradient
    want = _grads(conv, x, up, fused=False)
    monkeypatch.setattr(fused_conv, "_kernel", lambda *a: pytest.fail("the kernel ran on a non-contiguous gradient"))
    got = _grads(conv, x, up, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def test_small_inputs_stay_with_aten(reset, monkeypatch):
    """Under MIN_PIXELS input pixels the kernel never runs (a different order could pass the check by chance)."""
    conv = _conv(8, 3, 2, 1, False)
    x = torch.randn(2, 1, 8, 8)
    assert x.numel() < fused_conv.MIN_PIXELS
    up = torch.randn(conv(x).shape)
    want = _grads(conv, x, up, fused=False)
    monkeypatch.setattr(fused_conv, "_kernel", lambda *a: pytest.fail("the kernel ran on a small input"))
    got = _grads(conv, x, up, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert list(fused_conv._agrees.values()) == [False]
