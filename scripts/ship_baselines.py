"""Write the shipped FP32 baselines of the fmnist-mini track (``bench/shipped``) from baselines trained with
``python -m bench pretrain`` (their cache files), with the manifest: sha256, recipe, data fingerprint, top-1 / top-5.

    python -m bench pretrain -m \
        arch=resnet18_mini,resnet50_mini,mobilenetv2_mini,efficientnet_lite0_mini,regnetx_600mf_mini
    python scripts/ship_baselines.py [arch ...]

Maintainers only: the shipped weights are part of the benchmark's definition; replacing them changes every cell's
``config_hash`` and every committed number.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import baselines  # noqa: E402
from bench.cli.hydra_app import compose_config  # noqa: E402
from bench.data import build_data  # noqa: E402
from bench.results import config_hash, versions, write_json_atomic  # noqa: E402

MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(archs: list[str]) -> None:
    out = baselines.SHIPPED_DIR
    manifest_path = out / baselines.MANIFEST_NAME
    entries = {(e["arch"], e["data"]): e for e in baselines.shipped_manifest()["baselines"]}
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for arch in archs:
        cfg = compose_config([f"arch={arch}", "arch.pretrained=false"])
        data = build_data(cfg.data.name, root=cfg.data.root, batch_size=128, eval_batch_size=512, seed=0)
        key = baselines.baseline_key(cfg, data.fingerprint)
        src = baselines.baseline_path(cfg, key)
        obj = baselines.load_checkpoint(src)
        meta = obj["meta"]
        state = {k: v.detach().cpu().clone() for k, v in obj["state_dict"].items()}
        rel = Path(cfg.data.name) / f"{arch}.pt"
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, dst)
        entries[(arch, cfg.data.name)] = {
            "arch": arch, "data": cfg.data.name, "file": str(rel), "sha256": baselines.file_sha256(dst),
            "weights_sha256": baselines.weights_sha256(state),
            "bytes": dst.stat().st_size, "params": sum(v.numel() for k, v in state.items() if "running" not in k
                                                       and "num_batches" not in k),
            "top1": meta["top1"], "top5": meta["top5"], "epochs": meta["epochs"], "train_s": round(meta["train_s"], 1),
            "data_fingerprint": data.fingerprint, "key_hash": config_hash(key), "recipe": key,
            "trained_at": meta.get("created_at"), "versions": meta.get("versions") or versions(),
            "machine": {"cpu": _cpu(), "system": platform.system(), "python": platform.python_version()},
            "commit": sha,
        }
        print(f"{arch}: {dst} sha256 {entries[(arch, cfg.data.name)]['sha256'][:16]} top-1 {meta['top1']:.2f}")
    manifest = {
        "about": "FP32 baselines of the fmnist-mini track: every cell of the track starts from these weights "
                 "(bench.baselines). Reproduce one from its recipe with `python -m bench pretrain arch=<arch>`.",
        "written_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "baselines": sorted(entries.values(), key=lambda e: (e["data"], MINIS.index(e["arch"])
                                                              if e["arch"] in MINIS else 99, e["arch"])),
    }
    write_json_atomic(manifest_path, manifest)


if __name__ == "__main__":
    main(sys.argv[1:] or MINIS)
