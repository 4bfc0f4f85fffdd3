"""QAT algorithms end to end on the synthetic dataset: every algorithm x profile runs through the unified loop,
records carry ``init_top1`` and the curve, learned parameters are saved and actually move, bad input fails early."""

from __future__ import annotations

import json

import pytest
import torch

from bench import runner
from bench.algos import ALGOS
from bench.algos.qat import LearnableQuantizer, QATAlgorithm
from bench.errors import BenchError
from bench.models import build_model
from bench.ptq.calibrate import calibrate
from bench.quant.insert import prepare, quantizers
from bench.quant.profiles import load_profile, profile_names

# from the registries: a new QAT algorithm (one module + one YAML) or profile is covered without editing a list
HWS = profile_names()
QAT = [n for n in ALGOS.names() if ALGOS.get(n).kind == "qat"]
CELLS = [(a, h) for a in QAT for h in HWS if ALGOS.get(a).unsupported(load_profile(h)) is None]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One FP32 baseline for the whole module."""
    return tmp_path_factory.mktemp("cache")


def _cell(make_cfg, tmp_path, name, *overrides, cache):
    cfg = make_cfg("data=synthetic", "arch=tiny", "baseline.epochs=8", f"cache_dir={cache}",
                   f"runs_dir={tmp_path / 'runs'}", "train.steps_per_epoch=6", "train.log_every=2",
                   "debug.max_eval_batches=1", *overrides)
    out = tmp_path / "runs" / name
    return runner.run(cfg, out), out


@pytest.mark.parametrize(
    ("algo", "hw"), CELLS
)
def test_every_algorithm_on_every_deployable_profile(make_cfg, tmp_path, algo, hw, cache):
    rec, out = _cell(make_cfg, tmp_path, f"{algo}_{hw}", f"algo={algo}", f"hw={hw}", cache=cache)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["algo"] == algo and rec["hw"] == hw and rec["train_epochs"] == 1
    assert rec["init_top1"] is not None and rec["top1"] is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    qat = [r for r in rows if r.get("phase") == "qat"]
    assert [r["step"] for r in qat if "test_top1" not in r] == [2, 4, 6]  # the training curve
    assert [r["step"] for r in qat if "test_top1" in r] == [6]
    qp = json.loads((out / rec["extra"]["qparams_json"]).read_text())
    assert 0 < len(qp) <= rec["extra"]["quantizers"]  # the report also lists tied re-quantizers
    assert all(e["algo_quantizer"] and len(e["scale"]) >= 1 for e in qp.values())
    acts_learn = [bool(e["learned"]) for e in qp.values() if e["kind"] == "act"]
    weights_learn = [bool(e["learned"]) for e in qp.values() if e["kind"] == "weight"]
    a = ALGOS.get(algo)
    assert all(acts_learn) == bool(a.act_quantizer.lazy_params)  # DSQ / DoReFa: rule-based
    assert all(weights_learn) == bool(a.weight_quantizer.lazy_params)  # PACT's weights are DoReFa's


def _prepared(algo: str, hw: str, bits: int = 4):
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=10, in_chans=1)
    a = ALGOS.get(algo)
    assert isinstance(a, QATAlgorithm)
    profile = load_profile(hw)
    gm = prepare(model, profile, w_bits=bits, a_bits=bits, calib_weight="minmax", calib_act="minmax",
                 first_last_bits=profile.first_last_bits, factory=a.quantizer_factory(init="calib"))
    x = torch.randn(32, 1, 32, 32)
    calibrate(gm, x, 16)
    return gm, x


def test_which_algorithms_learn_their_grids():
    learns = {a for a in QAT if ALGOS.get(a).act_quantizer.lazy_params}
    assert {"lsq", "lsqplus", "pact", "qil", "apot"} <= learns and not {"dsq", "dorefa"} & learns


@pytest.mark.parametrize("algo", [a for a in QAT if ALGOS.get(a).act_quantizer.lazy_params])
def test_learned_parameters_receive_gradients_and_move(algo):
    gm, x = _prepared(algo, "academic")
    params = [p for _, fq in quantizers(gm) if isinstance(fq, LearnableQuantizer) for p in fq.parameters(False)]
    assert params
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    gm.train()
    gm(x).logsumexp(1).mean().backward()
    assert sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in params) >= len(params) // 2
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


@pytest.mark.parametrize("algo", QAT)
def test_init_equals_calibrated_uniform_grid_for_lsq_family(algo):
    # right after calibration LSQ / LSQ+ / QIL reproduce the calibrated fixed-point model exactly
    gm, x = _prepared(algo, "academic")
    gm.eval()
    with torch.no_grad():
        y = gm(x)
    assert torch.isfinite(y).all()
    if algo in ("lsq", "qil"):
        from bench.quant.insert import default_factory

        torch.manual_seed(0)
        ref = prepare(build_model("tiny", num_classes=10, in_chans=1), load_profile("academic"), w_bits=4, a_bits=4,
                      calib_weight="minmax", calib_act="minmax", first_last_bits=8, factory=default_factory)
        calibrate(ref, x, 16)
        ref.eval()
        with torch.no_grad():
            assert torch.allclose(ref(x), y, atol=1e-5)


def test_sync_writes_learned_grid_into_buffers():
    gm, x = _prepared("lsq", "tvm")
    from bench.algos.qat import sync_learned

    fq = next(fq for _, fq in quantizers(gm) if fq.kind == "act" and isinstance(fq, LearnableQuantizer))
    with torch.no_grad():
        fq.s.fill_(0.3)
    sync_learned(gm)
    assert fq.scale.item() == 0.25  # power-of-two profile: 2 ** round(log2 0.3)


def test_lsqplus_academic_activations_are_asymmetric_with_learned_offset():
    gm, _ = _prepared("lsqplus", "academic")
    acts = [fq for _, fq in quantizers(gm) if fq.kind == "act"]
    assert all(not fq.spec.symmetric and fq.z is not None for fq in acts)
    gm_t, _ = _prepared("lsqplus", "tensorrt")  # a symmetric target keeps its format
    assert all(fq.spec.symmetric for _, fq in quantizers(gm_t))


def test_academic_only_algorithms_rejected_on_hardware(make_cfg):
    assert {"qil", "apot"} <= {a for a in QAT if ALGOS.get(a).academic_only}  # MQBench Table 2
    for algo in (a for a in QAT if ALGOS.get(a).academic_only):
        for hw in (h for h in HWS if load_profile(h).hardware_target):
            with pytest.raises(BenchError, match=f"algo={algo} cannot run on hw={hw}"):
                ALGOS.get(algo).check(make_cfg(f"algo={algo}", f"hw={hw}"))
        ALGOS.get(algo).check(make_cfg(f"algo={algo}", "hw=academic"))


def test_the_record_says_the_steps_that_ran(make_cfg, tmp_path, cache):
    # a cap above the loader's length runs (and reports) the loader's length
    rec, _ = _cell(make_cfg, tmp_path, "steps", "algo=lsq", "hw=academic", "train.steps_per_epoch=60", cache=cache)
    assert rec["status"] == "ok" and rec["extra"]["train_steps_per_epoch"] == 1024 // 64  # synthetic / tiny's batch


def test_divergence_is_recorded_as_nc(make_cfg, tmp_path, cache):
    rec, _ = _cell(make_cfg, tmp_path, "nc", "algo=lsq", "hw=academic", "train.lr=1e12", cache=cache)
    assert rec["status"] == "nc" and rec["top1"] is None and "did not converge" in rec["error"]


def test_qparam_weight_decay_and_params_are_hashed(make_cfg, cache):
    a = make_cfg("algo=pact", "data=synthetic", "arch=tiny")
    b = make_cfg("algo=pact", "data=synthetic", "arch=tiny", "algo.params.qparam_weight_decay=1e-4")
    assert runner.cell_hash(a) != runner.cell_hash(b)


def test_interrupted_qat_resumes_from_partial_state(make_cfg, tmp_path, cache, monkeypatch):
    import bench.algos.qat as qat_mod
    from bench.engine import loop

    calls = {"n": 0}
    real_train = loop.train

    def crash_after_first_epoch(*args, **kwargs):
        save = kwargs["save_state"]

        def save_then_crash(state):
            save(state)
            calls["n"] += 1
            if state["epoch"] == 1 and kwargs.get("resume") is None:
                raise KeyboardInterrupt

        return real_train(*args, **{**kwargs, "save_state": save_then_crash})

    monkeypatch.setattr(qat_mod, "train", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        _cell(make_cfg, tmp_path, "r1", "algo=lsq", "train.epochs=2", cache=cache)
    partial = list((cache / "qat_partial").glob("*.pt"))
    assert len(partial) == 1
    rec, out = _cell(make_cfg, tmp_path, "r2", "algo=lsq", "train.epochs=2", cache=cache)
    assert rec["status"] == "ok" and rec["train_epochs"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r.get("phase") == "qat" and "test_top1" in r] == [2]  # epoch 1 not redone
    assert not list((cache / "qat_partial").glob("*.pt"))


@pytest.mark.parametrize("algo", QAT)
def test_state_dict_restores_learned_state_into_uncalibrated_model(algo):
    # buffers / parameters created at calibration (DSQ's EMA range, APoT's levels, LSQ's step) load into a fresh model
    gm, x = _prepared(algo, "academic")
    gm.eval()
    torch.manual_seed(0)
    a = ALGOS.get(algo)
    fresh = prepare(build_model("tiny", num_classes=10, in_chans=1), load_profile("academic"), w_bits=4, a_bits=4,
                    calib_weight="minmax", calib_act="minmax", first_last_bits=8,
                    factory=a.quantizer_factory(init="calib"))
    fresh.load_state_dict(gm.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), gm(x))


@pytest.mark.parametrize("algo", QAT)
def test_paper_initialisation_is_the_default_and_the_record_says_so(make_cfg, tmp_path, algo, cache):
    hw = "academic" if ALGOS.get(algo).academic_only else "snpe"
    rec, _ = _cell(make_cfg, tmp_path, f"{algo}_paper", f"algo={algo}", f"hw={hw}", "calib=mse", cache=cache)
    assert rec["status"] == "ok"
    assert (rec["calib_weight"], rec["calib_act"]) == ("paper", "paper")  # calib.* was not used
    assert rec["extra"]["qat_init"] == "paper"
    assert rec["extra"]["init_observers"] == list(ALGOS.get(algo).paper_calib)
    assert "calib" not in rec["config"] and rec["config"]["algo"]["init"] == "paper"
    # calib.* does not change a paper-initialised cell; it does with algo.init=calib
    base = ["data=synthetic", "arch=tiny", f"algo={algo}", f"hw={hw}"]
    assert runner.cell_hash(make_cfg(*base, "calib=mse")) == runner.cell_hash(make_cfg(*base, "calib=minmax"))
    calib = [*base, "algo.init=calib"]
    assert runner.cell_hash(make_cfg(*calib, "calib=mse")) != runner.cell_hash(make_cfg(*calib, "calib=minmax"))
    rec2, _ = _cell(make_cfg, tmp_path, f"{algo}_calib", *base[2:], "algo.init=calib", "calib=mse", cache=cache)
    assert (rec2["calib_weight"], rec2["calib_act"]) == ("mse", "mse") and rec2["extra"]["qat_init"] == "calib"


def test_paper_constants_and_observers_initialise_the_quantizers():
    # LSQ: Norm 2 mean|x| / sqrt(Qp); PACT: alpha = 6 (beta = -6 on asymmetric grids); DSQ: BatchMinMax for activations
    from bench.algos import ALGOS

    lsq = ALGOS.get("lsq").quantizer_factory(init="paper")
    spec = load_profile("tensorrt").act_spec(4)
    fq = lsq(spec, "act", "minmax")  # the paper's observer replaces the given one
    x = torch.randn(4096) * 2
    fq.observing = True
    fq(x)
    fq.observing = False
    fq.compute_qparams()
    assert fq.s.item() == pytest.approx(2 * x.abs().mean().item() / 7 ** 0.5, rel=1e-5)
    pact = ALGOS.get("pact").quantizer_factory(init="paper")
    fq = pact(load_profile("snpe").act_spec(4), "act", "mse")
    fq.observing = True
    fq(x)
    fq.observing = False
    fq.compute_qparams()
    assert fq.alpha.item() == 6.0 and fq.beta.item() == -6.0
    assert type(ALGOS.get("dsq").quantizer_factory(init="paper")(spec, "act", "minmax").observer).__name__ \
        == "BatchMinMaxObserver"


@pytest.mark.parametrize("algo", QAT)
def test_the_cell_reuses_the_loops_final_evaluation_because_it_is_the_same(make_cfg, tmp_path, algo, cache,
                                                                          monkeypatch):
    # the record's top-1 comes from the training loop's last test evaluation (no second pass): check that an
    # evaluation of the returned model, afresh, gives exactly that
    from bench.engine.evaluate import evaluate

    seen = {}
    original = QATAlgorithm.optimize

    def probe(self, ctx, gm, calib):
        out = original(self, ctx, gm, calib)
        seen["fresh"] = evaluate(gm, ctx.data.test, ctx.cfg.debug.max_eval_batches)
        seen["final"] = out.get("final_eval")
        return out

    monkeypatch.setattr(QATAlgorithm, "optimize", probe)
    hw = next(h for h in HWS if ALGOS.get(algo).unsupported(load_profile(h)) is None)
    rec, _ = _cell(make_cfg, tmp_path, f"{algo}_reuse", f"algo={algo}", f"hw={hw}", cache=cache)
    assert rec["status"] == "ok" and seen["final"] is not None
    assert (rec["top1"], rec["top5"]) == (seen["fresh"]["top1"], seen["fresh"]["top5"])
    assert (rec["top1"], rec["top5"]) == (seen["final"]["top1"], seen["final"]["top5"])
