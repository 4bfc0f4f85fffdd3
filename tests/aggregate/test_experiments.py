"""One route to tables: the grid of every committed mini view is an experiment file (bench/conf/experiment) that
composes, and its cells are the ones the view reads (the grids the table scripts ran)."""

from __future__ import annotations

import itertools

from hydra import compose, initialize_config_dir

from bench.aggregate import tables as T
from bench.config import CONF_DIR, check_overrides, group_options, register_configs

MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]
PROFILES = ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"]
QAT = ["lsq", "lsqplus", "pact", "dsq", "dorefa", "qil", "apot"]


def _fields(c) -> dict:
    return {"algo": c.algo.name, "hw": c.hw.name, "arch": c.arch.name, "bits": f"w{c.bits.w}a{c.bits.a}",
            "calib_act": c.calib.act, "calib_weight": c.calib.weight, "bn_recalib": c.ptq.bn_recalib, "cle": c.ptq.cle,
            "bias_correction": c.ptq.bias_correction, "epochs": c.train.epochs, "calib_size": c.data.calib_size,
            "data": c.data.name, "bn_fold": c.quant.bn_fold}


def _cells(experiment: str) -> list[dict]:
    """Every cell of ``experiment``'s sweep with the fields the tables read. Each swept key's values are composed as
    Hydra composes a job (one at a time, the other keys at their first value); the swept keys set disjoint fields,
    so the grid is the product of their effects."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        params = {str(k): str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
        check_overrides([f"{k}={','.join(v)}" for k, v in params.items()])
        first = {k: v[0] for k, v in params.items()}

        def cell(chosen: dict[str, str]) -> dict:
            return _fields(compose("config", overrides=[f"experiment={experiment}"]
                                   + [f"{k}={v}" for k, v in chosen.items()]))

        base = cell(first)
        effects = []
        for key, values in params.items():
            variants = [cell({**first, key: v}) for v in values]
            varying = {f for f in base if len({str(x[f]) for x in variants}) > 1}
            effects.append([{f: x[f] for f in varying} for x in variants])
    cells = [{**base, **{f: v for e in combo for f, v in e.items()}} for combo in itertools.product(*effects)]
    return [{**c, "calib": (c["calib_act"], c["calib_weight"])} for c in cells]


def _set(cells: list[dict], *keys: str) -> set:
    return {tuple(c[k] for k in keys) for c in cells}


def test_every_mini_view_names_experiments_that_exist() -> None:
    assert set(T.EXPERIMENTS) == {"ptq_w8a8", "ptq_calib_8bit", "ptq_bn_calib_4bit", "qat_w4a4_hw",
                                  "qat_w4a4_academic", "qat_w4a4_academic_3ep", "ptq_advanced"}
    named = {e for es in T.EXPERIMENTS.values() for e in es}
    assert named <= set(group_options("experiment"))


def test_ptq_grids() -> None:
    w8 = _cells("ptq_w8a8")
    assert len(w8) == 30 and _set(w8, "algo", "bits", "calib", "bn_recalib") == {("ptq", "w8a8", ("minmax", "minmax"),
                                                                                   False)}
    assert _set(w8, "hw", "arch") == set(itertools.product(PROFILES, MINIS))
    # MQBench Table 10's calibrations (the committed ptq_calib_8bit's rows) are among table10_ptq's
    t10 = _cells("table10_ptq")
    table10 = {("minmax", "minmax"), ("mse", "minmax"), ("kld", "minmax"), ("quantile", "minmax"), ("mse", "mse")}
    calibs = {c for (c,) in _set(t10, "calib")}
    assert table10 <= calibs and {act for act, _ in calibs} == {"minmax", "mse", "kld", "quantile"}
    assert _set(t10, "hw") == {("snpe",), ("fbgemm",)} and _set(t10, "bits") == {("w8a8",)}
    bn = _cells("ptq_bn_calib_4bit")
    pairs = {("quantile", "norm"), ("quantile", "meanstd"), ("norm", "norm"), ("mse", "meanstd"), ("minmax", "minmax")}
    assert pairs <= {c for (c,) in _set(bn, "calib")}
    assert _set(bn, "algo", "bn_recalib", "calib_size", "bits") == {("ptq", True, 4096, "w4a4")}
    assert _set(bn, "hw", "arch") == set(itertools.product(["academic", "snpe"], ["mobilenetv2_mini", "resnet18_mini"]))


def test_qat_grids() -> None:
    hw, acad, long = _cells("qat_w4a4_hw"), _cells("qat_w4a4_academic"), _cells("qat_w4a4_academic_3ep")
    deployable = {(a, h) for a in QAT for h in PROFILES if h == "academic" or a not in ("qil", "apot")}
    r18 = _set([c for c in hw + acad if c["arch"] == "resnet18_mini"], "algo", "hw")
    assert r18 == deployable  # every QAT algorithm on every profile where it runs; QIL / APoT from the academic grid
    assert _set(acad, "algo", "arch") == set(itertools.product(QAT, ["resnet18_mini", "mobilenetv2_mini"]))
    assert _set(hw + acad, "bits", "epochs") == {("w4a4", 1)}
    assert _set(long, "algo") == {(a,) for a in QAT}
    assert _set(long, "arch", "hw", "epochs", "bits") == {("mobilenetv2_mini", "academic", 3, "w4a4")}


def test_advanced_ptq_grid_gives_every_row_of_the_table() -> None:
    cells = _cells("ptq_advanced") + _cells("ptq_advanced_per_channel") + _cells("ptq_white_paper")
    # ptq_white_paper's CLE cells at the low bit-widths are ptq_advanced's academic "+CLE" cells
    assert len(cells) == 460 and len({tuple(sorted((k, str(v)) for k, v in c.items())) for c in cells}) == 440
    rows = {}
    for c in cells:
        rows.setdefault((c["algo"], c["calib"], c["bn_recalib"], c["cle"], c["bias_correction"], c["bn_fold"]),
                        set()).add((c["hw"], c["arch"], c["bits"]))
    settings = set(itertools.product(["academic", "tensorrt"], MINIS, ["w4a8", "w3a8", "w2a4", "w4a4"]))
    academic = {s for s in settings if s[0] == "academic"}
    white_paper = academic | {("academic", a, "w8a8") for a in MINIS}  # per-tensor, BN folded, + INT8
    mse = ("mse", "mse")
    assert rows == {
        ("ptq", ("minmax", "minmax"), False, False, "none", None): settings,
        ("ptq", mse, False, False, "none", None): settings, ("ptq", mse, False, False, "none", 0): white_paper,
        ("ptq", ("mse", "minmax"), False, False, "none", 0): white_paper,
        ("ptq", mse, True, False, "none", None): settings,
        ("ptq", mse, False, True, "none", None): settings | white_paper,
        ("ptq", mse, False, True, "empirical", None): settings,
        ("ptq", mse, False, True, "analytic", None): white_paper,
        ("adaround", mse, False, False, "none", None): settings,
        ("brecq", mse, False, False, "none", None): settings, ("qdrop", mse, False, False, "none", None): settings,
        ("bitsplit", mse, False, False, "none", None): settings - academic,
        ("ioso", mse, False, False, "none", None): settings - academic,
    }
    # the plain-PTQ cells are exactly the table's PTQ pipeline rows
    assert {("ptq", *row[1:]) for row in T.PTQ_PIPELINE} == {k for k in rows if k[0] == "ptq"}
