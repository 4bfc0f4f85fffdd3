"""Reconstruction speed: time of one reconstruction iteration / time of a plain forward + backward + Adam step of the
same block, per method and stage, side by side in one process (issue 18, item 4; target <= 1.5x).

Usage: ``python benchmarks/recon_speed.py [--threads 2] [--batch 32] [--iters 40] [--rounds 3] [--hw tensorrt]
[--bits w4a8] [--methods adaround,brecq,qdrop,ioso] [--units resnet18_mini:layer2.0,mobilenetv2_mini:blocks.2.0]
[--fused] [--splitmix]``.

Every variant runs on the same prepared, calibrated model (fresh weights, random 1x32x32 images: speed does not
depend on the values): ``plain`` is the block's subgraph with every quantizer off, trained for ``--iters`` steps on its
own FP32 outputs; each method's stage is ``bench.ptq.recon.reconstruct(..., only=<the block, or its layers for
layer-unit stages>)`` with ``iters`` and ``2 iters`` iterations: the difference, divided by ``iters``, is the time of
one iteration without the fixed cost around the loop (capturing inputs, FP32 targets, the loss before and after).
Rounds are interleaved so machine noise hits the variants alike; the median of ``--rounds`` is reported.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.algos import ALGOS
from bench.engine.allocator import keep_heap
from bench.errors import BenchError
from bench.models import build_model
from bench.ptq.calibrate import calibrate
from bench.ptq.recon import ReconSettings, reconstruct
from bench.ptq.units import capture, partition, quant_enabled, subgraph_module
from bench.quant import fused_lsq
from bench.quant.insert import prepare
from bench.quant.profiles import load_profile


def prepared(arch: str, hw: str, w_bits: int, a_bits: int, images: torch.Tensor) -> torch.fx.GraphModule:
    """``arch`` (fresh weights) prepared on profile ``hw`` and calibrated on ``images`` with MinMax."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_chans=1).eval()
    profile = load_profile(hw)
    gm = prepare(model, profile, w_bits=w_bits, a_bits=a_bits, calib_weight="minmax", calib_act="minmax",
                 first_last_bits=profile.first_last_bits)
    calibrate(gm, images, 128)
    return gm


