"""LSQ's fused CPU kernels (``bench.quant.fused_lsq``): bit for bit the eager kernel (outputs and every gradient) on
every rounding, axis, shape class and zero-point case, including ties and the bands just outside the grid; the
fallbacks (a failed build, a probe that disagrees, a non-contiguous input); a cell with ``fused=true`` records the same
numbers under the same config hash. The eager kernel itself is tested against the paper's rules in test_lsq.py."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from bench import runner
from bench.quant import fused_divbn, fused_lsq
from bench.quant.lsq import lsq_fake_quantize
from tests.quant.compiler import needs_compiler

pytestmark = [pytest.mark.filterwarnings("ignore"), needs_compiler]


def _tricky(shape: list[int], s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Values on ties (k + 1/2 steps), on the grid's ends, in the bands just outside, and random, times the step."""
    n = torch.Size(shape).numel()
    k = torch.arange(-11, 11.25, 0.25).repeat(n // 89 + 1)[:n]
    k = k[torch.randperm(n, generator=gen)] + (torch.rand(n, generator=gen) < 0.3) * torch.randn(n, generator=gen)
    return k.reshape(shape) * s


def _grads(x, s, z, qmin, qmax, g, axis, rounding, fused: bool):
    fused_lsq.set_enabled(fused)
    xt, st = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
    zt = None if z is None else z.clone().requires_grad_(z.requires_grad)
    y = lsq_fake_quantize(xt, st, zt, qmin, qmax, g, axis, rounding)
    grad = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    y.backward(grad)
    return y.detach(), xt.grad, st.grad, None if zt is None else zt.grad


CASES = [  # (x shape, axis, grid, learned / non-zero / zero-valued / no zero point)
    ([16, 8, 5, 5], None, (-8, 7), "none"),  # a symmetric per-tensor activation (the quantizer passes z=None)
    ([8, 3, 3, 3], 0, (-8, 7), "none"),  # a symmetric per-channel weight
    ([16, 8, 5, 5], None, (-8, 7), "zero"),  # a signed per-tensor activation
    ([16, 8, 5, 5], None, (0, 15), "learned"),  # LSQ+ asymmetric activation, learned offset
    ([8, 3, 3, 3], 0, (-8, 7), "zero"),  # a per-channel conv weight
    ([12, 1, 3, 3], 0, (-7, 7), "zero"),  # a depthwise weight (size-1 input channels)
    ([10, 24], 0, (-128, 127), "fixed"),  # a linear weight, non-zero fixed zero point
    ([4, 6, 5, 5], 1, (0, 255), "learned"),  # per-channel along the activation axis
    ([7, 1, 1, 9], None, (-2, 1), "zero"),  # 2-bit, size-1 dimensions in the middle
    ([3, 5, 8], -1, (-8, 7), "learned"),  # per-channel along the last axis: runs of one element
]


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_away"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}")
def test_fused_kernels_are_bit_identical_to_eager(fresh, case, rounding):
    shape, axis, (qmin, qmax), zcase = case
    gen = torch.Generator().manual_seed(len(shape) * 31 + (axis or 0))
    cshape = [shape[axis]] if axis is not None else [1]
    s = 0.05 + 0.5 * torch.rand(cshape, generator=gen)
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = -1
    x = _tricky(shape, s.reshape(bshape) if axis is not None else s, gen)
    z = None if zcase == "none" else torch.zeros(cshape)
    if zcase not in ("zero", "none"):
        z = torch.randint(qmin, qmax + 1, cshape, generator=gen).float() + 0.3
        z.requires_grad_(zcase == "learned")
    eager = _grads(x, s, z, qmin, qmax, 0.1, axis, rounding, fused=False)
    fused = _grads(x, s, z, qmin, qmax, 0.1, axis, rounding, fused=True)
    assert fused_lsq.enabled() and fused_lsq._checked  # the fused path ran (probed, not fallen back)
    for a, b in zip(eager, fused, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)
    # and not only equal to eager: the clipped elements get no input gradient, the others all of it
    assert set(torch.unique(fused[1] / torch.linspace(-1, 1, x.numel()).reshape(x.shape)).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("axis", [None, 1])
def test_a_non_contiguous_gradient_gets_the_eager_sums(fresh, axis):
    # eager's grad * dz follows the gradient's layout and so does the order of its sum: backward takes the eager route
    gen = torch.Generator().manual_seed(3)
    s = torch.full([6] if axis == 1 else [1], 0.1)
    x = _tricky([8, 6, 25, 31], s.reshape(1, -1, 1, 1) if axis == 1 else s, gen)
    z = torch.full(s.shape, 7.0, requires_grad=True)
    grad = torch.randn(31, 25, 6, 8, generator=gen).permute(3, 2, 1, 0)  # the shape of x, not contiguous
    assert grad.shape == x.shape and not grad.is_contiguous()
    res = []
    for fused in (False, True):
        fused_lsq.set_enabled(fused)
        xt, st, zt = x.clone().requires_grad_(True), s.clone().requires_grad_(True), z.detach().clone().requires_grad_()
        lsq_fake_quantize(xt, st, zt, 0, 255, 0.1, axis).backward(grad)
        res.append((xt.grad, st.grad, zt.grad))
    assert fused_lsq.enabled()
    for a, b in zip(*res, strict=True):
        assert torch.equal(a, b) and a.stride() == b.stride()


@pytest.mark.parametrize("axis", [None, 0])
def test_a_raw_step_goes_through_positive_inside_the_fused_node(fresh, axis):
    # the quantizers pass their raw learned step with positive_eps: the fused node takes |s| floored at eps forward
    # and autograd's gradient of s.abs().clamp_min(eps) backward (0 at and below the floor, the sign of s elsewhere)
    eps = 1e-3
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, 5, 5, generator=gen)
    s = torch.tensor([-0.2, eps, 0.3, eps / 4, -0.0, 0.25])[: 6 if axis == 0 else 1]
    grad = torch.randn(x.shape, generator=gen)
    res = []
    for fused in (False, True):
        fused_lsq.set_enabled(fused)
        xt, st = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
        y = lsq_fake_quantize(xt, st, None, -8, 7, 0.1, axis, positive_eps=eps)
        y.backward(grad)
        res.append((y.detach(), xt.grad, st.grad))
    assert fused_lsq.enabled() and fused_lsq._checked
    for a, b in zip(*res, strict=True):
        assert torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))
    # independently: the step used is max(|s|, eps); its gradient is the plain LSQ one, times sign(s) above the floor
    step = s.abs().clamp(min=eps).reshape(-1, 1, 1, 1) if axis == 0 else s.abs().clamp(min=eps)
    assert torch.equal(res[1][0], torch.round(x / step).clamp(-8, 7) * step)
    sp = step.reshape(s.shape).clone().requires_grad_(True)
    lsq_fake_quantize(x, sp, None, -8, 7, 0.1, axis).backward(grad)
    want = torch.where(s.abs() > eps, sp.grad * torch.sign(s), torch.zeros_like(s))
    assert torch.equal(res[1][2], want)


