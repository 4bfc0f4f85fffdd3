"""Sweeps: seeds=, launcher names, the experiment files (named sweeps), the parallel launcher end to end."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from bench.cli.hydra_app import check_launcher, expand_seeds, sweep_params
from bench.config import CONF_DIR, check_overrides, group_options, register_configs
from bench.errors import BenchError

MINIS = {"resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"}
QAT_SWEEPS = ["table4_academic", "table5_bnfold", "table6_graph", "table7_hw"]
SWEEPS = ["table4_academic", "table5_bnfold", "table6_graph", "table7_hw", "table10_ptq", "table11_init", "ptq_lowbit"]


def test_seeds_count_and_list_expand_to_a_seed_sweep():
    assert expand_seeds(["algo=lsq", "seeds=3"]) == ["-m", "algo=lsq", "seed=0,1,2"]
    assert expand_seeds(["-m", "seeds=1,4"]) == ["-m", "seed=1,4"]
    assert expand_seeds(["algo=lsq"]) == ["algo=lsq"]  # untouched without seeds=


@pytest.mark.parametrize("argv, needle", [
    (["seeds=0"], "seeds='0' invalid"),
    (["seeds=x"], "seeds='x' invalid"),
    (["seeds=2", "seed=1"], "seeds= and seed= given together"),
])
def test_bad_seeds_one_line(argv, needle):
    with pytest.raises(BenchError, match=needle) as e:
        expand_seeds(argv)
    assert "\n" not in str(e.value)


def test_launcher_names():
    for name in ("local", "parallel", "slurm"):
        check_launcher([f"hydra/launcher={name}"])
    with pytest.raises(BenchError, match="unknown hydra/launcher 'sge'; accepted: local, parallel, slurm"):
        check_launcher(["hydra/launcher=sge"])
    check_launcher(["hydra.launcher.n_jobs=4", "hydra.launcher.threads_per_job=null"])
    for bad in ("hydra.launcher.n_jobs=0", "hydra.launcher.threads_per_job=two"):
        with pytest.raises(BenchError, match=f"{bad} invalid; accepted: an integer >= 1"):
            check_launcher([bad])


def test_default_launcher_is_local_and_others_compose():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose("config", return_hydra_config=True).hydra.launcher
        par = compose("config", overrides=["hydra/launcher=parallel"], return_hydra_config=True).hydra.launcher
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert default._target_.endswith("BasicLauncher")
    assert par._target_.endswith("ParallelLauncher") and par.n_jobs == 2
    assert slurm._target_.endswith("SlurmLauncher") and slurm.max_num_timeout > 0  # timed-out cells are requeued
    assert {"partition", "timeout_min", "gpus_per_node", "array_parallelism"} <= set(slurm)


@pytest.mark.parametrize("name", SWEEPS)
def test_experiment_mini_and_imagenet_forms(name, make_cfg):
    for form, data in ((name, "fashion_mnist"), (f"{name}_imagenet", "imagenet")):
        params = sweep_params([f"experiment={form}"])
        assert params, f"experiment={form} names no sweep"
        # every swept value is a valid option (groups) and the cell count is what the file says it is
        check_overrides([f"{k}={v}" for k, v in params.items()])
        cfg = make_cfg(f"experiment={form}")
        assert cfg.data.name == data
        archs = params.get("arch", cfg.arch.name).split(",")
        assert all((a in MINIS) == (data == "fashion_mnist") for a in archs), (form, archs)
        if data == "imagenet" and name in QAT_SWEEPS:
            assert cfg.train.epochs == 100  # the paper's QAT recipe (Table 3)
        # MQBench: every algorithm fine-tunes the same published FP32 model (shipped minis, timm's ImageNet weights)
        assert cfg.arch.pretrained
        # each QAT algorithm starts as its paper does, but Table 11, which is about the calibration that initialises it
        assert cfg.algo.init == ("calib" if name == "table11_init" else "paper")


@pytest.mark.parametrize("name", ["study_pot_snap", "study_qat_schedule"])
def test_study_experiments_compose(name, make_cfg):
    params = sweep_params([f"experiment={name}"])
    check_overrides([f"{k}={v}" for k, v in params.items()])
    assert set(params["arch"].split(",")) <= MINIS and make_cfg(f"experiment={name}").data.name == "fashion_mnist"


def test_table7_hw_covers_all_profiles_and_minis():
    params = sweep_params(["experiment=table7_hw"])
    assert set(params["hw"].split(",")) == set(group_options("hw"))
    assert set(params["arch"].split(",")) == MINIS
    assert {"lsq", "pact", "dsq", "dorefa"} <= set(params["algo"].split(","))


def test_ptq_bncalib_is_ptq_with_bn_recalibration(make_cfg):
    cfg = make_cfg("algo=ptq_bncalib")
    assert cfg.algo.name == "ptq" and cfg.ptq.bn_recalib is True


def test_parallel_launcher_runs_every_cell_in_its_own_process(tmp_path, run_bench):
    runs = tmp_path / "runs"
    p = run_bench("run", "hydra/launcher=parallel", "data=synthetic", "arch=tiny", "debug=smoke", "algo=ptq",
                  "hw=academic,tvm,tensorrt", "seeds=1", f"runs_dir={runs}", "progress=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(f.read_text()) for f in runs.rglob("result.json")]
    assert sorted(r["hw"] for r in recs) == ["academic", "tensorrt", "tvm"]
    assert all(r["status"] == "ok" for r in recs)
    assert len({r["extra"]["launch"]["host"] for r in recs}) == 1
    assert len(list((runs / ".index").iterdir())) == 3
    # the same sweep again: every cell is skipped by config_hash, nothing new is written
    p = run_bench("run", "-m", "hydra/launcher=parallel", "data=synthetic", "arch=tiny", "debug=smoke", "algo=ptq",
                  "hw=academic,tvm,tensorrt", f"runs_dir={runs}", "progress=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("skipped: identical cell") == 3
    assert len(list(runs.rglob("result.json"))) == 3


def test_parallel_launcher_reads_results_larger_than_a_pipe_buffer(tmp_path, run_bench):
    # a cell's JobReturn carries its whole config: padded past the 64 KiB pipe buffer, the cell blocks in send()
    # until the launcher reads it (a launcher that only waited for the process to exit deadlocked here)
    pad = "x" * 70_000
    p = run_bench("run", "-m", "hydra/launcher=parallel", "data=synthetic", "arch=tiny", "debug=smoke", "algo=fp32",
                  f"runs_dir={tmp_path / 'runs'}", f"+hydra.job.env_set.BENCH_PAD={pad}", tmp_path=tmp_path,
                  timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 1
