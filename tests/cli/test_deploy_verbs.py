"""``python -m bench check-real``: a quantized cell plus its integer execution, recorded and aggregated."""

from __future__ import annotations

import json

import pandas as pd
import pytest

SMOKE = ["data=synthetic", "arch=tiny", "debug=smoke", "progress=false", "threads=1"]


def test_check_real_records_fake_and_integer_accuracy(tmp_path, run_bench):
    runs = tmp_path / "runs"
    p = run_bench("check-real", *SMOKE, "algo=ptq", "hw=snpe", "bits=w8a8", f"runs_dir={runs}", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "deploy check (fixed_point, half_away)" in p.stdout
    rec = json.loads(next(runs.rglob("result.json")).read_text())
    dep = rec["extra"]["deploy"]
    assert dep["status"] == "ok" and dep["n"] > 0 and dep["int32_overflows"] == 0
    assert dep["fake_top1"] == rec["top1"]  # the fake-quant side is the cell's own evaluation
    assert 0 <= dep["agreement"] <= 100 and dep["max_abs_logit_diff_units"] >= dep["mean_abs_logit_diff_units"]
    assert rec["config"]["deploy"]["check"] is True and rec["config"]["hw"]["deploy"]["requant"] == "fixed_point"
    # the same cell without the check is another cell (its record lacks the deploy fields)
    p = run_bench("run", *SMOKE, "algo=ptq", "hw=snpe", "bits=w8a8", f"runs_dir={runs}", tmp_path=tmp_path)
    assert p.returncode == 0 and "skipped" not in p.stdout
    out = tmp_path / "tables"
    p = run_bench("aggregate", f"runs={runs}", f"out={out}", "plots=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    table = pd.read_csv(out / "deploy_check.csv")
    assert len(table) == 1 and table["hw"][0] == "snpe" and table["agreement"][0] == dep["agreement"]


def test_check_real_needs_a_quantized_cell(tmp_path, run_bench):
    p = run_bench("check-real", *SMOKE, "algo=fp32", f"runs_dir={tmp_path / 'runs'}", tmp_path=tmp_path)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith(
        "error: deploy.check=true (check-real) runs a quantized model; algo=fp32")
    assert not (tmp_path / "runs").exists()


def test_export_writes_qdq_onnx_and_records_onnxruntime_accuracy(tmp_path, run_bench):
    runs = tmp_path / "runs"
    p = run_bench("export", *SMOKE, "algo=ptq", "hw=tensorrt", "bits=w8a8", f"runs_dir={runs}", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rec_path = next(runs.rglob("result.json"))
    rec = json.loads(rec_path.read_text())
    ort = rec["extra"]["onnx"]
    assert ort["status"] == "ok" and ort["fake_top1"] == rec["top1"] and ort["ops"]["QuantizeLinear"] > 0
    assert (rec_path.parent / "model.onnx").is_file() and (rec_path.parent / "model.qparams.json").is_file()
    # the onnxruntime variant (integer kernels on x86) is written and evaluated too
    fast = ort["ort_variant"]
    assert (rec_path.parent / fast["file"]).is_file() and fast["file"] == "model.ort.onnx"
    assert fast["agreement"] >= 95.0 and abs(fast["ort_top1"] - ort["ort_top1"]) <= 5.0
    assert "model.ort.onnx (integer kernels on x86) top-1" in p.stdout
    out = tmp_path / "tables"
    assert run_bench("aggregate", f"runs={runs}", f"out={out}", "plots=false", tmp_path=tmp_path).returncode == 0
    table = pd.read_csv(out / "onnx_runtime.csv")
    assert list(table["status"]) == ["ok"]


@pytest.mark.parametrize(("args", "says"), [
    (["algo=ptq", "hw=fbgemm", "bits=w4a4"], "cannot export hw=fbgemm bits=w4a4: ONNX QDQ at opset 13 holds int8"),
    (["algo=ptq", "hw=academic", "bits=w8a8"], "BN kept in float (bn_fold=-1) is not a deployable graph"),
    (["algo=apot", "bits=w8a8"], "algo=apot cannot be deployed: APoT's additive powers-of-two levels"),
])
def test_export_refuses_what_cannot_be_exported_before_any_work(tmp_path, run_bench, args, says):
    # known from the config alone: one line, exit 2, nothing trained or written
    runs = tmp_path / "runs"
    p = run_bench("export", *SMOKE, *args, f"runs_dir={runs}", tmp_path=tmp_path)
    assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not runs.exists()


def test_check_real_refuses_a_model_off_the_integer_grid_before_any_work(tmp_path, run_bench):
    runs = tmp_path / "runs"
    p = run_bench("check-real", *SMOKE, "algo=qil", f"runs_dir={runs}", tmp_path=tmp_path)
    assert p.returncode == 2 and "algo=qil cannot be deployed: QIL's learned pruning interval" in p.stderr, p.stderr
    assert not runs.exists()
