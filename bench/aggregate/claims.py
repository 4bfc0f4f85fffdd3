"""The source papers' claims that the mini track can test (MQBench Sec. 5 and App. B-C, the white paper Sec. 3,
Bit-Split, IOSO), each as a test on the seed-level records (:func:`bench.aggregate.findings.seed_frame`).

Every test picks its cells with the same predicates as the tables (:mod:`bench.aggregate.records`), pairs them per
unit and seed, and hands the differences to a verdict rule of :mod:`bench.aggregate.findings`. The papers' numbers
quoted here are from the seed texts (``shared/seeds``) and ``results/reference``.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from bench.aggregate import records as R
from bench.aggregate.axes import Axes
from bench.aggregate.findings import (
    Claim,
    Evidence,
    diff,
    equivalent,
    greater,
    reduce,
    select,
    stack,
    values,
    varies,
)
from bench.aggregate.tables import PLAIN_PTQ, ptq_method

RESNETS = ("resnet18_mini", "resnet50_mini")
DEPTHWISE = ("mobilenetv2_mini", "efficientnet_lite0_mini")
NON_DEPTHWISE = ("resnet18_mini", "resnet50_mini", "regnetx_600mf_mini")
FIG67 = ("resnet18_mini", "mobilenetv2_mini", "regnetx_600mf_mini")  # MQBench App. B's training-curve archs
BN_CALIB_IMAGES = 4096  # MQBench App. C.3: BN re-calibration on 4096 training images (experiment=ptq_bn_calib_4bit)
PER_TENSOR = ("tvm", "snpe")  # MQBench Table 2: per-tensor weight quantizers
PER_CHANNEL = ("tensorrt", "acl", "fbgemm")
HARDWARE = PER_TENSOR + PER_CHANNEL
TABLE4_ALGOS = ("lsq", "apot", "qil", "dsq", "pact", "dorefa")  # MQBench Table 4's six
TABLE7_ALGOS = ("lsq", "dsq", "pact", "dorefa")


def _bits(df: pd.DataFrame, w: int, a: int) -> pd.DataFrame:
    return df[(df["w_bits"] == w) & (df["a_bits"] == a)]


def _standard(df: pd.DataFrame) -> pd.DataFrame:
    """The cells of the recipe's training length (the most common one), as the tables take them."""
    if df.empty:
        return df
    counts = df["train_epochs"].astype(int).value_counts()
    return df[df["train_epochs"].astype(int) == int(min(counts[counts == counts.max()].index))]


def qat_hw(df: pd.DataFrame) -> pd.DataFrame:
    """Tables 4 and 7: 4-bit QAT on the profile's own graph and folding, initialised as the papers do."""
    c = df[R.is_hardware_cell(df)] if not df.empty else df
    c = _bits(c, 4, 4)
    return _standard(c[(c["calib_act"] == "paper") & (c["calib_weight"] == "paper")])


def bnfold(df: pd.DataFrame) -> pd.DataFrame:
    """Table 5: 4-bit academic QAT with ``quant.bn_fold`` set; ``bn_fold`` is the strategy."""
    c = df[R.is_bnfold_cell(df)] if not df.empty else df
    return _standard(_bits(c[c["quant_bn_fold"].notna() & (c["hw"] == "academic")], 4, 4))


def graphs(df: pd.DataFrame) -> pd.DataFrame:
    """Table 6: 4-bit academic QAT with ``quant.graph`` set; ``graph`` is the variant."""
    c = df[R.is_graph_cell(df)] if not df.empty else df
    return _standard(_bits(c[c["quant_graph"].notna() & (c["hw"] == "academic")], 4, 4))


def ptq_plain(df: pd.DataFrame) -> pd.DataFrame:
    """Plain PTQ (Table 10, the RTN rows): nearest rounding, no BN re-calibration, CLE or bias correction."""
    return df[R.is_ptq_cell(df)] if not df.empty else df


def bn_calib(df: pd.DataFrame) -> pd.DataFrame:
    """PTQ + BN re-calibration (Table 11); ``init_top1`` is the accuracy before the re-calibration."""
    return df[R.is_bn_calib_cell(df)] if not df.empty else df


def methods(df: pd.DataFrame) -> pd.DataFrame:
    """The advanced-PTQ rows as ``method``: the labels of tables.PTQ_PIPELINE (plain PTQ), else the reconstruction
    method's algo name (adaround, brecq, qdrop, bitsplit, ioso)."""
    if df.empty:
        return df.assign(method=pd.Series(dtype=object))
    c = df[df["kind"] == "ptq"]
    if c.empty:
        return c.assign(method=pd.Series(dtype=object))
    label = ptq_method(c, Axes.of(c))  # the pipeline rows' labels; a reconstruction method is named by its algo
    c = c.assign(method=[a if m is not None and a != PLAIN_PTQ else m for a, m in zip(c["algo"], label, strict=True)])
    return c[c["method"].notna()]


