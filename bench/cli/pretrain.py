"""``python -m bench pretrain``: train (or load) and cache the FP32 baseline of ``arch`` on ``data``."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.cli.args import fail
from bench.cli.hydra_app import help_text, launch, remove_if_empty_run_dir
from bench.errors import BenchError

SUMMARY = (
    "Trains the FP32 baseline of an arch on a dataset with the baseline recipe (baseline=<data> group), or loads\n"
    "it if cached, and prints its accuracy next to the shipped baseline's (bench/shipped/manifest.json): this\n"
    "reproduces a shipped baseline from its recipe. Cache: cache_dir, else $BENCH_CACHE, else ~/.cache/bench, keyed\n"
    "by the hash of arch, dataset fingerprint and recipe. An interrupted pretraining resumes from its last epoch.\n"
    "Cells start from the shipped baseline (arch.pretrained=true, the *_mini default) and never train one; with\n"
    "arch.pretrained=false `run` calls this same code when the recipe's baseline is not cached yet."
)
EXAMPLES = [
    "python -m bench pretrain arch=resnet18_mini",
    "python -m bench pretrain -m arch=resnet18_mini,resnet50_mini,mobilenetv2_mini,efficientnet_lite0_mini,"
    "regnetx_600mf_mini",
    "python -m bench pretrain arch=tiny data=synthetic",
]
HYDRA_DIRS = [
    "hydra.run.dir=${runs_dir}/pretrain/${now:%Y-%m-%d_%H-%M-%S-%f}_${arch.name}_${data.name}",
    "hydra.sweep.dir=${runs_dir}/pretrain/multirun/${now:%Y-%m-%d_%H-%M-%S-%f}",
    "hydra.sweep.subdir=${hydra.job.num}_${arch.name}_${data.name}",
]


def task(cfg: DictConfig) -> None:
    """Hydra task: load or train the baseline, evaluate it, write ``baseline.json`` beside the metrics."""
    import resource

    import torch

    from bench import baselines
    from bench.config import num_workers
    from bench.data import build_data
    from bench.engine import evaluate
    from bench.engine.metrics import MetricsWriter
    from bench.results import write_json_atomic
    from bench.validate import validate

    out = HydraConfig.get().runtime.output_dir
    try:
        validate(cfg)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        data = build_data(
            cfg.data.name, root=cfg.data.root, batch_size=baselines.batch_size(cfg.baseline, cfg.arch),
            eval_batch_size=cfg.data.eval_batch_size, seed=int(cfg.baseline.seed), augment=bool(cfg.data.augment),
            num_workers=num_workers(cfg.data.num_workers),
        )
        model, meta = baselines.load_or_train(cfg, data, MetricsWriter(f"{out}/metrics.jsonl"), train_recipe=True)
        ev = evaluate(model, data.test, cfg.debug.max_eval_batches)
        shipped = baselines.shipped_entry(cfg.arch.name, cfg.data.name)
    except BenchError as e:
        remove_if_empty_run_dir(out, cfg.runs_dir)
        raise SystemExit(str(e)) from None
    summary = {
        "arch": cfg.arch.name,
        "data": cfg.data.name,
        "source": meta["source"],
        "checkpoint": meta["path"],
        "top1": ev["top1"],
        "top5": ev["top5"],
        "epochs": meta.get("epochs"),
        "train_s": meta.get("train_s"),
        "data_fingerprint": data.fingerprint,
        "params": sum(p.numel() for p in model.parameters()),
        "sha256": meta.get("sha256"),
        "shipped_top1": shipped["top1"] if shipped else None,
        "shipped_sha256": shipped["sha256"] if shipped else None,
    }
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    write_json_atomic(f"{out}/baseline.json", summary)
    how = f"trained in {meta['train_s']:.0f} s" if meta["source"] == "trained" else f"loaded ({meta['source']})"
    print(f"FP32 {cfg.arch.name} on {cfg.data.name}: top-1 {ev['top1']:.2f}% top-5 {ev['top5']:.2f}% "
          f"({how}; {meta['path']})")
    if shipped:
        same = "bit-identical weights" if meta.get("sha256") == shipped.get("weights_sha256") else "other weights"
        print(f"shipped baseline: top-1 {shipped['top1']:.2f}% top-5 {shipped.get('top5', float('nan')):.2f}%; "
              f"this one differs by {ev['top1'] - shipped['top1']:+.2f} points top-1 ({same})")


def main(argv: list[str]) -> int:
    """Entry of the ``pretrain`` verb."""
    if any(a in ("-h", "--help") for a in argv):
        print(help_text("pretrain", SUMMARY, EXAMPLES))
        return 0
    try:
        return launch("pretrain", argv, task, extra=HYDRA_DIRS)
    except BenchError as e:
        return fail(str(e))