def plain_step(gm: torch.fx.GraphModule, block: str, images: torch.Tensor, batch: int) -> Callable[[int], float]:
    """``run(iters)``: seconds of ``iters`` forward + backward + Adam steps of block ``block`` with quantizers off."""
    unit = next(u for u in partition(gm, "block") if u.name == block)
    with quant_enabled(gm, weights=False, acts=False):  # a quantizer off is the identity: the plain FP32 block
        sub = copy.deepcopy(subgraph_module(gm, [unit.input], [unit.output]))  # the copy keeps them off
        (x_in,) = capture(gm, [unit.input], images, 128)
    sub.eval()
    with torch.no_grad():
        target = sub(x_in[:batch]).detach()
    params = [p for p in sub.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def run(iters: int) -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            idx = torch.randint(0, x_in.shape[0], (batch,), generator=gen)
            loss = (sub(x_in[idx]) - target[: len(idx)]).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    return run


def stage_step(gm: torch.fx.GraphModule, method: str, stage_index: int, block: str, images: torch.Tensor,
               batch: int, **params: Any) -> tuple[str, Callable[[int], float]]:
    """(stage name, ``run(iters)``: seconds of ``reconstruct`` of that stage over the block with ``iters``), the
    method's ``algo.params`` at their defaults but ``params``."""
    algo = ALGOS.get(method)
    stage = algo.stages(algo.params_type(**params))[stage_index]
    units = [u.name for u in partition(gm, stage.units) if u.name == block or u.name.startswith(block + ".")]

    def run(iters: int) -> float:
        g = copy.deepcopy(gm)  # every run starts from the calibrated model
        settings = ReconSettings(iters=iters, batch_size=batch)
        t0 = time.perf_counter()
        reconstruct(g, images, stage, settings, batch_size=128, progress=False, only=units)
        return time.perf_counter() - t0

    return stage.name, run


def with_fused(run: Callable[[int], float]) -> Callable[[int], float]:
    """``run`` with LSQ's fused CPU kernels on (:mod:`bench.quant.fused_lsq`: the learned activation step sizes of
    BRECQ / QDrop run through them; the same numbers)."""

    def fused_run(iters: int) -> float:
        fused_lsq.set_enabled(True)
        try:
            return run(iters)
        finally:
            fused_lsq.set_enabled(False)

    return fused_run


def main() -> None:
    """Print the time per iteration of every method's stages and its ratio to the plain block step."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mmap", action="store_true",
                   help="leave glibc's mmap of large blocks on (cells turn it off: bench.engine.allocator)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=40, help="iterations of the short run (the long run has twice)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hw", default="tensorrt")
    p.add_argument("--bits", default="w4a8")
    p.add_argument("--images", type=int, default=256, help="calibration images")
    p.add_argument("--methods", default="adaround,brecq,qdrop,ioso")
    p.add_argument("--units", default="resnet18_mini:layer2.0,mobilenetv2_mini:blocks.2.0")
    p.add_argument("--fused", action="store_true", help="also time every stage with LSQ's fused CPU kernels")
    p.add_argument("--splitmix", action="store_true",
                   help="also time QDrop with algo.params.mask_rng=splitmix (bench.ptq.drop: other masks)")
    args = p.parse_args()
    try:
        run(args)
    except (BenchError, ValueError) as e:  # one line, as the CLI's errors
        raise SystemExit(f"error: {e}") from None


def run(args: argparse.Namespace) -> None:
    """The benchmark for parsed ``args`` (bad values: BenchError / ValueError naming them)."""
    torch.set_num_threads(args.threads)
    if not args.mmap:
        keep_heap()  # as a cell runs
    bits = args.bits.removeprefix("w").split("a")
    if len(bits) != 2 or not all(b.isdigit() for b in bits):
        raise ValueError(f"--bits {args.bits!r} invalid; accepted: w<bits>a<bits>, e.g. w4a8")
    w_bits, a_bits = (int(b) for b in bits)
    methods = args.methods.split(",")
    for method in methods:
        if not getattr(ALGOS.get(method), "uses_recon", False):
            recon = [n for n in ALGOS.names() if ALGOS.get(n).uses_recon]
            raise ValueError(f"--methods {method!r} is not a reconstruction method; accepted: {', '.join(recon)}")
    torch.manual_seed(0)
    images = torch.randn(args.images, 1, 32, 32)
    print(f"{args.hw} {args.bits}, batch {args.batch}, {args.threads} threads, per-iteration time from "
          f"{args.iters} vs {2 * args.iters} iterations, median of {args.rounds} interleaved rounds")
    print(f"{'arch:block':<32} {'variant':<28} {'ms/iter':>8} {'x plain':>8}")
    for spec in args.units.split(","):
        arch, _, block = spec.partition(":")
        gm = prepared(arch, args.hw, w_bits, a_bits, images)
        blocks = [u.name for u in partition(gm, "block") if u.kind == "block"]
        if block not in blocks:
            raise ValueError(f"--units {spec!r}: {arch} has no block {block!r}; accepted: {', '.join(blocks)}")
        variants: dict[str, Callable[[int], float]] = {"plain fwd+bwd+Adam": plain_step(gm, block, images, args.batch)}
        for method in methods:
            algo = ALGOS.get(method)
            for i, _ in enumerate(algo.stages(algo.params_type())):
                name, run = stage_step(gm, method, i, block, images, args.batch)
                variants[f"{method}:{name}"] = run
                if args.fused:
                    variants[f"{method}:{name} fused"] = with_fused(run)
                if args.splitmix and method == "qdrop":
                    _, run = stage_step(gm, method, i, block, images, args.batch, mask_rng="splitmix")
                    variants[f"{method}:{name} splitmix"] = run
                    if args.fused:
                        variants[f"{method}:{name} splitmix fused"] = with_fused(run)
        per_iter: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                short, long = run(args.iters), run(2 * args.iters)
                per_iter[name].append((long - short) / args.iters)
        base = statistics.median(per_iter["plain fwd+bwd+Adam"])
        for name, ts in per_iter.items():
            med = statistics.median(ts)
            print(f"{arch + ':' + block:<32} {name:<28} {1000 * med:8.2f} {med / base:8.2f}")


if __name__ == "__main__":
    main()