def _label(df: pd.DataFrame, axis: str) -> Callable[[object], str]:
    axes = Axes.of(df) if not df.empty else Axes()
    return lambda v: axes.label(axis, v)


# ---- MQBench Sec. 5.1: academic setting (Table 4) ----

def _algorithms_close(df: pd.DataFrame) -> Evidence:
    c = select(qat_hw(df), hw="academic", arch=RESNETS, algo=TABLE4_ALGOS)
    v = values(c, ["arch", "algo"])
    if v.empty:
        return greater(v, "no cells")
    spread = reduce(v, "algo", "max") - reduce(v, "algo", "min")
    return equivalent(spread, 1.5, "max - min top-1 over the six Table 4 algorithms, academic W4A4, per ResNet "
                      "mini and seed (vs 0)")


def _no_algo_best_every_arch(df: pd.DataFrame) -> Evidence:
    c = select(qat_hw(df), hw="academic", algo=TABLE4_ALGOS)
    return varies(values(c, ["arch", "algo"]), "algo", "best of the six Table 4 algorithms per mini arch, academic "
                  "W4A4", _label(c, "algo"))


def _dorefa_matches_lsq(df: pd.DataFrame) -> Evidence:
    c = select(qat_hw(df), hw="academic", arch="resnet18_mini")
    d = diff(values(select(c, algo="dorefa"), []), values(select(c, algo="lsq"), []))
    return equivalent(d, 1.0, "DoReFa - LSQ, academic W4A4, resnet18_mini, per seed")


def _dorefa_fails_depthwise(df: pd.DataFrame) -> Evidence:
    c = select(qat_hw(df), hw="academic", arch=DEPTHWISE)
    d = diff(values(select(c, algo="lsq"), ["arch"]), values(select(c, algo="dorefa"), ["arch"]))
    return greater(d, "LSQ - DoReFa, academic W4A4, mobilenetv2_mini and efficientnet_lite0_mini, per arch and seed")


# ---- MQBench Sec. 5.2 and App. B: BN folding (Table 5) ----

def _fold(df: pd.DataFrame, algo: str) -> pd.Series:
    return values(select(bnfold(df), algo=algo), ["arch", "bn_fold"])


def _strategy(s: pd.Series, strategies: tuple[int, ...]) -> pd.Series:
    return s[s.index.get_level_values("bn_fold").isin(strategies)]


def _at(s: pd.Series, strategy: int) -> pd.Series:
    return s.xs(strategy, level="bn_fold") if strategy in set(s.index.get_level_values("bn_fold")) else \
        pd.Series(dtype=float)


def _lsq_fold_close(df: pd.DataFrame) -> Evidence:
    s = _fold(df, "lsq")
    if s.empty:
        return greater(s, "no cells")
    base = _at(s, -1)
    d = stack({k: diff(_at(s, k), base) for k in (1, 2, 3, 4)}, "bn_fold")
    return equivalent(d, 1.0, "LSQ with BN folding strategy 1-4 - LSQ without folding (-1), academic W4A4, "
                      "resnet18_mini and mobilenetv2_mini, per strategy, arch and seed")


def _pact_fold_hurts_more(df: pd.DataFrame) -> Evidence:
    lsq, pact = _fold(df, "lsq"), _fold(df, "pact")
    if lsq.empty or pact.empty:
        return greater(pd.Series(dtype=float), "no cells")
    drop = {}
    for name, s in (("lsq", lsq), ("pact", pact)):
        base = _at(s, -1)
        drop[name] = stack({k: diff(base, _at(s, k)) for k in (0, 1, 2, 3, 4)}, "bn_fold")
    return greater(diff(drop["pact"], drop["lsq"]), "(PACT's drop from no folding to strategy 0-4) - (LSQ's), "
                   "academic W4A4, per strategy, arch and seed")


def _strategy4_best_for_pact(df: pd.DataFrame) -> Evidence:
    s = _fold(df, "pact")
    if s.empty:
        return greater(s, "no cells")
    d = diff(_at(s, 4), reduce(_strategy(s, (0, 1, 2, 3)), "bn_fold", "max"))  # "works best": above the best other
    return greater(d, "PACT strategy 4 - the best of PACT strategies 0-3, academic W4A4, per arch and seed")


