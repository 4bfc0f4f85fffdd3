"""The CLI as a new user types it: help, list, one cell, and bad input (one line, non-zero exit, nothing written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, tmp_path: Path, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    if check:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


def written(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("verb", ["run", "pretrain", "list", "check-real", "export", "latency", "aggregate"])
def test_help_of_every_verb(tmp_path, verb):
    p = bench(verb, "--help", tmp_path=tmp_path, check=True)
    assert "usage" in p.stdout.lower()


def test_top_level_help_and_unknown_verb(tmp_path):
    assert all(v in bench("--help", tmp_path=tmp_path, check=True).stdout for v in ("run", "pretrain", "list"))
    p = bench("frobnicate", tmp_path=tmp_path)
    from bench.__main__ import VERBS

    assert {"run", "pretrain", "list", "check-real", "export", "latency", "aggregate", "audit"} <= set(VERBS)
    expected = f"error: unknown verb 'frobnicate'; accepted: {', '.join(VERBS)}"
    assert p.returncode != 0 and p.stderr.strip() == expected


def test_list_shows_axes(tmp_path):
    out = bench("list", tmp_path=tmp_path, check=True).stdout
    for name in ("lsq", "tvm", "resnet18_mini", "regnetx_600mf", "fashion_mnist", "w4a4"):
        assert name in out


def truncated_checkpoint(tmp_path: Path) -> Path:
    import torch

    from bench.models import build_model

    p = tmp_path / "user" / "weights.pt"
    p.parent.mkdir()
    torch.save(build_model("tiny", num_classes=10, in_chans=1).state_dict(), p)
    p.write_bytes(p.read_bytes()[:300])
    return p


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["arch=resnet19_mini"], "unknown arch 'resnet19_mini'; accepted: "),
        (["data.root=/no/such/dir"], "data.root='/no/such/dir' does not exist"),
        (["algo=bitsplit", "hw=academic"], "algo=bitsplit cannot run on hw=academic: "),
        (["algo=qdrop", "algo.params.drop_prob=1.5"], "algo.params.drop_prob=1.5 must be in [0, 1)"),
        (["algo=brecq", "+algo.params.fischer=true"], "unknown algo.params.fischer for algo=brecq; accepted: fisher"),
        (["algo=lsq", "ptq.cle=true"], "ptq.cle / ptq.bias_correction are post-training steps; algo=lsq is qat"),
        (["algo=adaround", "recon.iters=0"], "recon.iters=0 must be > 0"),
        (["algo=brecq", "ptq.bn_recalib=true"], "ptq.bn_recalib=true is not a step of algo=brecq"),
        (["algo=apot", "hw=tvm"], "algo=apot cannot run on hw=tvm: APoT's additive powers-of-two levels are "
                                  "non-uniform, which no integer target executes (MQBench Table 2); "
                                  "accepted: hw=academic"),
        (["algo=qil", "hw=snpe"], "algo=qil cannot run on hw=snpe"),
        (["algo=lsq", "bits.w=0"], "bits.w=0 out of range; accepted: 2..8"),
        (["algo=lsq", "train.epochs=-1"], "train.epochs=-1 must be >= 0"),
        (["algo=lsq", "train.steps_per_epoch=0"], "train.steps_per_epoch=0 must be > 0"),
        (["algo=pact", "algo.init=zero"], "unknown algo.init 'zero'; accepted: paper, calib"),
        (["algo=lsq", "+algo.params.lr_scale=2"], "unknown algo.params.lr_scale for algo=lsq; accepted: "),
        (["bits.w=1"], "bits.w=1 out of range"),
        (["algo=ptq", "bits.a=9"], "bits.a=9 out of range; accepted: 2..8"),
        (["algo=ptq", "hw=foo"], "unknown hw 'foo'; accepted: academic, acl, fbgemm, snpe, tensorrt, tvm"),
        (["algo=ptq", "calib.act=bar"], "unknown calib.act 'bar'; accepted: minmax, mse, kld, quantile, norm, meanstd"),
        (["algo=ptq", "quant.graph=5"], "quant.graph=5 invalid; accepted: 1, 2, 3"),
        (["algo=ptq", "quant.only=bias"], "unknown quant.only 'bias'; accepted: all, weights, acts"),
        (["train.epochs=-2"], "train.epochs=-2 must be >= 0"),
        (["data=imagenet"], "data.root"),
        (["TRUNCATED"], "corrupt checkpoint"),
        (["seed=-1"], "seed=-1 must be >= 0"),
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(tmp_path, args, needle):
    before = set(written(tmp_path))
    if args == ["TRUNCATED"]:
        ckpt = truncated_checkpoint(tmp_path)
        args = ["data=synthetic", "arch=tiny", f"arch.checkpoint={ckpt}"]
        before = set(written(tmp_path))
    p = bench("run", *args, "runs_dir=runs", tmp_path=tmp_path)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert set(written(tmp_path)) == before
    assert not (tmp_path / "runs").exists()


def test_smoke_cell_writes_record_then_skips(tmp_path):
    args = ["run", "data=synthetic", "arch=tiny", "debug=smoke", "runs_dir=runs"]
    p = bench(*args, tmp_path=tmp_path, check=True)
    records = list((tmp_path / "runs").rglob("result.json"))
    assert len(records) == 1 and "result: " in p.stdout
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "ok" and rec["track"] == "test" and rec["algo"] == "fp32"
    # one permission mode for every output (mkstemp's 0600 is not it)
    modes = {f.name: f.stat().st_mode & 0o777 for f in records[0].parent.iterdir() if f.is_file()}
    assert len(set(modes.values())) == 1 and modes["result.json"] == modes["metrics.jsonl"], modes
    runs_before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    again = bench(*args, tmp_path=tmp_path, check=True)
    assert (again.stdout + again.stderr).count("skipped: identical cell already recorded at") == 1
    # a skipped cell leaves nothing behind: no second (empty) run folder
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*")) == runs_before


@pytest.mark.parametrize("sweep", [False, True])
def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, sweep):
    (tmp_path / "afile").write_text("x")
    for runs, says in (("/proc/forbidden", "runs_dir='/proc/forbidden' is not writable"),
                       (str(tmp_path / "afile" / "runs"), f"is not a directory ({tmp_path / 'afile'} is a file)")):
        args = ["-m", "seed=0,1"] if sweep else []
        p = bench("run", *args, "data=synthetic", "arch=tiny", "debug=smoke", f"runs_dir={runs}", tmp_path=tmp_path)
        err = p.stderr.strip()
        assert p.returncode == 2 and len(err.splitlines()) == 1 and says in err, err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["afile"]


def test_multirun_records_failed_cell_and_goes_on(tmp_path):
    bench("run", "-m", "algo=lsq,apot,ioso", "hw=tvm", "data=synthetic", "arch=tiny", "debug=smoke",
          "runs_dir=runs", tmp_path=tmp_path, check=True)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    recs = {r["algo"]: r for r in recs}
    assert recs["lsq"]["status"] == "ok"
    assert recs["apot"]["status"] == "failed" and "cannot run on hw=tvm" in recs["apot"]["error"]
    assert recs["ioso"]["status"] == "failed" and "cannot run on hw=tvm" in recs["ioso"]["error"]


def test_pretrain_verb(tmp_path):
    p = bench("pretrain", "data=synthetic", "arch=tiny", "debug=smoke", "runs_dir=runs", tmp_path=tmp_path, check=True)
    assert "FP32 tiny on synthetic: top-1" in p.stdout
    assert list((tmp_path / "cache" / "baselines").glob("tiny__synthetic__*.pt"))
    summary = json.loads(next((tmp_path / "runs" / "pretrain").rglob("baseline.json")).read_text())
    assert summary["source"] == "trained"
