"""The mini track's own views (once scripts/ptq_tables.py, qat_tables.py, ptq_advanced_tables.py): hand-written
schema-2 records in, every expected number computed here from the inputs."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest

from bench.aggregate import records as R
from bench.aggregate import render
from bench.aggregate import tables as T

ARCHS = ("resnet18_mini", "mobilenetv2_mini")  # the legacy (paper) order: ResNet-18 first
MINI_NAMES = ("ptq_w8a8", "ptq_calib_8bit", "ptq_bn_calib_4bit", "qat_w4a4_hw", "qat_w4a4_academic",
              "qat_w4a4_academic_3ep", "ptq_advanced")


def _ptq(rec, **kw):
    kw.setdefault("kind", "ptq")
    kw.setdefault("num_classes", 10)
    return rec(algo=kw.pop("algo", "ptq"), **kw)


def _qat(rec, **kw):
    return rec(kind="qat", num_classes=10, **kw)


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def test_ptq_profiles_mean_over_seeds_and_max_drop(cells_of, rec) -> None:
    top = {("resnet18_mini", "academic"): [91.4, 91.6], ("resnet18_mini", "tvm"): [90.0, 90.4],
           ("mobilenetv2_mini", "tvm"): [66.0, 67.0], ("mobilenetv2_mini", "snpe"): [75.5, 75.9]}
    fp32 = {"resnet18_mini": 91.5, "mobilenetv2_mini": 91.1}
    recs = [_ptq(rec, arch=a, hw=h, w=8, a=8, seed=s, top1=v, fp32=fp32[a])
            for (a, h), vals in top.items() for s, v in enumerate(vals)]
    recs.append(_ptq(rec, arch="resnet18_mini", hw="snpe", w=8, a=8, calib=("mse", "mse"), top1=1.0))  # not MinMax
    t = T.ptq_profiles(cells_of(recs))
    assert list(t.columns) == ["arch", "fp32", "academic", "tvm", "snpe", "max_drop"]
    t = t.set_index("arch")
    assert list(t.index) == list(ARCHS)
    for (a, h), vals in top.items():
        assert t.loc[a, h] == pytest.approx(statistics.mean(vals))
    assert _nan(t.loc["resnet18_mini", "snpe"]) and _nan(t.loc["mobilenetv2_mini", "academic"])
    assert t.loc["resnet18_mini", "max_drop"] == pytest.approx(91.5 - 90.2)
    assert t.loc["mobilenetv2_mini", "max_drop"] == pytest.approx(91.1 - 66.5)


def test_ptq_calib_rows_per_calibration_columns_per_profile(cells_of, rec) -> None:
    pairs = {("minmax", "minmax"): 70.0, ("mse", "minmax"): 70.5, ("kld", "minmax"): 65.0, ("mse", "mse"): 70.4}
    recs = [_ptq(rec, arch=a, hw=h, w=8, a=8, calib=c, top1=v + (1 if h == "fbgemm" else 0) - i)
            for i, a in enumerate(ARCHS) for h in ("snpe", "fbgemm") for c, v in pairs.items()]
    t = T.ptq_calib(cells_of(recs))
    assert list(t.columns) == ["arch", "fp32", "calib_act", "calib_weight", "snpe_top1", "fbgemm_top1"]
    # arch, then weight calibration, then activation calibration, each in table order (MinMax, MSE, KLD)
    want = [(a, act, w) for a in ARCHS for act, w in (("minmax", "minmax"), ("mse", "minmax"), ("kld", "minmax"),
                                                      ("mse", "mse"))]
    assert list(zip(t["arch"], t["calib_act"], t["calib_weight"], strict=True)) == want
    row = t[(t["arch"] == "mobilenetv2_mini") & (t["calib_act"] == "kld")].iloc[0]
    assert (row["snpe_top1"], row["fbgemm_top1"], row["fp32"]) == (64.0, 65.0, 71.0)
    # RTN MinMax beside RTN MSE is no comparison of calibrations
    assert T.ptq_calib(cells_of([r for r in recs if r["calib_act"] == r["calib_weight"]])).empty


def test_ptq_bn_calib_before_after_best_first(cells_of, rec) -> None:
    runs = {("quantile", "norm"): (51.5, 84.8), ("mse", "meanstd"): (79.3, 81.5), ("minmax", "minmax"): (75.0, 64.9)}
    recs = [_ptq(rec, arch="mobilenetv2_mini", hw="snpe", calib=c, init=i, top1=v, ptq={"bn_recalib": True},
                 calib_size=4096, fp32=91.1) for c, (i, v) in runs.items()]
    recs.append(_ptq(rec, arch="mobilenetv2_mini", hw="academic", calib=("norm", "norm"), init=67.1, top1=87.5,
                     ptq={"bn_recalib": True}, calib_size=4096, fp32=91.1))
    recs.append(_ptq(rec, arch="mobilenetv2_mini", hw="snpe", calib=("mse", "meanstd"), init=78.0, top1=80.0,
                     ptq={"bn_recalib": True}, fp32=91.1))  # 1024 images: a row of its own
    recs.append(_ptq(rec, arch="mobilenetv2_mini", hw="snpe", calib=("mse", "meanstd"), top1=79.0))  # plain PTQ
    cells = cells_of(recs)
    t = T.ptq_bn_calib(cells[R.is_bn_calib_cell(cells)])
    assert list(t.columns) == ["arch", "fp32_top1", "hw", "calib_act", "calib_weight", "calib_size", "ptq_top1",
                               "bn_calib_top1"]
    got = list(zip(t["hw"], t["calib_act"], t["calib_size"], t["ptq_top1"], t["bn_calib_top1"], strict=True))
    assert got == [("academic", "norm", 4096, 67.1, 87.5), ("snpe", "mse", 1024, 78.0, 80.0),
                   ("snpe", "quantile", 4096, 51.5, 84.8), ("snpe", "mse", 4096, 79.3, 81.5),
                   ("snpe", "minmax", 4096, 75.0, 64.9)]
    assert set(t["fp32_top1"]) == {91.1}


@pytest.fixture
def qat_cells(cells_of, rec) -> pd.DataFrame:
    recs = []
    for algo, acad, tvm in (("lsq", [90.3, 90.5], [74.3, 74.1]), ("pact", [90.2], [82.6]), ("dsq", [90.7], None)):
        for s, v in enumerate(acad):
            recs.append(_qat(rec, algo=algo, arch="resnet18_mini", seed=s, top1=v, init=89.0 + s, wall=40.0 + s,
                             fp32=91.5))
        if tvm is None:
            recs.append(_qat(rec, algo=algo, arch="resnet18_mini", hw="tvm", top1=10.4, init=12.2, fp32=91.5))  # NC
        else:
            recs += [_qat(rec, algo=algo, arch="resnet18_mini", hw="tvm", seed=s, top1=v, init=37.5, wall=60.0,
                          fp32=91.5) for s, v in enumerate(tvm)]
    # mobilenetv2_mini, academic: 1 epoch (the standard length, most cells) and 3 epochs for two algorithms
    recs += [_qat(rec, algo=a, arch="mobilenetv2_mini", top1=v, init=68.0, wall=58.0, fp32=91.1)
             for a, v in (("lsq", 87.3), ("pact", 88.7), ("dsq", 89.0))]
    recs += [_qat(rec, algo=a, arch="mobilenetv2_mini", top1=v, init=68.0, wall=166.8, fp32=91.1, epochs=3)
             for a, v in (("lsq", 87.7), ("pact", 89.1))]
    return cells_of(recs)


def test_qat_long_hw_gap_cost_and_nc(qat_cells) -> None:
    t = T.qat_long(qat_cells[qat_cells["train_epochs"] == 1]).set_index(["arch", "algo", "hw"])
    lsq_acad, lsq_tvm = statistics.mean([90.3, 90.5]), statistics.mean([74.3, 74.1])
    r = t.loc[("resnet18_mini", "lsq", "tvm")]
    assert r["top1"] == pytest.approx(lsq_tvm) and r["hw_gap"] == pytest.approx(lsq_acad - lsq_tvm)
    assert (r["init_top1"], r["wall_s"], r["n"], r["fp32"]) == (37.5, 60.0, 2, 91.5)
    a = t.loc[("resnet18_mini", "lsq", "academic")]
    assert _nan(a["hw_gap"]) and a["init_top1"] == pytest.approx(89.5) and a["wall_s"] == pytest.approx(40.5)
    nc = t.loc[("resnet18_mini", "dsq", "tvm")]  # 10.4 % on 10 classes: within a point of chance
    assert nc["status"] == "nc" and _nan(nc["top1"]) and _nan(nc["hw_gap"]) and nc["init_top1"] == 12.2
    assert t.loc[("resnet18_mini", "pact", "tvm"), "hw_gap"] == pytest.approx(90.2 - 82.6)
    # rows: arch, algorithm, profile in table order (LSQ, DSQ, PACT; Academic before TVM)
    assert [k for k in t.index if k[0] == "resnet18_mini"][:3] == [("resnet18_mini", "lsq", "academic"),
                                                                  ("resnet18_mini", "lsq", "tvm"),
                                                                  ("resnet18_mini", "dsq", "academic")]


def test_qat_academic_and_the_longer_run(qat_cells) -> None:
    acad = qat_cells[qat_cells["hw"] == "academic"]
    base = acad[acad["train_epochs"] == 1]
    t = T.qat_academic(base).set_index(["arch", "algo"])
    r = t.loc[("mobilenetv2_mini", "pact")]
    assert (r["top1"], r["init_top1"], r["wall_s"]) == (88.7, 68.0, 58.0)
    assert r["qat_gain"] == pytest.approx(88.7 - 68.0) and r["drop_from_fp32"] == pytest.approx(91.1 - 88.7)
    longer = T.qat_academic_longer(acad[acad["train_epochs"] == 3], base, 3, 1)
    assert list(longer.columns) == ["arch", "algo", "fp32_top1", "init_top1", "top1_1ep", "top1_3ep", "wall_s",
                                    "drop_from_fp32", "n", "status"]
    assert list(zip(longer["algo"], longer["top1_1ep"], longer["top1_3ep"], strict=True)) == [("lsq", 87.3, 87.7),
                                                                                              ("pact", 88.7, 89.1)]
    assert list(longer["drop_from_fp32"]) == pytest.approx([91.1 - 87.7, 91.1 - 89.1])


def test_standard_epochs_is_the_most_common_length(qat_cells) -> None:
    assert T.standard_epochs(qat_cells) == 1
    assert T.standard_epochs(pd.DataFrame({"train_epochs": [3, 3, 1, 0, 0]})) == 0  # a tie: the shorter


ADV = {  # (algo, (act, weight), ptq flags) -> the row the table gives it
    ("ptq", ("minmax", "minmax"), ()): "RTN MinMax", ("ptq", ("mse", "mse"), ()): "RTN MSE",
    ("ptq", ("mse", "mse"), ("bn_recalib",)): "+BN re-calib", ("ptq", ("mse", "mse"), ("cle",)): "+CLE",
    ("ptq", ("mse", "mse"), ("cle", "bias")): "+CLE +bias corr.", ("brecq", ("mse", "mse"), ()): "BRECQ",
    ("ioso", ("mse", "mse"), ()): "IOSO",
}


def _flags(names: tuple[str, ...]) -> dict:
    return {"bn_recalib": "bn_recalib" in names, "cle": "cle" in names,
            "bias_correction": "empirical" if "bias" in names else "none"}


def test_ptq_advanced_rows_settings_sections(cells_of, rec) -> None:
    recs, want = [], {}
    for i, ((algo, calib, flags), row) in enumerate(ADV.items()):
        for hw, bits in (("tensorrt", (4, 8)), ("tensorrt", (2, 4)), ("academic", (4, 8))):
            if algo == "ioso" and hw == "academic":
                continue  # per-channel only
            top1 = 50.0 + i + bits[0]
            extra = {"recon_s": 30.0 + i, "recon": {"preset": "fashion_mnist"}} if algo in ("brecq", "ioso") else {}
            if algo == "ioso":
                extra.update(ioso_int_ops=7.92e6, ioso_isg_ops=0.09e6, ioso_isg_ops_ratio=0.0116)
            recs.append(_ptq(rec, algo=algo, arch="resnet18_mini", hw=hw, w=bits[0], a=bits[1], calib=calib,
                             ptq=_flags(flags), top1=top1, init=40.0, wall=10.0 + i + bits[0], fp32=91.5, extra=extra))
            want[(hw, f"w{bits[0]}a{bits[1]}", row)] = (top1, 10.0 + i + bits[0])
    # no reconstruction ran at W8A8 on snpe: its RTN cell is no advanced setting; nor is a KLD or a CLE+BRECQ cell one
    recs += [_ptq(rec, hw="snpe", w=8, a=8, top1=91.0), _ptq(rec, hw="tensorrt", w=4, a=8, calib=("kld", "minmax")),
             _ptq(rec, algo="brecq", hw="tensorrt", w=4, a=8, calib=("mse", "mse"), ptq={"cle": True})]
    long, sections = T.ptq_advanced(cells_of(recs))
    assert list(long.columns) == ["hw", "arch", "bits", "method", "fp32_top1", "init_top1", "top1", "wall_s",
                                  "recon_s", "recon_preset"]
    assert {(h, b, m): (t, w) for h, b, m, t, w in zip(long["hw"], long["bits"], long["method"], long["top1"],
                                                        long["wall_s"], strict=True)} == want
    order = list(ADV.values())
    trt = long[(long["hw"] == "tensorrt") & (long["bits"] == "w2a4")]
    assert list(trt["method"]) == order  # the pipeline rows, then the methods in table order
    assert list(long["hw"].drop_duplicates()) == ["academic", "tensorrt"]
    assert list(long.loc[long["method"] == "IOSO", "recon_s"]) == [36.0, 36.0]
    heads = [h for h, _, _ in sections]
    assert heads[:2] == ["hw=academic", "hw=tensorrt"] and heads[2].startswith("IOSO") and heads[3].startswith("Median")
    trt_pivot = sections[1][1].set_index("method")
    assert list(trt_pivot.columns) == ["resnet18_mini w2a4", "resnet18_mini w4a8"]
    assert list(trt_pivot.index) == ["FP32"] + order
    assert trt_pivot.loc["BRECQ", "resnet18_mini w2a4"] == want[("tensorrt", "w2a4", "BRECQ")][0]
    ops = sections[2][1].iloc[0]
    assert (ops["int_ops_M"], ops["total_M"], ops["isg_percent"]) == pytest.approx((7.92, 8.01, 1.16))
    med = sections[3][1].set_index("method")
    walls = [w for (h, b, m), (_, w) in want.items() if m == "+CLE"]
    assert med.loc["+CLE", "resnet18_mini"] == pytest.approx(statistics.median(walls))
    md = render.table_markdown(T.Table("ptq_advanced", "Advanced", long, kind="sections", sections=sections,
                                       notes=["intro"]))
    assert md.startswith("# Advanced\n\nintro\n\n## hw=academic\n\n| method | resnet18_mini w4a8 |")
    assert "| IOSO | - | - |" not in md and "| FP32 | 91.50 | 91.50 |" in md


def test_ptq_advanced_rtn_on_folded_weights_is_its_own_row(cells_of, rec) -> None:
    mse = ("mse", "mse")
    recs = [_ptq(rec, algo="brecq", hw="academic", w=4, a=8, calib=mse, top1=88.0),
            _ptq(rec, hw="academic", w=4, a=8, calib=mse, top1=89.0),
            _ptq(rec, hw="academic", w=4, a=8, calib=mse, quant={"bn_fold": 0}, top1=10.0),
            _ptq(rec, hw="academic", w=4, a=8, calib=mse, ptq={"cle": True}, top1=85.0),
            _ptq(rec, hw="academic", w=4, a=8, calib=mse, quant={"bn_fold": 2}, top1=11.0),  # no row of the table
            _ptq(rec, algo="brecq", hw="academic", w=4, a=8, calib=mse, quant={"bn_fold": 0}, top1=1.0)]  # nor this
    long, sections = T.ptq_advanced(cells_of(recs))
    assert list(zip(long["method"], long["top1"], strict=True)) == [
        ("RTN MSE", 89.0), ("RTN MSE (BN folded)", 10.0), ("+CLE", 85.0), ("BRECQ", 88.0)]
    assert list(sections[0][1]["method"]) == ["FP32", "RTN MSE", "RTN MSE (BN folded)", "+CLE", "BRECQ"]


def test_the_views_are_written_for_self_describing_records_only(cells_of, rec) -> None:
    def grid(new: bool) -> list:
        k = (lambda kind: {"kind": kind}) if new else (lambda kind: {})
        out = [rec(algo="ptq", hw=h, w=8, a=8, calib=c, **k("ptq")) for h in ("snpe", "fbgemm")
               for c in (("minmax", "minmax"), ("kld", "minmax"))]
        out += [rec(algo="ptq", hw="snpe", calib=c, ptq={"bn_recalib": True}, init=50.0, **k("ptq"))
                for c in (("quantile", "norm"), ("mse", "meanstd"))]
        out += [rec(algo=a, hw=h, epochs=e, **k("qat")) for a in ("lsq", "pact") for h in ("academic", "tvm")
                for e in (1, 1, 3) if not (e == 3 and h == "tvm")]
        out += [rec(algo=a, hw="tensorrt", w=4, a=8, calib=c, **k("ptq")) for a, c in
                (("ptq", ("minmax", "minmax")), ("brecq", ("mse", "mse")))]
        return out

    new = {t.name: t for t in T.build_all(cells_of(grid(new=True)), "fmnist-mini")}
    assert set(MINI_NAMES) <= set(new)
    old = [t.name for t in T.build_all(cells_of(grid(new=False)), "fmnist-mini")]
    assert not set(MINI_NAMES) & set(old) and not any(n.startswith(("ptq_", "qat_")) for n in old)
    legacy_set = [n for n in new if not n.startswith(("ptq_", "qat_"))]
    assert legacy_set == old  # the tables schema-1 records give stay the same, in the same order
    for name in MINI_NAMES:  # each names the experiment that runs its grid
        md = render.table_markdown(new[name])
        assert f"`python -m bench run -m experiment={T.EXPERIMENTS[name][0]}`" in md, name
    md = render.table_markdown(new["ptq_w8a8"])
    assert "| arch | fp32 | SNPE | FBGEMM | max_drop |" in md
    md = render.table_markdown(new["ptq_calib_8bit"])
    assert "| resnet18 | 71.00 | KLD | MinMax | 70.00 | 70.00 |" in md