def _lsq_no_stat_update(df: pd.DataFrame) -> Evidence:
    s = _fold(df, "lsq")
    if s.empty:
        return greater(s, "no cells")
    d = diff(_at(s, 1), reduce(_strategy(s, (2, 3, 4)), "bn_fold"))
    return equivalent(d, 1.0, "LSQ strategy 1 (frozen statistics) - mean of LSQ strategies 2-4, academic W4A4, per "
                      "arch and seed")


def _strategy0_lowest(df: pd.DataFrame) -> Evidence:
    s = _fold(df, "lsq")
    if s.empty:
        return greater(s, "no cells")
    s = s[s.index.get_level_values("arch") == "resnet18_mini"]  # the paper's Fig. 8: LSQ on ResNet-18
    d = diff(reduce(_strategy(s, (1, 2, 3, 4)), "bn_fold", "min"), _at(s, 0))  # "the lowest": below the worst other
    return greater(d, "the lowest of LSQ strategies 1-4 - LSQ strategy 0, academic W4A4, resnet18_mini, per seed")


# ---- MQBench Sec. 5.3: graphs (Table 6) ----

def _graph_sensitive_to_arch(df: pd.DataFrame) -> Evidence:
    v = values(graphs(df), ["arch", "algo", "graph"])
    if v.empty:
        return greater(v, "no cells")

    def drop(arch: str) -> pd.Series:
        a = v.xs(arch, level="arch") if arch in set(v.index.get_level_values("arch")) else pd.Series(dtype=float)
        if a.empty:
            return a
        return diff(a.xs(1, level="graph"), a.xs(3, level="graph")) if {1, 3} <= set(
            a.index.get_level_values("graph")) else pd.Series(dtype=float)

    d = diff(drop("mobilenetv2_mini"), drop("resnet18_mini"))
    return greater(d, "(graph 1 - graph 3 on mobilenetv2_mini) - (the same on resnet18_mini), academic W4A4, per "
                   "algorithm (LSQ, PACT) and seed")


# ---- MQBench Sec. 5.4 and App. B: hardware profiles (Table 7, Fig. 5, Fig. 6) ----

def _t7(df: pd.DataFrame) -> pd.Series:
    return values(select(qat_hw(df), algo=TABLE7_ALGOS), ["arch", "hw", "algo"])


