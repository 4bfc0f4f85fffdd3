"""Table builders: the paper's own numbers fed back as fake records must reproduce its derived columns."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate import render
from bench.aggregate import tables as T

REF = Path(__file__).resolve().parents[2] / "results" / "reference"
HW = ["tensorrt", "acl", "tvm", "snpe", "fbgemm"]
PROFILES = ["academic"] + HW

# MQBench Table 7, column "Avg. HW", as printed (mean, std).
PAPER_AVG_HW = {
    ("resnet18", "lsq"): (69.3, 0.87), ("resnet18", "dsq"): (68.3, 1.10), ("resnet18", "pact"): (67.2, 4.87),
    ("resnet18", "dorefa"): (69.4, 0.75), ("resnet50", "lsq"): (76.3, 0.21), ("resnet50", "dsq"): (75.5, 0.72),
    ("resnet50", "pact"): (45.8, 37.4), ("resnet50", "dorefa"): (45.7, 37.3), ("mobilenetv2", "lsq"): (66.1, 1.18),
    ("mobilenetv2", "dsq"): (47.6, 12.7), ("mobilenetv2", "pact"): (62.3, 7.8), ("mobilenetv2", "dorefa"): (0, 0),
    ("efficientnet_lite0", "lsq"): (66.6, 1.27), ("efficientnet_lite0", "dsq"): (31.6, 25.5),
    ("efficientnet_lite0", "pact"): (62.4, 9.88), ("efficientnet_lite0", "dorefa"): (0, 0),
    ("regnetx_600mf", "lsq"): (72.1, 1.04), ("regnetx_600mf", "dsq"): (68.9, 2.37),
    ("regnetx_600mf", "pact"): (43.6, 35.5), ("regnetx_600mf", "dorefa"): (43.6, 35.6),
}
# MQBench Fig. 5 (std of accuracy across the Table 7 algorithms), rows arch, columns PROFILES.
PAPER_FIG5 = {
    "resnet18": [0.28, 1.06, 0.29, 4.41, 0.33, 0.36], "resnet50": [0.44, 0.63, 0.15, 37.6, 38.0, 0.28],
    "mobilenetv2": [30.4, 27.1, 29.8, 24.0, 25.9, 27.1], "efficientnet_lite0": [31.5, 27.9, 30.1, 28.5, 29.8, 27.8],
    "regnetx_600mf": [0.46, 1.61, 0.76, 33.7, 35.6, 1.05],
}


def _half_unit(printed: float) -> float:
    """Half a unit of the last printed digit (37.4 -> 0.05, 0.87 -> 0.005)."""
    text = repr(float(printed))
    decimals = len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0
    return 0.5 * 10**-decimals + 1e-9


def paper_table7_records(rec) -> list[dict]:
    t = pd.read_csv(REF / "mqbench_table7_hw_qat4bit.csv", keep_default_na=False)
    out = []
    for _, r in t.iterrows():
        for p in PROFILES:
            nc = r[p] == "NC"
            out.append(rec(algo=r["algo"], arch=r["arch"], hw=p, top1=None if nc else float(r[p]),
                           status="nc" if nc else "ok", fp32=float(r["fp32_acc"]), track="imagenet"))
    return out


@pytest.fixture
def paper_cells(cells_of, rec) -> pd.DataFrame:
    return cells_of(paper_table7_records(rec))


def test_avg_hw_reproduces_the_paper(paper_cells) -> None:
    """Avg. HW = mean ± population std over the 5 hardware profiles, NC counted as 0 (paper: PACT ResNet-50
    45.8±37.4). The paper prints one value off its own formula: RegNetX PACT 35.569 as 35.5 (truncated; its DoReFa
    neighbour 35.568 is printed 35.6), so that std is checked against the truncation."""
    t7 = T.table7(paper_cells).set_index(["arch", "algo"])
    for key, (mean, std) in PAPER_AVG_HW.items():
        row = t7.loc[key]
        vals = [0.0 if row[f"{p}_status"] == "nc" else row[f"{p}_mean"] for p in HW]
        assert row["avg_hw_mean"] == pytest.approx(statistics.mean(vals))
        assert row["avg_hw_std"] == pytest.approx(statistics.pstdev(vals))
        assert abs(row["avg_hw_mean"] - mean) <= _half_unit(mean), key
        if key == ("regnetx_600mf", "pact"):
            assert math.floor(row["avg_hw_std"] * 10) / 10 == std
        else:
            assert abs(row["avg_hw_std"] - std) <= _half_unit(std), key
    assert t7.loc[("resnet50", "pact"), "tvm_status"] == "nc"
    assert t7.loc[("resnet50", "pact"), "avg_hw_n"] == 5


def test_hardware_gap_is_academic_minus_profile(paper_cells) -> None:
    """Gap = academic - hw (positive = drop). Checked against printed gaps; the paper has three typos that match
    no formula (MobileNetV2 DSQ TVM 39.8 for 69.6 - 29.4 = 40.2, EfficientNet LSQ FBGEMM 6.7 for 5.7, RegNetX DSQ
    TensorRT 2.1 for 3.1), so those are checked against the formula only."""
    t7 = T.table7(paper_cells).set_index(["arch", "algo"])
    printed = {("resnet18", "lsq", "tensorrt"): 1.4, ("resnet18", "pact", "tvm"): 13.0,
               ("resnet50", "dsq", "snpe"): 0.5, ("mobilenetv2", "dsq", "snpe"): 28.3,
               ("efficientnet_lite0", "dsq", "snpe"): 65.1, ("regnetx_600mf", "pact", "acl"): -1.1}
    for (arch, algo, p), gap in printed.items():
        assert t7.loc[(arch, algo), f"{p}_gap"] == pytest.approx(gap, abs=1e-6)
    assert t7.loc[("mobilenetv2", "dsq"), "tvm_gap"] == pytest.approx(40.2)
    assert math.isnan(t7.loc[("resnet50", "pact"), "tvm_gap"])  # NC: no gap
    assert math.isnan(t7.loc[("mobilenetv2", "dorefa"), "tensorrt_gap"])
    assert t7.loc[("mobilenetv2", "dorefa"), "avg_hw_mean"] == 0.0  # all NC: the paper's 0±0


def test_table7_markdown_cells(paper_cells) -> None:
    table = T.Table("t7", "t", T.table7(paper_cells), keys=["arch", "algo"])
    md = render.table_markdown(table)
    assert "| resnet18 | LSQ | 71.00 | 70.70 | 69.30 (1.40) |" in md
    row = "| resnet50 | PACT | 77.00 | 76.30 | 76.30 (0.00) | 76.10 (0.20) | NC | NC | 76.60 (-0.30) | 45.80 ± 37.40 |"
    assert row in md
    assert render.SINGLE_SEED_NOTE in md


def test_table4_avg_arch_counts_nc_as_zero(paper_cells, cells_of, rec) -> None:
    """Avg. Arch. from the paper's Table 4 numbers: DoReFa 44.0 (two NC as 0), LSQ 72.8. The paper prints APoT
    71.9 where its own column averages 71.84."""
    t4 = pd.read_csv(REF / "mqbench_table4_academic_qat4bit.csv", keep_default_na=False)
    recs = [rec(algo=r["algo"], arch=r["arch"], top1=None if r["benchmark_acc"] == "NC" else float(r["benchmark_acc"]),
                status="nc" if r["benchmark_acc"] == "NC" else "ok") for _, r in t4.iterrows()]
    wide = T.table4(cells_of(recs)).set_index("arch")
    avg = wide.loc[T.AVG_ARCH]
    for algo, paper in {"lsq": 72.8, "qil": 72.5, "dsq": 72.1, "pact": 72.5, "dorefa": 44.0}.items():
        assert round(avg[f"{algo}_mean"], 1) == paper
    assert avg["apot_mean"] == pytest.approx(71.84)
    assert wide.loc["mobilenetv2", "dorefa_status"] == "nc"


def test_fig5_spread_is_population_std_over_table7_algorithms(paper_cells) -> None:
    """Fig. 5 = population std across the four Table 7 algorithms with NC as 0; the paper's two-decimal values are
    sometimes truncated (ResNet-18 academic 0.2861 printed 0.28), hence the 0.01 tolerance."""
    sd = T.algo_std(paper_cells).set_index("arch")
    for arch, printed in PAPER_FIG5.items():
        for p, v in zip(PROFILES, printed, strict=True):
            tol = 0.01 if v < 10 else 0.05
            assert abs(sd.loc[arch, p] - v) <= tol + 1e-9, (arch, p)
            assert sd.loc[arch, f"{p}_n"] == 4


def test_best_algorithm_counts_reproduce_the_paper(paper_cells) -> None:
    """Sec. 5.4: of 25 hardware settings LSQ wins 52%, PACT 38%, DoReFa 10% (ties split), LSQ 90% of the per-tensor
    ones. Not reproducible from the paper's own table: its per-channel LSQ 23% (its counts give 4/15 = 26.7%:
    with 9 per-tensor wins out of 13 the paper's own numbers are inconsistent) and gap wins LSQ 36% / PACT 48%
    (the table gives 34% / 50%; the RegNetX TensorRT gap tie 0.2/0.2 seems given whole to LSQ)."""
    best = T.best_algo(paper_cells)
    counts = T.best_counts(best).set_index("algo")
    assert counts.loc["settings", "top1_all"] == 25
    assert counts.loc["lsq", "top1_all"] == 13 and counts.loc["lsq", "top1_all_share"] == pytest.approx(0.52)
    assert counts.loc["pact", "top1_all"] == 9.5 and counts.loc["dorefa", "top1_all"] == 2.5
    assert counts.loc["lsq", "top1_per_tensor_share"] == pytest.approx(0.9)
    assert counts.loc["lsq", "top1_per_channel"] == 4
    assert counts.loc["lsq", "gap_all"] == 8.5 and counts.loc["pact", "gap_all"] == 12.5
    row = best[(best["arch"] == "regnetx_600mf") & (best["hw"] == "tensorrt")].iloc[0]
    assert row["min_gap_algos"] == "lsq+pact" and row["best_top1_algos"] == "lsq"


def test_winners_split_ties() -> None:
    assert T.winners({"lsq": 70.0, "pact": 70.0, "dsq": 69.0}) == ["lsq", "pact"]
    assert T.winners({"lsq": 1.0, "pact": 0.5}, best="min") == ["pact"]
    assert T.winners({"lsq": math.nan}) == []
    best = pd.DataFrame({"arch": ["a", "a"], "hw": ["tvm", "acl"], "per_channel": [False, True],
                         "best_top1_algos": ["lsq+pact", "pact"], "min_gap_algos": ["dsq", ""]})
    c = T.best_counts(best).set_index("algo")
    assert c.loc["lsq", "top1_all"] == 0.5 and c.loc["pact", "top1_all"] == 1.5
    assert c.loc["pact", "top1_per_channel"] == 1.0 and c.loc["pact", "top1_per_tensor"] == 0.5
    assert c.loc["settings", "gap_all"] == 1  # a setting without a gap winner is not counted


def _ci(vals: list[float]) -> tuple[float, float]:
    return statistics.mean(vals), {3: 4.3027}[len(vals)] * statistics.stdev(vals) / math.sqrt(len(vals))


def test_overlap_marker_true_and_false(cells_of, rec) -> None:
    seeds = {"lsq": [70.0, 70.2, 70.4], "pact": [70.1, 70.3, 70.2], "dsq": [60.0, 60.1, 60.2]}
    cells = cells_of([rec(algo=a, hw=h, seed=s, top1=v + (0 if h == "academic" else -1))
                      for a, vals in seeds.items() for s, v in enumerate(vals) for h in ("academic", "tvm")])
    t7 = T.table7(cells).set_index("algo")
    (m_l, h_l), (m_p, h_p), (m_d, h_d) = (_ci(seeds[a]) for a in ("lsq", "pact", "dsq"))
    assert abs(m_l - m_p) <= h_l + h_p and abs(m_p - m_d) > h_p + h_d  # the premise, independently
    first, second = ("pact", "lsq") if m_p > m_l else ("lsq", "pact")
    assert bool(t7.loc[first, "academic_overlaps_next"]) is True
    assert bool(t7.loc[second, "academic_overlaps_next"]) is False  # next is dsq, far below
    assert bool(t7.loc["dsq", "academic_overlaps_next"]) is False  # last ranked
    assert t7.loc["lsq", "academic_ci95"] == pytest.approx(h_l)
    md = render.table_markdown(T.Table("t7", "t", T.table7(cells), keys=["arch", "algo"]))
    assert render.OVERLAP_MARK in md and render.OVERLAP_NOTE in md
    assert f"{m_l:.2f} ± {statistics.stdev(seeds['lsq']):.2f}" in md


def test_partial_grid_missing_profiles_archs_and_all_nc(cells_of, rec) -> None:
    recs = [rec(algo="lsq", hw=h, top1=70.0 - i) for i, h in enumerate(["academic", "tensorrt", "snpe"])]
    recs += [rec(algo="pact", hw="tensorrt", top1=None, status="nc"), rec(algo="pact", hw="snpe", top1=None,
                                                                          status="nc")]
    recs += [rec(algo="lsq", arch="mobilenetv2", hw="snpe", top1=60.0)]
    t7 = T.table7(cells_of(recs)).set_index(["arch", "algo"])
    assert [c.removesuffix("_status") for c in t7.columns if c.endswith("_status")] == ["academic", "tensorrt",
                                                                                          "snpe"]
    lsq = t7.loc[("resnet18", "lsq")]
    assert lsq["avg_hw_mean"] == pytest.approx(statistics.mean([69.0, 68.0])) and lsq["avg_hw_n"] == 2
    pact = t7.loc[("resnet18", "pact")]
    assert pact["academic_status"] == "missing" and pact["avg_hw_mean"] == 0.0 and pact["avg_hw_std"] == 0.0
    mob = t7.loc[("mobilenetv2", "lsq")]
    assert mob["academic_status"] == "missing" and math.isnan(mob["snpe_gap"])
    md = render.grid_markdown(T.Table("t", "t", t7.reset_index(), keys=["arch", "algo"]))
    assert "| resnet18 | PACT | 71.00 | - | NC | NC | 0.00 ± 0.00 |" in md


def test_robustness_tables(paper_cells) -> None:
    hwr = T.hw_robustness(paper_cells).set_index("algo")
    assert hwr.loc["lsq", "resnet18"] == pytest.approx(statistics.mean([69.3, 70.2, 67.7, 69.7, 69.8]))
    assert hwr.loc["dorefa", "mobilenetv2"] == 0.0
    per_arch = [hwr.loc["lsq", a] for a in ("resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0",
                                             "regnetx_600mf")]
    assert hwr.loc["lsq", "mean"] == pytest.approx(statistics.mean(per_arch))
    ar = T.arch_robustness(paper_cells).set_index("algo")
    assert ar.loc["pact", "tvm"] == pytest.approx(statistics.mean([57.5, 0.0, 48.1, 45.9, 0.0]))
    assert ar.loc["pact", "tvm_n"] == 5


def test_imagenet_reference_columns_only_on_imagenet(paper_cells) -> None:
    tables = {t.name: t for t in T.build_all(paper_cells, "imagenet", ref_dir=REF)}
    t7 = tables["table7_hw_w4a4"].frame.set_index(["arch", "algo"])
    assert float(t7.loc[("resnet18", "dsq"), "ref_tvm"]) == 67.1
    assert t7.loc[("resnet50", "pact"), "ref_tvm"] == "NC"
    assert t7.loc[("resnet50", "pact"), "ref_avg_hw_mean"] == pytest.approx(45.8)
    md = render.table_markdown(tables["table7_hw_w4a4"])
    assert "69.30 (1.40) [69.3]" in md and "NC [NC]" in md
    t4 = tables["table4_academic_w4a4"].frame.set_index("arch")
    assert float(t4.loc["resnet18", "ref_lsq"]) == 70.7
    mini = {t.name: t for t in T.build_all(paper_cells.assign(track="fmnist-mini"), "fmnist-mini", ref_dir=REF)}
    assert not any(c.startswith("ref_") for c in mini["table7_hw_w4a4"].frame.columns)


def test_bnfold_and_graph_tables(cells_of, rec) -> None:
    recs = [rec(algo="lsq", top1=70.7), rec(algo="pact", top1=70.5), rec(algo="dsq", top1=70.0)]  # academic: -1, g1
    recs += [rec(algo="lsq", quant={"bn_fold": f}, top1=70.0 + f / 10) for f in (0, 2, 4)]
    recs += [rec(algo="pact", quant={"bn_fold": 0}, top1=None, status="nc")]
    recs += [rec(algo="lsq", quant={"graph": g}, top1=70.0 - g / 10) for g in (2, 3)]
    recs += [rec(algo="lsq", hw="tensorrt", quant={"bn_fold": 1}, top1=69.0), rec(algo="lsq", hw="tensorrt",
                                                                                  top1=69.5)]
    names = {t.name: t for t in T.build_all(cells_of(recs), "fmnist-mini")}
    t5 = names["table5_bnfold_w4a4"].frame.set_index("algo")
    assert set(t5.index) == {"lsq", "pact"}  # dsq has no override: not an ablation row
    assert [c.removesuffix("_status") for c in t5.columns if c.endswith("_status")] == ["-1", "0", "2", "4"]
    assert t5.loc["lsq", "-1_mean"] == 70.7 and t5.loc["lsq", "4_mean"] == pytest.approx(70.4)
    assert t5.loc["pact", "0_status"] == "nc" and t5.loc["pact", "2_status"] == "missing"
    t5trt = names["table5_bnfold_tensorrt_w4a4"].frame
    assert list(t5trt["1_mean"]) == [69.0] and list(t5trt["4_mean"]) == [69.5]
    t6 = names["table6_graph_w4a4"].frame.set_index("algo")
    assert list(t6.index) == ["lsq"] and t6.loc["lsq", "1_mean"] == 70.7 and t6.loc["lsq", "3_mean"] == 69.7
    assert "table6_graph_tensorrt_w4a4" not in names


def test_ptq_tables(cells_of, rec) -> None:
    recs = [rec(algo="ptq", hw=h, w=8, a=8, calib=c, seed=s, top1=v + s * 0.1)
            for h in ("snpe", "fbgemm") for c, v in ((("minmax", "minmax"), 70.7), (("mse", "minmax"), 70.6))
            for s in range(3)]
    recs += [rec(algo="ptq", hw="snpe", calib=("quantile", "norm"), ptq={"bn_recalib": True}, top1=51.3, init=1.1),
             rec(algo="lsq", hw="snpe", calib=("quantile", "norm"), top1=65.2),
             rec(algo="ptq", hw="academic", top1=0.43), rec(algo="ptq", hw="academic", ptq={"bn_recalib": True},
                                                            top1=28.1, init=0.5),
             rec(algo="lsq", hw="academic", top1=69.0), rec(algo="lsq", hw="tvm", top1=60.0)]
    cells = cells_of(recs)
    names = {t.name: t for t in T.build_all(cells, "fmnist-mini")}
    t10 = names["table10_ptq_w8a8"].frame.set_index(["calib_act", "calib_weight"])
    assert t10.loc[("minmax", "minmax"), "snpe_mean"] == pytest.approx(70.8)
    assert t10.loc[("minmax", "minmax"), "snpe_std"] == pytest.approx(statistics.stdev([70.7, 70.8, 70.9]))
    assert t10.loc[("minmax", "minmax"), "fbgemm_n"] == 3
    assert "70.80 ± 0.10" in render.table_markdown(names["table10_ptq_w8a8"])
    t11 = names["table11_init"].frame.set_index(["hw", "calib_act"])
    q = t11.loc[("snpe", "quantile")]
    assert (q["ptq_mean"], q["bn_calib_mean"], q["qat_mean"]) == (1.1, 51.3, 65.2)  # PTQ from the BN cell's init
    acad = t11.loc[("academic", "minmax")]
    assert (acad["ptq_mean"], acad["bn_calib_mean"], acad["qat_mean"]) == (0.43, 28.1, 69.0)  # plain PTQ wins
    assert ("tvm", "minmax") not in t11.index  # QAT alone: nothing to compare


def test_tables_without_data_are_skipped(cells_of, rec) -> None:
    names = [t.name for t in T.build_all(cells_of([rec(algo="ptq", hw="snpe", w=8, a=8)]), "fmnist-mini")]
    assert names == ["table10_ptq_w8a8"]
    names = [t.name for t in T.build_all(cells_of([rec(algo="lsq"), rec(algo="pact")]), "fmnist-mini")]
    assert "table7_hw_w4a4" not in names and "table4_academic_w4a4" in names  # academic only: no HW table
    assert T.build_all(cells_of([]), "fmnist-mini") == []


def test_bits_settings_get_their_own_tables(cells_of, rec) -> None:
    recs = [rec(algo="lsq", hw=h, w=w, a=a) for h in ("academic", "tvm") for w, a in ((4, 4), (2, 4), (4, 8))]
    names = [t.name for t in T.build_all(cells_of(recs), "fmnist-mini") if t.name.startswith("table7")]
    assert names == ["table7_hw_w2a4", "table7_hw_w4a4", "table7_hw_w4a8"]
