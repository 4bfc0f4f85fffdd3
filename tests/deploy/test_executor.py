"""The integer executor: bit-exact against integer arithmetic written out here, and close to fake quantization on
every profile."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from bench.deploy.executor import IntegerExecutor, NotExecutable
from bench.ptq.calibrate import calibrate
from bench.quant.insert import prepare, quantizers
from bench.quant.profiles import load_profile, profile_names


def _round(x: Fraction, rounding: str) -> int:
    fl = math.floor(x)
    d = x - fl
    if d != Fraction(1, 2):
        return fl + (1 if d > Fraction(1, 2) else 0)
    if rounding == "half_up":
        return fl + 1
    if rounding == "half_away":
        return fl + 1 if x > 0 else fl
    return fl + (fl % 2)


def ref_requant(acc: int, mult: float, mode: str, rounding: str) -> int:
    """One accumulator times a real multiplier, as written in the executor's docstring, with Python integers."""
    if mode == "float32":
        y = np.float32(acc) * np.float32(mult)
        return int(np.round(y))  # numpy rounds half to even
    mant, exp = math.frexp(mult)
    m = round(mant * 2**31)
    shift = 31 - exp
    if m == 2**31:
        m, shift = 2**30, shift - 1
    return _round(Fraction(acc * m, 2**shift), rounding)


def ref_forward(x: torch.Tensor, conv: nn.Conv2d, lin: nn.Linear, fq: dict, mode: str, rounding: str) -> list:
    """Quantized conv -> flatten -> linear with int arithmetic in plain Python: the accumulators of the linear."""
    sx, zx, (xmin, xmax) = float(fq["x"].scale), int(fq["x"].zero_point), fq["x"].qrange
    qx = torch.clamp(torch.round(x * fq["x"].scale.reciprocal()) + zx, xmin, xmax).to(torch.int64).tolist()

    def wcodes(w: torch.Tensor, wfq) -> tuple[list, list, list]:
        s, z = wfq.scale.double(), wfq.zero_point.long()
        shape = [-1] + [1] * (w.dim() - 1)
        codes = torch.round(wfq(w).double() / s.reshape(shape)) + z.reshape(shape)
        return codes.long().tolist(), s.tolist(), z.tolist()

    w1, s1, z1 = wcodes(conv.weight.detach(), fq["w1"])
    w2, s2, z2 = wcodes(lin.weight.detach(), fq["w2"])
    n, c, h, w = x.shape
    o = conv.out_channels
    sh, zh, (hmin, hmax) = float(fq["h"].scale), int(fq["h"].zero_point), fq["h"].qrange
    outs = []
    for b in range(n):
        hidden = []
        for oc in range(o):
            bias = round(float(conv.bias[oc].detach()) / (sx * s1[oc]))  # int32 bias at s_x * s_w
            for i in range(h):
                for j in range(w):
                    acc = bias
                    for ic in range(c):
                        for di in range(3):
                            for dj in range(3):
                                ii, jj = i + di - 1, j + dj - 1
                                if 0 <= ii < h and 0 <= jj < w:
                                    acc += (qx[b][ic][ii][jj] - zx) * (w1[oc][ic][di][dj] - z1[oc])
                    assert abs(acc) < 2**31
                    r = ref_requant(acc, sx * s1[oc] / sh, mode, rounding) + zh
                    hidden.append(min(max(r, hmin), hmax))
        row = []
        for k in range(lin.out_features):
            acc = round(float(lin.bias[k].detach()) / (sh * s2[k]))
            acc += sum((hidden[t] - zh) * (w2[k][t] - z2[k]) for t in range(len(hidden)))
            row.append(acc)
        outs.append(row)
    return outs


@pytest.mark.parametrize("mode, rounding", [("float32", "half_even"), ("fixed_point", "half_away"),
                                            ("fixed_point", "half_up")])
def test_conv_and_linear_bit_exact_against_plain_integers(mode, rounding):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 6))
    with torch.no_grad():
        model[0].bias.uniform_(-0.5, 0.5)
    model.eval()
    prof = load_profile("fbgemm")  # per-channel asymmetric weights, asymmetric activations
    gm = prepare(model, prof, w_bits=8, a_bits=8, first_last_bits=None)
    x = torch.randn(3, 3, 5, 5) * 2 + 0.7
    calibrate(gm, torch.randn(16, 3, 5, 5) * 2 + 0.7, 16)
    gm.eval()
    fqs = dict(quantizers(gm))
    acts = [fq for name, fq in fqs.items() if name.startswith("act_fq")]
    assert len(acts) == 2 and all(int(a.zero_point) != 0 for a in acts)  # really asymmetric activations
    conv_w, lin_w = (m.weight_fq for _, m in gm.named_modules() if hasattr(m, "weight_fq"))
    assert conv_w.scale.numel() == 4 and lin_w.scale.numel() == 6  # per-channel
    assert bool((conv_w.zero_point != 0).any())
    fq = {"x": acts[0], "h": acts[1], "w1": conv_w, "w2": lin_w}
    ex = IntegerExecutor(gm, mode, rounding)
    out = ex.run(x)
    assert out.q.tolist() == ref_forward(x, model[0], model[2], fq, mode, rounding)
    # and the logits are the fake-quant ones up to the int32 bias rounding and a few requantization ties
    fake = gm(x)
    assert (ex(x) - fake).abs().max() < 0.05 * fake.abs().max()


@pytest.mark.parametrize("profile", profile_names())
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_every_profile_and_bit_width_runs_and_agrees_with_fake_quant(profile, bits, tiny_calibrated):
    gm, p = tiny_calibrated(profile, bits)
    ex = IntegerExecutor(gm, p.requant, p.rounding)
    x = torch.randn(64, 1, 16, 16)
    fake, real = gm(x), ex(x)
    assert sum(s.overflows for s in ex.stats.values()) == 0
    assert all(s.bound < 2**31 for s in ex.stats.values())
    scale = fake.abs().max()
    if bits == 8:
        assert (fake.argmax(1) == real.argmax(1)).float().mean() >= 0.95
        assert (real - fake).abs().max() < 0.05 * scale
    else:
        assert torch.isfinite(real).all() and (real - fake).abs().max() < 0.5 * scale


def test_refuses_what_integer_hardware_cannot_run(tiny_calibrated):
    gm, p = tiny_calibrated("academic", 8)
    fq = next(m for n, m in quantizers(gm) if n.startswith("act_fq"))
    fq.enabled = False
    with pytest.raises(NotExecutable, match="not integer-executable: quantizer .* is off"):
        IntegerExecutor(gm)
    fq.enabled = True
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU(), nn.Flatten(), nn.Linear(2 * 14 * 14, 3)).eval()
    gm = prepare(model, load_profile("academic"), w_bits=8, a_bits=8)
    calibrate(gm, torch.randn(8, 1, 16, 16), 8)
    with pytest.raises(NotExecutable, match="not integer-executable: layer .*SiLU"):
        IntegerExecutor(gm.eval()).run(torch.randn(2, 1, 16, 16))
