import json

import pytest

from bench import runner
from bench.errors import BenchError
from bench.results import RECORD_NAME

# fields that may differ between two runs of the same cell
VOLATILE = {"started_at", "finished_at", "wall_s"}

REQUIRED = {
    "schema_version", "track", "algo", "calib_weight", "calib_act", "hw", "graph", "bn_fold", "arch", "data",
    "w_bits", "a_bits", "seed", "status", "fp32_top1", "top1", "top5", "init_top1", "train_epochs", "config_hash",
    "git_sha", "versions", "wall_s", "started_at",
}


def _run(make_cfg, tmp_path, name, *overrides):
    cfg = make_cfg("data=synthetic", "arch=tiny", f"runs_dir={tmp_path / name / 'runs'}",
                   f"cache_dir={tmp_path / name / 'cache'}", *overrides)
    out = tmp_path / name / "runs" / "cell"
    return runner.run(cfg, out), out


def test_record_contract_and_same_seed_identical(make_cfg, tmp_path):
    # two independent runs (own caches, so the baseline is trained twice) must agree exactly
    a, out_a = _run(make_cfg, tmp_path, "a", "baseline.epochs=2")
    b, _ = _run(make_cfg, tmp_path, "b", "baseline.epochs=2")
    assert REQUIRED <= set(a)
    assert set(a["versions"]) == {"python", "torch", "torchvision", "timm"}
    assert a["status"] == "ok" and a["top1"] == a["fp32_top1"] and a["top1"] > 30.0
    # the weights are the same (baseline.sha256); the two cache files differ in their training times
    assert a["baseline"]["sha256"] == b["baseline"]["sha256"] and a["baseline"]["source"] == "trained"
    for r in (a, b):
        r["baseline"].pop("file_sha256")
    assert {k: v for k, v in a.items() if k not in VOLATILE} == {k: v for k, v in b.items() if k not in VOLATILE}
    on_disk = json.loads((out_a / RECORD_NAME).read_text())
    on_disk["baseline"].pop("file_sha256")
    assert on_disk == a
    assert (out_a / "metrics.jsonl").is_file()


def test_the_fp32_evaluation_is_measured_once_per_baseline(make_cfg, tmp_path):
    cache = tmp_path / "cache"
    common = ("data=synthetic", "arch=tiny", "baseline.epochs=2", f"cache_dir={cache}", "debug=smoke")
    first = runner.run(make_cfg(*common, "algo=ptq", "hw=tvm", f"runs_dir={tmp_path / 'r1'}"), tmp_path / "c1")
    second = runner.run(make_cfg(*common, "algo=ptq", "hw=tensorrt", f"runs_dir={tmp_path / 'r2'}"), tmp_path / "c2")
    assert first["baseline"]["top1_from_cache"] is False and second["baseline"]["top1_from_cache"] is True
    assert second["fp32_top1"] == first["fp32_top1"] and second["baseline"]["top5"] == first["baseline"]["top5"]
    assert len(list((cache / "fp32_eval").iterdir())) == 1


def test_different_seed_changes_hash(make_cfg):
    assert runner.cell_hash(make_cfg("seed=0")) != runner.cell_hash(make_cfg("seed=1"))
    # output locations and progress bars do not change what a cell computes
    assert runner.cell_hash(make_cfg("progress=true")) == runner.cell_hash(make_cfg("runs_dir=/elsewhere"))


def test_rerun_is_skipped(make_cfg, tmp_path, capsys):
    first, out = _run(make_cfg, tmp_path, "s", "debug=smoke")
    second, out2 = _run(make_cfg, tmp_path, "s", "debug=smoke")
    assert second == first
    assert "skipped: identical cell already recorded at" in capsys.readouterr().out


def test_incompatible_algorithm_and_profile_fail_before_work(make_cfg, tmp_path):
    cfg = make_cfg("algo=ioso", "hw=tvm", "data=synthetic", "arch=tiny")
    with pytest.raises(BenchError, match="algo=ioso cannot run on hw=tvm: .* per tensor; accepted: hw=acl"):
        runner.run(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_failed_record(make_cfg, tmp_path):
    cfg = make_cfg("algo=apot", "hw=tvm", "data=synthetic", "arch=tiny")
    path = runner.write_failed(cfg, tmp_path / "f", "algo=apot cannot run on hw=tvm")
    rec = json.loads(path.read_text())
    assert rec["status"] == "failed" and rec["error"].startswith("algo=apot") and rec["config_hash"]


def test_deployment_settings_enter_the_hash(make_cfg):
    base = runner.cell_hash(make_cfg("algo=ptq", "hw=tvm"))
    # the target's rounding always does (fake quantization rounds like the target); the checks' settings with a check
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "hw.deploy.rounding=half_even")) != base
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "deploy.max_batches=3")) == base
    checked = runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "deploy.check=true"))
    assert checked != base
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "deploy.check=true", "deploy.max_batches=3")) != checked
    # so does the integer executor's version, where a cell runs it
    assert runner.hashed_config(make_cfg("algo=ptq", "hw=tvm", "deploy.check=true"))["deploy"]["executor"] == (
        runner.EXECUTOR_VERSION)
    assert "deploy" not in runner.hashed_config(make_cfg("algo=ptq", "hw=tvm"))
    # DDP settings never do: a cell is the same computation on any number of processes
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "dist.backend=gloo", "dist.device=cpu")) == base
