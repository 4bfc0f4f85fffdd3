"""The findings scorecard: verdict rules against hand-computed Student-t / Welch intervals, and claims tested on fake
records whose expected differences are computed here from the inputs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate import findings as F
from bench.aggregate import records as R
from bench.aggregate.claims import CLAIMS
from tests.aggregate.conftest import make_record

T2 = 4.3027  # t_{0.975, 2}
T4 = 2.7764  # t_{0.975, 4}


def _ci(xs: list[float], t: float) -> tuple[float, float, float]:
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, m - t * sd / math.sqrt(n), m + t * sd / math.sqrt(n)


def test_greater_rule() -> None:
    ev = F.greater(pd.Series([2.0, 2.1, 2.2]), "x")
    m, lo, hi = _ci([2.0, 2.1, 2.2], T2)
    assert ev.verdict == F.HOLDS and ev.n == 3
    assert ev.mean == pytest.approx(m) and ev.lo == pytest.approx(lo) and ev.hi == pytest.approx(hi)
    assert F.greater(pd.Series([-2.0, -2.1, -2.2]), "x").verdict == F.FAILS
    noisy = F.greater(pd.Series([1.0, 2.0, 3.0]), "x")  # 2 +- 4.3027 / sqrt(3): the CI holds 0
    assert noisy.verdict == F.NOT_SIG and noisy.lo == pytest.approx(2 - T2 / math.sqrt(3))
    assert F.greater(pd.Series([5.0]), "x").verdict == F.NOT_SIG  # one unit: no interval
    assert F.greater(pd.Series(dtype=float), "x").verdict == F.NO_DATA


def test_equivalent_rule() -> None:
    assert F.equivalent(pd.Series([0.1, 0.2, 0.0]), 1.0, "x").verdict == F.HOLDS  # [-0.148, 0.348]
    assert F.equivalent(pd.Series([3.0, 3.1, 3.2]), 1.0, "x").verdict == F.FAILS
    assert F.equivalent(pd.Series([-3.0, -3.1, -3.2]), 1.0, "x").verdict == F.FAILS
    assert F.equivalent(pd.Series([0.5, 1.5, 1.0]), 1.0, "x").verdict == F.NOT_SIG  # 1 +- 1.24 straddles 1
    assert F.equivalent(pd.Series([0.5, 1.5, 1.0]), 3.0, "x").verdict == F.HOLDS


def test_welch_matches_the_formula() -> None:
    a, b = [90.0, 90.5, 89.5], [80.0, 81.0, 79.0, 80.5, 79.5]
    d, lo, hi = F.welch(a, b)
    va, vb = 0.25 / 3, 0.625 / 5  # sample variances 0.25 and 0.625 over n
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4)  # 5.67 -> t_{0.975, 5}
    half = 2.5706 * math.sqrt(va + vb)
    assert math.floor(df) == 5
    assert d == pytest.approx(10.0) and lo == pytest.approx(10 - half) and hi == pytest.approx(10 + half)
    assert math.isnan(F.welch([1.0], [2.0, 3.0])[1])


def _settings(data: dict[tuple[str, str], list[float]]) -> pd.Series:
    rows = [(s, a, seed, v) for (s, a), vs in data.items() for seed, v in enumerate(vs)]
    df = pd.DataFrame(rows, columns=["setting", "algo", "seed", "acc"])
    return df.set_index(["setting", "algo", "seed"])["acc"]


def test_varies_rule() -> None:
    reversal = _settings({("s1", "A"): [90, 90.1, 89.9], ("s1", "B"): [80, 80.2, 79.8],
                          ("s2", "A"): [70, 70.1, 69.9], ("s2", "B"): [75, 75.1, 74.9]})
    ev = F.varies(reversal, "algo", "x")
    assert ev.verdict == F.HOLDS and ev.n == 2 and "A > B on s1" in ev.detail and "B > A on s2" in ev.detail
    always_a = _settings({("s1", "A"): [90, 91, 89], ("s1", "B"): [80, 81, 79],
                          ("s2", "A"): [76, 77, 75], ("s2", "B"): [75, 76, 74]})
    assert F.varies(always_a, "algo", "x").verdict == F.FAILS
    noisy = _settings({("s1", "A"): [90, 90.1, 89.9], ("s1", "B"): [80, 80.2, 79.8],
                       ("s2", "A"): [70, 80, 60], ("s2", "B"): [71, 81, 61]})  # B best on s2, not significantly
    assert F.varies(noisy, "algo", "x").verdict == F.NOT_SIG


def _qat(**kw: object) -> dict:
    return make_record(kind="qat", num_classes=10, calib=("paper", "paper"), **kw)


def _evaluate(recs: list[dict], claim_id: str) -> F.Evidence:
    frame = R.dedup(R.records_frame([(Path(f"mem/{i}/result.json"), r) for i, r in enumerate(recs)]))
    claim = next(c for c in CLAIMS if c.id == claim_id)
    return F.evaluate(frame, [claim])[0].evidence


def test_hw_gap_claim_pairs_academic_and_profiles_per_seed() -> None:
    recs, expected = [], []
    for seed, (acad, trt, tvm) in enumerate([(90.0, 88.0, 80.0), (90.5, 88.2, 81.0), (89.5, 87.9, 79.0)]):
        for hw, top1 in (("academic", acad), ("tensorrt", trt), ("tvm", tvm)):
            recs.append(_qat(algo="lsq", hw=hw, arch="resnet18_mini", seed=seed, top1=top1))
        expected += [acad - trt, acad - tvm]
    ev = _evaluate(recs, "mq-hw-gap")
    m, lo, hi = _ci(expected, 2.5706)  # 6 units: t_{0.975, 5}
    assert ev.verdict == F.HOLDS and ev.n == 6
    assert ev.mean == pytest.approx(m) and ev.lo == pytest.approx(lo) and ev.hi == pytest.approx(hi)
    assert "100% of the" in ev.detail


def test_not_converged_cells_count_at_chance() -> None:
    recs = []
    for seed in range(3):
        recs.append(_qat(algo="lsq", hw="academic", arch="mobilenetv2_mini", seed=seed, top1=80.0 + seed))
        recs.append(_qat(algo="dorefa", hw="academic", arch="mobilenetv2_mini", seed=seed, top1=None, status="nc"))
    ev = _evaluate(recs, "mq-dorefa-depthwise")
    assert ev.verdict == F.HOLDS and ev.mean == pytest.approx(81.0 - 10.0)  # LSQ - chance (100 / 10 classes)


def test_pact_fold_claim_on_table5_cells() -> None:
    recs, expected = [], []
    for seed in range(2):
        for arch in ("resnet18_mini", "mobilenetv2_mini"):
            lsq = {-1: 90.0, 0: 89.0, 1: 89.5, 2: 89.6, 3: 89.7, 4: 89.8}
            pact = {-1: 90.0, 0: 10.0, 1: 10.0, 2: 10.5, 3: 11.0, 4: 85.0 + seed}
            for algo, accs in (("lsq", lsq), ("pact", pact)):
                for k, top1 in accs.items():
                    recs.append(_qat(algo=algo, arch=arch, seed=seed, top1=top1, quant={"bn_fold": k}))
            expected += [(pact[-1] - pact[k]) - (lsq[-1] - lsq[k]) for k in range(5)]
    ev = _evaluate(recs, "mq-pact-fold")
    assert ev.verdict == F.HOLDS and ev.n == len(expected) == 20
    assert ev.mean == pytest.approx(sum(expected) / len(expected))
    s4 = _evaluate(recs, "mq-fold-s4")  # PACT 4 - max(PACT 0..3), per arch and seed: "works best"
    assert s4.verdict == F.HOLDS and s4.mean == pytest.approx(85.5 - 11)
    s0 = _evaluate(recs, "mq-fold-s0")  # min(LSQ 1..4) - LSQ 0, resnet18_mini (Fig. 8), per seed: "the lowest"
    assert s0.verdict == F.HOLDS and s0.n == 2 and s0.mean == pytest.approx(89.5 - 89.0)
    s1 = _evaluate(recs, "mq-fold-s1")  # LSQ 1 - mean(2, 3, 4) = -0.2 on every unit: inside +-1
    assert s1.verdict == F.HOLDS and s1.mean == pytest.approx(89.5 - (89.6 + 89.7 + 89.8) / 3)


def test_cle_and_bias_correction_claims_read_per_tensor_int8_on_folded_weights() -> None:
    recs, cle_gain, bc_gain = [], [], []
    mse = ("mse", "mse")
    for seed in range(3):
        for arch in ("mobilenetv2_mini", "efficientnet_lite0_mini", "resnet18_mini"):
            for bits in ((8, 8), (4, 8)):
                folded, cle, cle_bc, unfolded = 10.0 + seed + bits[0], 85.0 - seed, 85.5 + seed / 10, 89.0
                for top1, quant, ptq in ((folded, {"bn_fold": 0}, {}), (cle, {}, {"cle": True}), (unfolded, {}, {}),
                                         (cle_bc, {}, {"cle": True, "bias_correction": "analytic"}),
                                         (99.0, {}, {"cle": True, "bias_correction": "empirical"})):
                    recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw="academic", arch=arch,
                                            w=bits[0], a=bits[1], seed=seed, calib=mse, quant=quant, ptq=ptq,
                                            top1=top1))
                if arch != "resnet18_mini" and bits == (8, 8):  # depthwise minis, INT8 (the paper's Tables 3-4)
                    cle_gain.append(cle - folded)
                    bc_gain.append(cle_bc - cle)
    ev = _evaluate(recs, "wp-cle")  # not CLE - unfolded RTN (-4 .. -6: would not hold)
    assert ev.verdict == F.HOLDS and ev.n == len(cle_gain) == 6
    assert ev.mean == pytest.approx(sum(cle_gain) / len(cle_gain))
    bc = _evaluate(recs, "wp-bias-corr")  # analytic, not the empirical cells
    assert bc.verdict == F.HOLDS and bc.n == 6 and bc.mean == pytest.approx(sum(bc_gain) / len(bc_gain))


def test_hardware_claims_read_the_papers_subsets() -> None:
    recs = []
    for seed in range(3):
        for hw, per_channel_best, collapsed in (("fbgemm", 80.0, 10.0), ("snpe", 78.0, 60.0)):
            for calib, top1 in ((("minmax", "minmax"), per_channel_best + seed), (("kld", "minmax"), collapsed)):
                recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw=hw, arch="mobilenetv2_mini", w=8,
                                        a=8, seed=seed, calib=calib, top1=top1))
        for calib_size, gain in ((4096, 40.0 + seed), (1024, -30.0)):  # only Table 11's 4096-image cells count
            recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw="academic", arch="mobilenetv2_mini",
                                    seed=seed, calib=("minmax", "minmax"), ptq={"bn_recalib": True}, init=1.0,
                                    top1=1.0 + gain, calib_size=calib_size))
    pc = _evaluate(recs, "mq-ptq-per-channel")  # best calibration per profile: 80 - 78, not the pooled pairs
    assert pc.verdict == F.HOLDS and pc.n == 3 and pc.mean == pytest.approx(2.0)
    bn = _evaluate(recs, "mq-bn-calib")
    assert bn.verdict == F.HOLDS and bn.n == 3 and bn.mean == pytest.approx(41.0)


def test_spread_over_algorithms_needs_every_algorithm() -> None:
    recs = []
    for arch, spread in (("resnet18_mini", 0.5), ("resnet50_mini", 0.7)):
        for seed in range(2):
            for i, algo in enumerate(("lsq", "apot", "qil", "dsq", "pact", "dorefa")):
                recs.append(_qat(algo=algo, arch=arch, seed=seed, top1=90.0 - spread * i / 5))
    recs.append(_qat(algo="lsq", arch="resnet18_mini", seed=2, top1=50.0))  # seed 2 has one algorithm: no spread
    ev = _evaluate(recs, "mq-algos-close")
    assert ev.n == 4 and ev.mean == pytest.approx(0.6) and ev.verdict == F.HOLDS


def test_claims_without_cells_say_no_data() -> None:
    frame = R.dedup(R.records_frame([(Path("mem/0/result.json"), _qat(algo="lsq"))]))
    found = F.evaluate(frame, CLAIMS)
    assert len(found) == len(CLAIMS) == len({c.id for c in CLAIMS})
    assert {f.evidence.verdict for f in found} <= set(F.VERDICTS)
    assert next(f for f in found if f.claim.id == "wp-adaround").evidence.verdict == F.NO_DATA


def test_aggregate_writes_the_scorecard_and_notes_follow_their_verdict(tmp_path: Path) -> None:
    from bench.aggregate import aggregate
    from bench.results import write_json_atomic

    for seed in range(3):
        for hw, top1 in (("academic", 90.0 + seed / 10), ("tvm", 80.0 - seed)):
            write_json_atomic(tmp_path / "runs" / f"{hw}{seed}" / "result.json",
                              _qat(algo="lsq", hw=hw, arch="resnet18_mini", seed=seed, top1=top1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "findings_notes.yaml").write_text(
        "mq-hw-gap: {verdict: holds, note: measured on TVM only}\n"
        "mq-tvm-lowest: {verdict: does not hold, note: stale note for another verdict}\n")
    aggregate(tmp_path / "runs", out=out, plots=False, log=lambda s: None)
    md = (out / "findings.md").read_text()
    csv = pd.read_csv(out / "findings.csv")
    assert list(csv["id"]) == [c.id for c in CLAIMS]
    row = csv.set_index("id").loc["mq-hw-gap"]
    assert row["verdict"] == F.HOLDS and row["note"] == "measured on TVM only" and row["units"] == 3
    assert "stale note" not in md
    k = F.counts(F.evaluate(R.dedup(R.records_frame(R.load_records(tmp_path / "runs")[0])), CLAIMS))
    assert f"{len(CLAIMS)} claims: {k[F.HOLDS]} hold, {k[F.FAILS]} do not hold, {k[F.NOT_SIG]} not significant" in md


def _full_grid(rng: random.Random) -> list[dict]:
    """Records of every experiment the claims read (fewer archs and seeds than the real grid), random top-1."""
    archs = ("resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini")
    recs: list[dict] = []

    def acc() -> float:
        return round(rng.uniform(60, 90), 2)

    for seed in range(3):
        for arch in archs:
            for hw in ("academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"):
                for algo in ("lsq", "dsq", "pact", "dorefa") + (("apot", "qil") if hw == "academic" else ()):
                    recs.append(_qat(algo=algo, hw=hw, arch=arch, seed=seed, top1=acc()))
            for hw in ("snpe", "fbgemm"):
                for ca in ("minmax", "mse"):
                    for cw in ("minmax", "mse"):
                        recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw=hw, arch=arch, w=8, a=8,
                                                seed=seed, calib=(ca, cw), top1=acc(), fp32=91.0))
            for bits in ((4, 8), (3, 8), (2, 4), (4, 4)):
                for hw in ("academic", "tensorrt"):
                    for algo, calib, ptq in (("ptq", ("minmax", "minmax"), {}), ("ptq", ("mse", "mse"), {}),
                                             ("ptq", ("mse", "mse"), {"cle": True}),
                                             ("ptq", ("mse", "mse"), {"cle": True, "bias_correction": "empirical"}),
                                             ("adaround", ("mse", "mse"), {}), ("brecq", ("mse", "mse"), {})) + (
                            (("bitsplit", ("mse", "mse"), {}), ("ioso", ("mse", "mse"), {})) if hw == "tensorrt"
                            else ()):
                        recs.append(make_record(kind="ptq", num_classes=10, algo=algo, hw=hw, arch=arch, w=bits[0],
                                                a=bits[1], seed=seed, calib=calib, ptq=ptq, top1=acc()))
            for bits in ((8, 8), (4, 8), (3, 8), (2, 4), (4, 4)):  # experiment=ptq_white_paper (academic)
                for calib, quant, ptq in ((("mse", "mse"), {"bn_fold": 0}, {}), (("mse", "minmax"), {"bn_fold": 0}, {}),
                                          (("mse", "mse"), {}, {"cle": True, "bias_correction": "analytic"})) + (
                        ((("mse", "mse"), {}, {"cle": True}),) if bits == (8, 8) else ()):
                    recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw="academic", arch=arch,
                                            w=bits[0], a=bits[1], seed=seed, calib=calib, quant=quant, ptq=ptq,
                                            top1=acc()))
        for arch in ("resnet18_mini", "mobilenetv2_mini"):
            for algo in ("lsq", "pact"):
                for k in (-1, 0, 1, 2, 3, 4):
                    recs.append(_qat(algo=algo, arch=arch, seed=seed, top1=acc(), quant={"bn_fold": k}))
                for g in (1, 2, 3):
                    recs.append(_qat(algo=algo, arch=arch, seed=seed, top1=acc(), quant={"graph": g}))
        for hw in ("academic", "snpe"):
            for calib in (("quantile", "norm"), ("minmax", "minmax")):
                recs.append(make_record(kind="ptq", num_classes=10, algo="ptq", hw=hw, arch="mobilenetv2_mini",
                                        seed=seed, calib=calib, ptq={"bn_recalib": True}, top1=acc(), init=1.0,
                                        calib_size=4096))
                if hw == "academic":
                    recs.append(make_record(kind="qat", num_classes=10, algo="lsq", hw=hw, arch="mobilenetv2_mini",
                                            seed=seed, calib=calib, top1=acc()))
    return recs


def test_every_claim_finds_its_cells_and_survives_partial_grids() -> None:
    rng = random.Random(0)
    recs = _full_grid(rng)
    frame = R.dedup(R.records_frame([(Path(f"mem/{i}/result.json"), r) for i, r in enumerate(recs)]))
    assert len(frame) == len(recs)  # no two fake records share a config
    found = F.evaluate(frame, CLAIMS)
    missing = [f.claim.id for f in found if f.evidence.verdict == F.NO_DATA or f.evidence.n < 2]
    assert missing == []
    for _ in range(12):  # an interrupted sweep: any subset of the records aggregates without error
        part = frame.sample(frac=rng.uniform(0.05, 0.6), random_state=rng.randrange(10**6))
        for f in F.evaluate(part, CLAIMS):
            assert f.evidence.verdict in F.VERDICTS


def test_breakdown_by_the_first_setting_level() -> None:
    idx = pd.MultiIndex.from_tuples([("a", 0), ("a", 1), ("b", 0), ("b", 1)], names=["arch", "seed"])
    d = pd.Series([1.0, 2.0, -1.0, 0.0], index=idx)
    assert F.breakdown(d) == "mean by arch: a +1.50, b -0.50"
    assert F.greater(d, "x").detail == "mean by arch: a +1.50, b -0.50"
    assert F.breakdown(pd.Series([1.0, 2.0], index=pd.Index([0, 1], name="seed"))) == ""  # seeds only