def test_the_probe_catches_a_kernel_that_breaks_ties_differently(fresh, monkeypatch, caplog):
    real = fused_lsq._kernels()

    class HalfUp:  # the real kernels, but rounding half up where half to even is asked: differs at ties only
        @staticmethod
        def lsq_apply(x, s, z, qmin, qmax, mode, ch, gf, eps):
            return real.lsq_apply(x, s, z, qmin, qmax, fused_lsq.ROUNDINGS["half_up"], ch, gf, eps)

    monkeypatch.setattr(fused_lsq, "_kernels", lambda: HalfUp)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert fused_lsq.variant(torch.randn(8, 4), "half_even", True, False, None) is None
    assert "differ from the eager formulas" in caplog.text


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(fresh, monkeypatch, caplog):
    def broken():  # torch's message: ninja's echo of the command first, the reason later
        raise RuntimeError("Error building extension 'bench_lsq_0123':\n[1/2] c++ -MMD -MF lsq_kernels.o.d -O3 -c "
                           "lsq_kernels.cpp -o lsq_kernels.o\nFAILED: lsq_kernels.o\n/bin/sh: 1: c++: not found\n"
                           "ninja: build stopped: subcommand failed.")

    monkeypatch.setattr(fused_lsq, "_kernels", broken)
    x, s, z = torch.randn(4, 3, 5, 5), torch.tensor([0.2]), torch.zeros(1)
    want = _grads(x, s, z, -8, 7, 1.0, None, "half_even", fused=False)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        got = _grads(x, s, z, -8, 7, 1.0, None, "half_even", fused=True)
    assert not fused_lsq.enabled()
    fused_lsq.set_enabled(True)  # a later cell of the same process asks again: no retry, no second warning
    assert not fused_lsq.enabled()
    _grads(x, s, z, -8, 7, 1.0, None, "half_even", fused=True)
    assert [r.getMessage() for r in caplog.records] == [
        "fused LSQ kernels unavailable (RuntimeError: /bin/sh: 1: c++: not found); eager kernels, same numbers"]
    assert all(torch.equal(a, b) for a, b in zip(want[:3], got[:3], strict=True))


