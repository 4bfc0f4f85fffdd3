"""Speed of the ``fmnist-mini`` archs: parameters, MACs and FP32 training step time on CPU.

Usage: ``python benchmarks/mini_arch_speed.py [--archs a,b] [--steps 20] [--batch 128] [--threads 2]``.
The step is forward + cross-entropy + backward + SGD (Nesterov) update on random 1x32x32 data; the epoch
estimate assumes 60k Fashion-MNIST training images.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bench.models import ARCH_INFO, ARCHS, build_model

TRAIN_IMAGES = 60_000


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass per image, counting Conv2d and Linear layers only."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        per_out = m.weight[0].numel()  # (in/groups)*kh*kw for conv, in_features for linear
        total += out.numel() // out.shape[0] * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(x[:1])
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def step_time(model: nn.Module, batch: int, size: int, in_chans: int, steps: int, warmup: int = 3) -> float:
    """Median seconds of one training step (forward, loss, backward, optimiser step)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, in_chans, size, size)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    """Print one row per mini arch."""
    minis = [n for n in ARCHS.names() if ARCH_INFO[n]["track"] == "fmnist-mini"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(minis), help="comma-separated arch names")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}")
    print(f"{'arch':<26}{'params':>10}{'MMACs':>9}{'ms/step':>10}{'s/epoch':>10}")
    for name in args.archs.split(","):
        info = ARCH_INFO[name]
        torch.manual_seed(0)
        model = build_model(name, info["num_classes"], info["in_chans"])
        size = info["input_size"]
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, torch.randn(1, info["in_chans"], size, size))
        t = step_time(model, args.batch, size, info["in_chans"], args.steps)
        epoch = t * TRAIN_IMAGES / args.batch
        print(f"{name:<26}{params:>10,}{macs / 1e6:>9.2f}{t * 1e3:>10.1f}{epoch:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