def _no_algo_best_every_hw(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    v = v[v.index.get_level_values("hw").isin(HARDWARE)] if not v.empty else v
    return varies(v, "algo", "best of LSQ, DSQ, PACT, DoReFa per (arch, hardware profile), W4A4",
                  _label(qat_hw(df), "algo"))


def _hw_gap(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    if v.empty:
        return greater(v, "no cells")
    acad = v.xs("academic", level="hw") if "academic" in set(v.index.get_level_values("hw")) else pd.Series(
        dtype=float)
    parts = {h: diff(acad, v.xs(h, level="hw")) for h in HARDWARE if h in set(v.index.get_level_values("hw"))}
    if acad.empty or not parts:
        return greater(pd.Series(dtype=float), "no cells")
    d = stack(parts, "hw")
    share = float((reduce(d, "seed") > 0).mean()) * 100
    return greater(d, "academic - hardware profile top-1 (the hardware gap), W4A4, per algorithm, arch, profile and "
                   "seed", f"{share:.0f}% of the (algorithm, arch, profile) cells lose accuracy on the profile "
                   f"(mean over seeds)")


def _algo_std(df: pd.DataFrame) -> pd.Series:
    v = _t7(df)
    return reduce(v, "algo", "pstd") if not v.empty else v


def _contrast(s: pd.Series, level: str, a: tuple[str, ...], b: tuple[str, ...]) -> pd.Series:
    """Mean of ``s`` over the ``level`` values ``a`` minus its mean over ``b``, per remaining unit."""
    if s.empty:
        return s
    values_ = s.index.get_level_values(level)
    return diff(reduce(s[values_.isin(a)], level), reduce(s[values_.isin(b)], level))


def _depthwise_variance(df: pd.DataFrame) -> Evidence:
    d = _contrast(_algo_std(df), "arch", DEPTHWISE, NON_DEPTHWISE)
    return greater(d, "std of top-1 across the four Table 7 algorithms: mean over the depthwise minis - mean over "
                   "resnet18/50 and regnetx minis, per profile (academic included) and seed")


def _per_tensor_variance(df: pd.DataFrame) -> Evidence:
    d = _contrast(_algo_std(df), "hw", PER_TENSOR, PER_CHANNEL)
    return greater(d, "std of top-1 across the four Table 7 algorithms: mean over TVM and SNPE (per-tensor) - mean "
                   "over TensorRT, ACL and FBGEMM (per-channel), per arch and seed")


def _lsq_pact_granularity(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    if v.empty:
        return greater(v, "no cells")
    hw = v.index.get_level_values("hw")

    def lead(profiles: tuple[str, ...]) -> pd.Series:
        s = v[hw.isin(profiles)]
        algo = s.index.get_level_values("algo")
        return reduce(diff(s[algo == "lsq"].droplevel("algo"), s[algo == "pact"].droplevel("algo")), "hw")

    return greater(diff(lead(PER_TENSOR), lead(PER_CHANNEL)), "(LSQ - PACT on the per-tensor profiles) - (LSQ - "
                   "PACT on the per-channel profiles), W4A4, per arch and seed")


def _lsq_hw_robust(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    if v.empty:
        return greater(v, "no cells")
    v = v[v.index.get_level_values("hw").isin(HARDWARE)]
    mean_hw = reduce(v, "hw")
    algo = mean_hw.index.get_level_values("algo")
    lsq = mean_hw[algo == "lsq"].droplevel("algo")
    others = reduce(mean_hw[algo != "lsq"], "algo", "max")
    return greater(diff(lsq, others), "LSQ's mean top-1 over the five hardware profiles - the best other algorithm's "
                   "(hardware robustness), W4A4, per arch and seed")


def _fig67(v: pd.Series) -> pd.Series:
    """LSQ and DSQ on the archs of MQBench's Fig. 6-7 (ResNet-18, MobileNetV2, RegNetX-600MF): the curves the App. B
    claims are read from (on EfficientNet-Lite0 its Table 7 gives LSQ's largest gap to ACL)."""
    return v[v.index.get_level_values("algo").isin(("lsq", "dsq")) & v.index.get_level_values("arch").isin(FIG67)]


def _tvm_lowest(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    if v.empty:
        return greater(v, "no cells")
    v = _fig67(v)
    hw = v.index.get_level_values("hw")
    d = diff(reduce(v[hw.isin(("tensorrt", "acl", "snpe", "fbgemm"))], "hw", "min"), v[hw == "tvm"].droplevel("hw"))
    return greater(d, "lowest top-1 among TensorRT, ACL, SNPE, FBGEMM - TVM, LSQ and DSQ, W4A4, resnet18, mobilenetv2 "
                   "and regnetx_600mf minis, per algorithm, arch and seed")


def _acl_closest_academic(df: pd.DataFrame) -> Evidence:
    v = _t7(df)
    if v.empty:
        return greater(v, "no cells")
    v = _fig67(v)
    hw = v.index.get_level_values("hw")
    if "academic" not in set(hw):
        return greater(pd.Series(dtype=float), "no cells")
    acad = v[hw == "academic"].droplevel("hw")
    gaps = stack({h: diff(acad, v[hw == h].droplevel("hw")).abs() for h in HARDWARE if h in set(hw)}, "hw")
    if gaps.empty:
        return greater(gaps, "no cells")
    g_hw = gaps.index.get_level_values("hw")
    d = diff(reduce(gaps[g_hw != "acl"], "hw", "min"), gaps[g_hw == "acl"].droplevel("hw"))
    return greater(d, "smallest |academic - profile| among TensorRT, TVM, SNPE, FBGEMM - |academic - ACL|, LSQ and "
                   "DSQ, W4A4, resnet18, mobilenetv2 and regnetx_600mf minis, per algorithm, arch and seed")


# ---- MQBench App. C: PTQ (Tables 10 and 11) ----

def _t10(df: pd.DataFrame) -> pd.DataFrame:
    return _bits(ptq_plain(df), 8, 8)


def _efficient_sensitive(df: pd.DataFrame) -> Evidence:
    c = select(_t10(df), hw=("snpe", "fbgemm"))
    if c.empty:
        return greater(pd.Series(dtype=float), "no cells")
    drop = reduce(values(c, ["arch", "hw", "calib_act", "calib_weight"], "fp32_top1") - values(
        c, ["arch", "hw", "calib_act", "calib_weight"]), ["calib_act", "calib_weight"], "min")
    arch = drop.index.get_level_values("arch")
    d = diff(reduce(drop[arch.isin(DEPTHWISE)], "arch"), reduce(drop[arch.isin(RESNETS)], "arch"))
    return greater(d, "PTQ W8A8 drop from FP32 with the best calibration: mean over the depthwise minis - mean over "
                   "the ResNet minis, per profile (SNPE, FBGEMM) and seed")


def _per_channel_ptq(df: pd.DataFrame) -> Evidence:
    # "higher accuracy up bounds": each profile's best calibration, not every pair (a collapsed pair would dominate)
    c = select(_t10(df), hw=("fbgemm", "snpe"))
    if c.empty:
        return greater(pd.Series(dtype=float), "no cells")
    best = reduce(values(c, ["arch", "hw", "calib_act", "calib_weight"]), ["calib_act", "calib_weight"], "max")
    hw = best.index.get_level_values("hw")
    d = diff(best[hw == "fbgemm"].droplevel("hw"), best[hw == "snpe"].droplevel("hw"))
    return greater(d, "PTQ W8A8 with the best calibration pair: FBGEMM (per-channel) - SNPE (per-tensor), per arch "
                   "and seed")


def _no_calib_best(df: pd.DataFrame) -> Evidence:
    c = select(_t10(df), hw=("snpe", "fbgemm"))
    if c.empty:
        return greater(pd.Series(dtype=float), "no cells")
    c = c.assign(calib=c["calib_act"].astype(str) + "/" + c["calib_weight"].astype(str))
    return varies(values(c, ["arch", "hw", "calib"]), "calib", "best (activation/weight) calibration per (arch, "
                  "profile), PTQ W8A8")


def _bn_calib_gain(df: pd.DataFrame, hw: str) -> pd.Series:
    c = _bits(select(bn_calib(df), hw=hw), 4, 4)
    c = c[c["calib_size"] == BN_CALIB_IMAGES]  # Table 11's setting, not ptq_advanced's "+BN re-calib" row
    keys = ["arch", "calib_act", "calib_weight"]
    return diff(values(c, keys), values(c, keys, "init_top1"))


def _bn_calib_academic(df: pd.DataFrame) -> Evidence:
    return greater(_bn_calib_gain(df, "academic"), "PTQ W4A4 after - before BN re-calibration on 4096 images, "
                   "academic, per arch, calibration pair and seed")


def _bn_calib_snpe(df: pd.DataFrame) -> Evidence:
    return equivalent(_bn_calib_gain(df, "snpe"), 1.0, "PTQ W4A4 after - before BN re-calibration on 4096 images, "
                      "SNPE, per arch, "
                      "calibration pair and seed")


def _qat_init_matters(df: pd.DataFrame) -> Evidence:
    c = df[R.is_hardware_cell(df)] if not df.empty else df
    c = _standard(_bits(select(c, algo="lsq", hw="academic", arch="mobilenetv2_mini"), 4, 4))
    good = values(select(c, calib_act="quantile", calib_weight="norm"), [])
    base = values(select(c, calib_act="minmax", calib_weight="minmax"), [])
    return greater(diff(good, base), "LSQ QAT W4A4 initialised with Quantile/Norm - with MinMax/MinMax, academic, "
                   "mobilenetv2_mini, per seed")


# ---- White paper Sec. 3 (and Bit-Split, IOSO): the advanced PTQ grid ----

def _method_diff(df: pd.DataFrame, a: str, b: str, *, bits: tuple[str, ...], hw: tuple[str, ...] | None = None,
                 arch: tuple[str, ...] | None = None) -> pd.Series:
    c = methods(df)
    if c.empty:
        return pd.Series(dtype=float)
    c = c.assign(bits="w" + c["w_bits"].astype(int).astype(str) + "a" + c["a_bits"].astype(int).astype(str))
    c = select(c, bits=bits)
    if hw is not None:
        c = select(c, hw=hw)
    if arch is not None:
        c = select(c, arch=arch)
    keys = ["hw", "arch", "bits"]
    return diff(values(select(c, method=a), keys), values(select(c, method=b), keys))


def _mse_low_bit(df: pd.DataFrame) -> Evidence:
    # Table 1 varies the weight range setting only, per-tensor, on BN-folded models: activations keep MSE ranges
    return greater(_method_diff(df, "RTN MSE (BN folded)", "RTN MinMax weights (BN folded)", bits=("w4a8", "w3a8"),
                                hw=("academic",)),
                   "RTN with MSE - with min-max weight ranges (MSE activation ranges), BN folded, academic "
                   "(per-tensor), W4A8 and W3A8, per arch, bits and seed")


def _mse_8bit_on_par(df: pd.DataFrame) -> Evidence:
    c = select(_t10(df), hw="snpe")  # Table 1 is per-tensor; FBGEMM is per-channel
    keys = ["arch", "calib_act"]
    d = diff(values(select(c, calib_weight="mse"), keys), values(select(c, calib_weight="minmax"), keys))
    return equivalent(d, 1.0, "PTQ W8A8 with MSE - with MinMax weight ranges (same activation calibration), SNPE "
                      "(per-tensor), per arch, activation calibration and seed")


def _cle_per_tensor_depthwise(df: pd.DataFrame) -> Evidence:
    # the baseline is RTN on the BN-folded weights: the paper's per-tensor model, and the weights CLE starts from
    # (the academic profile's own "RTN MSE" row quantizes the unfolded weights, which have no range problem to rescue)
    return greater(_method_diff(df, "+CLE", "RTN MSE (BN folded)", bits=("w8a8",), hw=("academic",), arch=DEPTHWISE),
                   "(RTN MSE + CLE) - RTN MSE on the BN-folded weights, W8A8, academic (per-tensor), depthwise minis, "
                   "per arch and seed")


def _bias_correction_complements(df: pd.DataFrame) -> Evidence:
    # Table 4: analytic (data-free) bias correction on per-tensor INT8 MobileNetV2
    return greater(_method_diff(df, "+CLE +analytic bias corr.", "+CLE", bits=("w8a8",), hw=("academic",),
                                arch=DEPTHWISE),
                   "(CLE + analytic bias correction) - CLE, W8A8, academic (per-tensor), depthwise minis, per arch and "
                   "seed")


def _adaround_beats_rtn(df: pd.DataFrame) -> Evidence:
    return greater(_method_diff(df, "adaround", "RTN MSE", bits=("w4a8", "w3a8")), "AdaRound - RTN (MSE ranges), "
                   "W4A8 and W3A8, academic and TensorRT, per profile, arch, bits and seed")


def _bitsplit_beats_rtn(df: pd.DataFrame) -> Evidence:
    # the paper's baseline is TF-Lite's, min-max ranges (Sec. 2.2)
    return greater(_method_diff(df, "bitsplit", "RTN MinMax", bits=("w4a8", "w3a8"), hw=("tensorrt",)),
                   "Bit-Split - RTN (min-max ranges, TF-Lite's), TensorRT (per-channel), W4A8 and W3A8, per arch, bits "
                   "and seed")


def _bitsplit_gap_grows(df: pd.DataFrame) -> Evidence:
    d = _method_diff(df, "bitsplit", "RTN MinMax", bits=("w4a8", "w3a8"), hw=("tensorrt",))
    if d.empty or not {"w4a8", "w3a8"} <= set(d.index.get_level_values("bits")):
        return greater(pd.Series(dtype=float), "no cells")
    return greater(diff(d.xs("w3a8", level="bits"), d.xs("w4a8", level="bits")), "(Bit-Split - RTN at W3A8) - "
                   "(Bit-Split - RTN at W4A8), TensorRT, per arch and seed")


def _ioso_beats_brecq(df: pd.DataFrame) -> Evidence:
    # the controlled comparison (Table 6) gains at 2-bit weights only: 'as the quantization bit increases to 3-bit and
    # 4-bit, the difference ... decreases'
    return greater(_method_diff(df, "ioso", "brecq", bits=("w2a4",), hw=("tensorrt",)),
                   "IOSO - BRECQ, TensorRT (per-channel), W2A4, per arch and seed")


CLAIMS: tuple[Claim, ...] = (
    Claim("mq-algos-close", "MQBench", "Sec. 5.1 (1), Table 4",
          "With one training pipeline, 4-bit QAT algorithms differ little on ResNets (within 1.5 points)",
          "max - min top-1 over the six algorithms: ResNet-18 0.8 (QIL - DSQ; 3.0 as originally reported), ResNet-50 "
          "1.1 (5.3 reported)", _algorithms_close),
    Claim("mq-no-best-arch", "MQBench", "Sec. 5.1 (2), Table 4",
          "No algorithm is the best on every architecture (academic setting)",
          "4 different winners among 5 architectures", _no_algo_best_every_arch),
    Claim("mq-dorefa-lsq", "MQBench", "Sec. 5.1 (3), Table 4",
          "Rule-based DoReFa matches learned LSQ on ResNet-18 (within 1 point)",
          "DoReFa 70.7 = LSQ 70.7 on ResNet-18, academic W4A4", _dorefa_matches_lsq),
    Claim("mq-dorefa-depthwise", "MQBench", "Sec. 5.1 (3), Table 4",
          "DoReFa fails on depthwise nets: LSQ beats it on MobileNetV2 / EfficientNet-Lite",
          "DoReFa 'fails to quantize depthwise conv networks, e.g. MobileNetV2' (fixed [0, 1] activation clip)",
          _dorefa_fails_depthwise),
    Claim("mq-lsq-fold", "MQBench", "Sec. 5.2 (1), Table 5",
          "LSQ with BN folding (strategies 1-4) reaches the accuracy of LSQ without folding (within 1 point)",
          "LSQ ResNet-18: 70.7 without folding vs 70.1-70.4 with 1-4; MobileNetV2 70.6 vs 69.9-70.1", _lsq_fold_close),
    Claim("mq-pact-fold", "MQBench", "Sec. 5.2 (1), Table 5",
          "BN folding hurts PACT much more than LSQ",
          "PACT does not converge with strategies 0-3 and loses 2.7 (ResNet-18) / 9.9 (MobileNetV2) points with 4; "
          "LSQ loses 0.3-1.1", _pact_fold_hurts_more),
    Claim("mq-fold-s4", "MQBench", "Sec. 5.2 (1), Table 5",
          "Strategy 4 works best among the folding strategies (PACT)",
          "PACT: strategy 4 67.8 / 60.8 where 0-3 are NC", _strategy4_best_for_pact),
    Claim("mq-fold-s1", "MQBench", "Sec. 5.2 (3), Table 5",
          "Updating BN statistics is not necessary for LSQ: strategy 1 is within 1 point of strategies 2-4",
          "LSQ strategy 1 drops only 0.2-0.3 points from 2-4 (ResNet-18 70.1 vs 70.2-70.4)", _lsq_no_stat_update),
    Claim("mq-fold-s0", "MQBench", "App. B (Fig. 8), Table 5",
          "Strategy 0 (BN removed, folded weights trained) has the lowest accuracy (LSQ, ResNet-18)",
          "LSQ strategy 0 69.8 / 69.5 vs 70.1-70.4 / 69.9-70.1 for 1-4", _strategy0_lowest),
    Claim("mq-graph-arch", "MQBench", "Sec. 5.3, Table 6",
          "The graph implementation matters more on MobileNetV2 than on ResNet-18",
          "graph 1 -> 3: LSQ -0.4 (ResNet-18) vs -3.6 (MobileNetV2); PACT -1.1 vs -2.9", _graph_sensitive_to_arch),
    Claim("mq-no-best-hw", "MQBench", "Sec. 5.4, Table 7",
          "No algorithm is the best on every hardware setting",
          "of 25 (arch, profile) settings LSQ wins 52%, PACT 38%, DoReFa 10%", _no_algo_best_every_hw),
    Claim("mq-hw-gap", "MQBench", "Sec. 5.4, Table 7",
          "Hardware profiles lose accuracy against the academic setting (the hardware gap is positive)",
          "93% of the experiments drop accuracy from academic to hardware", _hw_gap),
    Claim("mq-var-depthwise", "MQBench", "Sec. 5.4, Fig. 5",
          "Algorithms differ more on depthwise nets (MobileNetV2, EfficientNet-Lite) than on ResNets / RegNet",
          "std across algorithms (Fig. 5): MobileNetV2 24.0-30.4, EfficientNet-Lite0 27.8-31.5 vs ResNet-18 "
          "0.28-4.41", _depthwise_variance),
    Claim("mq-var-per-tensor", "MQBench", "Sec. 5.4, Fig. 5",
          "Algorithms differ more on per-tensor profiles (TVM, SNPE) than on per-channel ones",
          "std across algorithms on ResNet-50: TVM 37.6, SNPE 38.0 vs TensorRT 0.63, ACL 0.15, FBGEMM 0.28",
          _per_tensor_variance),
    Claim("mq-lsq-pact", "MQBench", "Sec. 5.4, Fig. 6",
          "LSQ suits per-tensor profiles and PACT per-channel ones (LSQ's lead over PACT is larger per-tensor)",
          "LSQ wins 90% of per-tensor settings; PACT wins 66.7% of the 15 per-channel ones", _lsq_pact_granularity),
    Claim("mq-lsq-robust", "MQBench", "Sec. 5.4, Fig. 6",
          "LSQ has the best hardware robustness (mean accuracy over the profiles)",
          "'Generally, LSQ has the best hardware robustness' (Fig. 6, right)", _lsq_hw_robust),
    Claim("mq-tvm-lowest", "MQBench", "App. B (Fig. 6-7)",
          "TVM (power-of-two per-tensor scales) gives the lowest accuracy of the profiles (LSQ, DSQ)",
          "'TVM has the lowest curve' in the LSQ and DSQ training curves", _tvm_lowest),
    Claim("mq-acl-closest", "MQBench", "App. B (Fig. 6-7)",
          "ACL is the profile closest to the academic setting (LSQ, DSQ)",
          "'ACL (blue) curve has the closest distance with the academic (red) curve'", _acl_closest_academic),
    Claim("mq-ptq-efficient", "MQBench", "App. C.2, Table 10",
          "Efficient (depthwise) models are more sensitive to 8-bit PTQ than ResNets",
          "best-setting drop: ResNet-18/50 ~0, MobileNetV2 1.4, EfficientNet-Lite0 1.6", _efficient_sensitive),
    Claim("mq-ptq-per-channel", "MQBench", "App. C.2, Table 10",
          "A per-channel quantizer (FBGEMM) gives higher 8-bit PTQ accuracy than a per-tensor one (SNPE)",
          "EfficientNet-Lite0: per-channel 1.1 points higher; no clear difference on the heavy models",
          _per_channel_ptq),
    Claim("mq-no-best-calib", "MQBench", "App. C.2, Table 10",
          "No calibration method is always the best",
          "SNPE: MinMax/MinMax best on ResNets and RegNet, MSE/MSE on MobileNetV2 and EfficientNet-Lite0",
          _no_calib_best),
    Claim("mq-bn-calib", "MQBench", "App. C.3, Table 11",
          "BN re-calibration brings a large gain to 4-bit PTQ in the academic setting",
          "MobileNetV2 W4A4: 0.43-1.1 -> 28.1-51.3 after BN calibration", _bn_calib_academic),
    Claim("mq-bn-calib-snpe", "MQBench", "App. C.3, Table 11",
          "BN re-calibration does not help 4-bit PTQ on a hardware profile (SNPE; within 1 point)",
          "MobileNetV2 W4A4 SNPE: 0.13 -> 0.14, 0.18 -> 0.18", _bn_calib_snpe),
    Claim("mq-qat-init", "MQBench", "App. C.4, Table 11",
          "A better calibration initialises LSQ QAT better: Quantile/Norm beats MinMax/MinMax",
          "MobileNetV2 W4A4 academic QAT: 70.7 (Quantile/Norm) vs 69.0 (MinMax/MinMax)", _qat_init_matters),
    Claim("wp-mse-low-bit", "White paper", "Sec. 3.1, Table 1",
          "MSE weight range setting beats min-max at low bit-widths (per-tensor)",
          "'at lower bit-widths the MSE approach clearly outperforms the min-max' (Table 1; its numbers are not in the "
          "seed text)", _mse_low_bit),
    Claim("wp-mse-8bit", "White paper", "Sec. 3.1, Table 1",
          "At 8 bits, MSE and min-max weight ranges are on par (within 1 point)",
          "'For high bit-widths, the MSE and min-max approaches are mostly on par' (Table 1)", _mse_8bit_on_par),
    Claim("wp-cle", "White paper", "Sec. 3.2, Table 3",
          "Cross-layer equalization rescues per-tensor INT8 quantization of depthwise nets",
          "MobileNetV2 INT8 per-tensor is 'close to random'; CLE 'brings us back within 2% of FP32' (Table 3)",
          _cle_per_tensor_depthwise),
    Claim("wp-bias-corr", "White paper", "Sec. 3.3, Table 4",
          "Bias correction is complementary to CLE: CLE + analytic bias correction beats CLE alone (INT8)",
          "MobileNetV2 INT8: bias correction alone 'from random to over 50%'; with CLE 'complementary', 'near FP32' "
          "(Table 4)",
          _bias_correction_complements),
    Claim("wp-adaround", "White paper", "Sec. 3.4, Table 5",
          "AdaRound beats rounding to nearest at 4-bit (and lower) weights",
          "rounding-to-nearest 'is not optimal in terms of the task loss'; AdaRound's gains at 4-bit weights (Table 5; "
          "its numbers are not in the seed text)", _adaround_beats_rtn),
    Claim("bs-beats-rtn", "Bit-Split", "Sec. 4.1, Table 1",
          "Bit-Split and Stitching beats the nearest-rounding min-max baseline (TF-Lite) at 4- and 3-bit weights",
          "'consistently outperforms TF-Lite baseline'; 3-bit: baseline fails, Bit-Split within 0.9-1.7 top-5",
          _bitsplit_beats_rtn),
    Claim("bs-gap-grows", "Bit-Split", "Sec. 4.1, Table 1",
          "Bit-Split's gain over the baseline grows as the bit-width goes down",
          "'The accuracy gap becomes larger as the bit-width goes down'", _bitsplit_gap_grows),
    Claim("ioso-beats-brecq", "IOSO", "Sec. 4, Tables 3 and 6",
          "IOSO improves on BRECQ block reconstruction at 2-bit weights (W2A4)",
          "W4A4: BRECQ 69.60 / 66.57 / 68.33 -> IOSO 69.64 / 67.88 / 70.54 (ResNet-18, MobileNetV2, RegNet-600MF); "
          "W2A4: 64.80 / 53.34 / 59.31 -> 66.00 / 56.10 / 63.60", _ioso_beats_brecq),
)