def test_a_nan_zero_point_gives_the_eager_nans(fresh):
    # a learned zero point gone NaN: eager's clamp to NaN bounds gives NaN codes (the cell ends "nc"), so must fused
    x, s = torch.randn(4, 3, 5, 5), torch.tensor([0.2])
    z = torch.tensor([float("nan")], requires_grad=True)
    eager = _grads(x, s, z, 0, 15, 1.0, None, "half_even", fused=False)
    fused = _grads(x, s, z, 0, 15, 1.0, None, "half_even", fused=True)
    assert fused_lsq.enabled() and fused_lsq._checked
    assert torch.isnan(fused[0]).all()
    for a, b in zip(eager, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_the_kernels_use_torchs_threads(fresh):
    # built with OpenMP: at::parallel_for splits a large tensor over torch's intra-op threads (serial otherwise)
    fused_lsq.set_enabled(True)
    x = torch.randn(64, 1 << 14)
    assert fused_lsq.variant(x, "half_even", True, False, None) is not None
    one = torch.ones(())
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fused_lsq._kernels().threads() == 2
    finally:
        torch.set_num_threads(old)
    assert torch.equal(fused_lsq.apply(x, one * 0.1, None, -8, 7, 1.0, None, "half_even"),
                       torch.round(x * (one * 0.1).reciprocal()).clamp(-8, 7) * (one * 0.1))


def test_a_probe_that_disagrees_turns_the_kernels_off(fresh, monkeypatch, caplog):
    monkeypatch.setattr(fused_lsq, "_probe", lambda *a: False)
    fused_lsq.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger="bench.quant.fused_lsq"):
        assert fused_lsq.variant(torch.randn(2, 3), "half_even", True, False, None) is None
    assert not fused_lsq.enabled() and "differ from the eager formulas" in caplog.text


def test_what_the_fused_kernels_do_not_take(fresh):
    fused_lsq.set_enabled(True)
    assert fused_lsq.variant(torch.randn(4, 6).t(), "half_even", True, False, None) is None  # non-contiguous
    assert fused_lsq.variant(torch.randn(4, 6, dtype=torch.float64), "half_even", True, False, None) is None
    fused_lsq.set_enabled(False)
    assert fused_lsq.variant(torch.randn(4, 6), "half_even", True, False, None) is None  # off
    assert not fused_lsq._checked


KERNELS = {"lsq": ("half_even", False, False, False), "pact": ("pact", "half_even"), "dorefa": ("clipq", "half_even"),
           "dsq": ("dsq", "half_even"), "qil": ("qil",), "apot": ("apot",)}  # the algorithm's quantizer kernel


@pytest.mark.parametrize("algo", list(KERNELS))
def test_a_cell_with_fused_kernels_records_the_same_numbers(fresh, make_cfg, tmp_path, algo):
    hw = "academic" if algo in ("qil", "apot") else "tensorrt"  # QIL and APoT run on the academic profile only
    common = ("data=synthetic", "arch=tiny", f"algo={algo}", f"hw={hw}", "train.steps_per_epoch=6",
              "train.log_every=2", "baseline.epochs=2", f"cache_dir={tmp_path / 'cache'}", "progress=false")
    assert runner.cell_hash(make_cfg(*common, "fused=true")) == runner.cell_hash(make_cfg(*common))
    eager = runner.run(make_cfg(*common, f"runs_dir={tmp_path / 'e'}"), tmp_path / "e" / "cell")
    assert not fused_lsq._checked
    fused = runner.run(make_cfg(*common, "fused=true", f"runs_dir={tmp_path / 'f'}"), tmp_path / "f" / "cell")
    # the cell's quantizers and strategy 4's fold (the profiles that fold) went through the fused kernels, which
    # stayed on
    assert fused_lsq.enabled() and KERNELS[algo] in fused_lsq._checked, fused_lsq._checked
    # the division with its BN as one node (fused_divbn: its shapes checked), or as two where that node does not apply
    divides = ("div_channels",) in fused_lsq._checked or bool(fused_divbn._width)
    folds = ("fold_factor",) in fused_lsq._checked and divides
    assert folds == (hw != "academic")
    assert eager["status"] == fused["status"] == "ok"
    for k in ("top1", "top5", "init_top1", "config_hash"):
        assert eager[k] == fused[k], k
    # a model that learned something, not two chance-level results (DoReFa's and DSQ's rule-based grids leave this
    # tiny model at chance after 6 steps: there, a training loss that moved)
    assert fused["top1"] > 20 or algo in ("dorefa", "dsq")
    curves = []  # the QAT training curve, every field but the epoch's seconds (the first cell also trained the FP32)
    for d in ("e", "f"):
        rows = [json.loads(line) for line in (tmp_path / d / "cell" / "metrics.jsonl").read_text().splitlines()]
        curves.append([{k: v for k, v in r.items() if k != "epoch_s"} for r in rows if r["phase"] == "qat"])
    assert curves[0] and curves[0] == curves[1]
    assert len({r.get("loss", r.get("train_loss")) for r in curves[0]}) > 2, curves[0]  # steps 2, 4, 6 and the epoch
