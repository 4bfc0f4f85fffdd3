"""``algo=ptq`` end to end on the synthetic dataset: record fields, debugging modes, report and sensitivity files."""

from __future__ import annotations

import csv

import pytest

from bench import runner


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One FP32 baseline for the whole module (the cache is keyed by arch, data and recipe)."""
    return tmp_path_factory.mktemp("cache")


def _cell(make_cfg, tmp_path, name, *overrides, cache):
    cfg = make_cfg("data=synthetic", "arch=tiny", "algo=ptq", "baseline.epochs=8", f"cache_dir={cache}",
                   f"runs_dir={tmp_path / 'runs'}", *overrides)
    out = tmp_path / "runs" / name
    return runner.run(cfg, out), out


@pytest.mark.parametrize("hw", ["academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"])
def test_ptq_w8a8_close_to_fp32_on_every_profile(make_cfg, tmp_path, hw, cache):
    rec, out = _cell(make_cfg, tmp_path, hw, f"hw={hw}", "bits=w8a8", cache=cache)
    assert rec["status"] == "ok" and rec["algo"] == "ptq" and rec["hw"] == hw
    assert rec["w_bits"] == 8 and rec["a_bits"] == 8 and rec["graph"] in (1, 2, 3)
    assert rec["init_top1"] == rec["top1"]  # no BN re-calibration: nothing changes after calibration
    assert abs(rec["top1"] - rec["fp32_top1"]) <= 5.0  # tiny net, 256 test images: 8 bits stays close
    rows = list(csv.DictReader((out / "quant_report.csv").open()))
    assert rec["extra"]["quantizers"] == len(rows) > 0


def test_bypass_equals_fp32_and_only_modes(make_cfg, tmp_path, cache):
    rec, _ = _cell(make_cfg, tmp_path, "bypass", "hw=tvm", "bits=w2a2", "quant.bypass=true", cache=cache)
    assert rec["top1"] == rec["fp32_top1"]
    assert rec["init_top1"] != rec["top1"]  # 2 bits with the quantizers on does change the model
    w, _ = _cell(make_cfg, tmp_path, "w", "hw=tvm", "bits=w2a2", "quant.only=weights", cache=cache)
    a, _ = _cell(make_cfg, tmp_path, "a", "hw=tvm", "bits=w2a2", "quant.only=acts", cache=cache)
    assert w["config_hash"] != a["config_hash"]


def test_bn_recalib_and_sensitivity(make_cfg, tmp_path, cache):
    rec, out = _cell(make_cfg, tmp_path, "recal", "hw=academic", "bits=w4a4", "ptq.bn_recalib=true",
                     "quant.sensitivity=true", cache=cache)
    assert rec["extra"]["bn_recalibrated_layers"] == 9
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    assert len(rows) == 10  # one row per conv/linear of the tiny net
    assert all(float(r["weight_sqnr_db"]) > 0 for r in rows)
