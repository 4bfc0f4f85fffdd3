"""Advanced PTQ methods end to end on the synthetic dataset: every method on every profile it supports runs through
the one pipeline and records its budget and per-unit losses; unsupported profiles fail before any work."""

from __future__ import annotations

import pytest

from bench import runner
from bench.algos import ALGOS
from bench.errors import BenchError
from bench.quant.profiles import load_profile, profile_names

RECON = ["adaround", "brecq", "qdrop", "ioso"]
PER_CHANNEL_ONLY = ["ioso", "bitsplit"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One FP32 baseline for the whole module."""
    return tmp_path_factory.mktemp("cache")


def _cell(make_cfg, tmp_path, *overrides, cache):
    cfg = make_cfg("data=synthetic", "arch=tiny", "baseline.epochs=8", f"cache_dir={cache}",
                   f"runs_dir={tmp_path / 'runs'}", "debug.max_eval_batches=1", "recon.iters=6", *overrides)
    return runner.run(cfg, tmp_path / "runs" / "cell")


def _fits(algo: str, hw: str) -> bool:
    w = load_profile(hw).weight
    return algo not in PER_CHANNEL_ONLY or (w.per_channel and not w.pot_scale)


@pytest.mark.parametrize(("algo", "hw"), [(a, h) for a in RECON + ["bitsplit"] for h in profile_names()])
def test_every_method_on_every_profile(make_cfg, tmp_path, algo, hw, cache):
    if not _fits(algo, hw):
        with pytest.raises(BenchError, match=f"algo={algo} cannot run on hw={hw}: .*; accepted: hw=acl"):
            _cell(make_cfg, tmp_path, f"algo={algo}", f"hw={hw}", "bits.w=3", "bits.a=4", cache=cache)
        assert not (tmp_path / "runs").exists()
        return
    rec = _cell(make_cfg, tmp_path, f"algo={algo}", f"hw={hw}", "bits.w=3", "bits.a=4", cache=cache)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["init_top1"] is not None and rec["top1"] is not None
    extra = rec["extra"]
    if algo in RECON:
        assert extra["recon"]["preset"] == "synthetic" and extra["recon"]["iters"] == 6
        assert extra["recon_layers"] >= 1 and extra["recon_units"]
        assert all(u["loss_after"] >= 0 for u in extra["recon_units"])
        assert rec["config"]["recon"]["iters"] == 6  # the budget is part of the cell's identity
    else:
        assert "recon" not in rec["config"]
        assert extra["bitsplit_layers"] >= 1
    if algo == "ioso":
        assert extra["ioso_int_ops"] > 0 and 0 < extra["ioso_isg_ops_ratio"] < 0.2
        assert sum(extra["ioso_group_counts"]) > 0


def test_stages_of_each_method():
    stages = {a: [(s.units, s.rounding, s.acts_on, s.learn_acts, s.drop_prob) for s in ALGOS.get(a).stages(
        ALGOS.get(a).params_type())] for a in RECON}
    assert stages["adaround"] == [("layer", True, False, False, 0.0)]
    assert stages["brecq"] == [("block", True, False, False, 0.0), ("block", False, True, True, 0.0)]
    assert stages["qdrop"] == [("block", True, True, True, 0.5)]
    assert stages["ioso"] == [("block", True, False, False, 0.0), ("block", False, True, True, 0.0)]


def test_recon_budget_is_not_part_of_other_cells(make_cfg):
    assert runner.cell_hash(make_cfg("algo=ptq", "recon.iters=7")) == runner.cell_hash(make_cfg("algo=ptq"))
    assert runner.cell_hash(make_cfg("algo=brecq", "recon.iters=7")) != runner.cell_hash(make_cfg("algo=brecq"))


def test_presets(make_cfg):
    assert make_cfg("algo=brecq").recon.preset == "fashion_mnist"
    cfg = make_cfg("algo=brecq", "experiment=ptq_imagenet")
    assert cfg.recon.preset == "imagenet" and cfg.recon.iters == 20000 and cfg.data.name == "imagenet"
    std = make_cfg("experiment=ptq_standard")
    assert std.algo.name == "adaround" and std.ptq.cle and std.calib.weight == "mse" and std.calib.act == "mse"


def test_qdrop_mask_rng_moves_the_hash_only_when_not_the_default(make_cfg):
    # records computed before the key existed used torch.rand masks: the default keeps their hash
    torch_masks = make_cfg("algo=qdrop")
    assert torch_masks.algo.params.mask_rng == "torch"
    assert "mask_rng" not in runner.hashed_config(torch_masks)["algo"]["params"]
    assert runner.hashed_config(torch_masks)["algo"]["params"] == {"drop_prob": 0.5}
    splitmix = make_cfg("algo=qdrop", "algo.params.mask_rng=splitmix")
    assert runner.hashed_config(splitmix)["algo"]["params"] == {"drop_prob": 0.5, "mask_rng": "splitmix"}
    assert runner.cell_hash(splitmix) != runner.cell_hash(torch_masks)
    assert ALGOS.get("qdrop").stages(ALGOS.get("qdrop").params(splitmix))[0].mask_rng == "splitmix"
