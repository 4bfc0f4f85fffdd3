"""Reconstruction speed: time of one reconstruction iteration / time of a plain forward + backward + Adam step of the
same block, per method and stage, side by side in one process (issue 18, item 4; target <= 1.5x).

Usage: ``python benchmarks/recon_speed.py [--threads 2] [--batch 32] [--iters 40] [--rounds 3] [--hw tensorrt]
[--bits w4a8] [--methods adaround,brecq,qdrop,ioso] [--units resnet18_mini:layer2.0,mobilenetv2_mini:blocks.2.0]
[--fused] [--splitmix]``.

Every variant runs on the same prepared, calibrated model (fresh weights, random 1x32x32 images: speed does not
depend on the values): ``plain`` is the block's subgraph with every quantizer off, trained for ``--iters`` steps on its
own FP32 outputs; each method's stage is ``bench.ptq.recon.reconstruct(..., only=<the block, or its layers for
layer-unit stages>)`` with ``--iters`` iterations. An iteration is timed from one optimizer step to the next (torch's
global optimizer step hook): the whole loop body (batch, masks, forward, loss, backward, step), none of the fixed cost
around the loop (capturing inputs, FP32 targets, the loss before and after). Per unit the median interval over all
rounds is taken; a stage that reconstructs the block layer by layer (AdaRound) sums its layers' medians, the cost of
one iteration on every layer of the block. Rounds are interleaved so machine noise hits the variants alike, every
other one in reverse order.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

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


class StepClock:
    """Seconds between consecutive steps of each optimizer created while it is on (torch's global step post-hook):
    ``units`` holds one list of intervals per optimizer, in the order they first stepped."""

    def __init__(self) -> None:
        self.units: list[list[float]] = []
        self._last: tuple[Any, float] | None = None

    def _hook(self, opt: Any, args: Any, kwargs: Any) -> None:
        now = time.perf_counter()
        if self._last is not None and self._last[0] is opt:
            self.units[-1].append(now - self._last[1])
        else:  # a new unit's optimizer: its first step closes no interval
            self.units.append([])
        self._last = (opt, now)

    def measure(self, fn: Callable[[], Any]) -> list[list[float]]:
        """The intervals of every optimizer ``fn()`` steps."""
        self.units, self._last = [], None
        handle = register_optimizer_step_post_hook(self._hook)
        try:
            fn()
        finally:
            handle.remove()
        return self.units


def plain_step(gm: torch.fx.GraphModule, block: str, images: torch.Tensor, batch: int) -> Callable[[int], None]:
    """``run(iters)``: ``iters`` forward + backward + Adam steps of block ``block`` with quantizers off."""
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

    def run(iters: int) -> None:
        for _ in range(iters):
            idx = torch.randint(0, x_in.shape[0], (batch,), generator=gen)
            loss = (sub(x_in.index_select(0, idx)) - target[: len(idx)]).pow(2).sum(1).mean()  # rows as recon's
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def stage_step(gm: torch.fx.GraphModule, method: str, stage_index: int, block: str, images: torch.Tensor,
               batch: int, **params: Any) -> tuple[str, Callable[[int], None]]:
    """(stage name, ``run(iters)``: ``reconstruct`` of that stage over the block with ``iters``), the method's
    ``algo.params`` at their defaults but ``params``."""
    algo = ALGOS.get(method)
    stage = algo.stages(algo.params_type(**params))[stage_index]
    units = [u.name for u in partition(gm, stage.units) if u.name == block or u.name.startswith(block + ".")]

    def run(iters: int) -> None:
        g = copy.deepcopy(gm)  # every run starts from the calibrated model
        settings = ReconSettings(iters=iters, batch_size=batch)
        reconstruct(g, images, stage, settings, batch_size=128, progress=False, only=units)

    return stage.name, run


def with_fused(run: Callable[[int], None]) -> Callable[[int], None]:
    """``run`` with LSQ's fused CPU kernels on (:mod:`bench.quant.fused_lsq`: the learned activation step sizes of
    BRECQ / QDrop run through them; the same numbers)."""

    def fused_run(iters: int) -> None:
        fused_lsq.set_enabled(True)
        try:
            run(iters)
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
    p.add_argument("--iters", type=int, default=40, help="iterations per unit per round (at least 2)")
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
    if args.iters < 2:
        raise ValueError(f"--iters {args.iters} too small; accepted: 2 or more (an interval needs two steps)")
    methods = args.methods.split(",")
    for method in methods:
        if not getattr(ALGOS.get(method), "uses_recon", False):
            recon = [n for n in ALGOS.names() if ALGOS.get(n).uses_recon]
            raise ValueError(f"--methods {method!r} is not a reconstruction method; accepted: {', '.join(recon)}")
    torch.manual_seed(0)
    images = torch.randn(args.images, 1, 32, 32)
    print(f"{args.hw} {args.bits}, batch {args.batch}, {args.threads} threads, per-iteration time: median interval "
          f"between optimizer steps, {args.iters} iterations per unit in each of {args.rounds} interleaved rounds")
    print(f"{'arch:block':<32} {'variant':<28} {'ms/iter':>8} {'x plain':>8}")
    for spec in args.units.split(","):
        arch, _, block = spec.partition(":")
        gm = prepared(arch, args.hw, w_bits, a_bits, images)
        blocks = [u.name for u in partition(gm, "block") if u.kind == "block"]
        if block not in blocks:
            raise ValueError(f"--units {spec!r}: {arch} has no block {block!r}; accepted: {', '.join(blocks)}")
        variants: dict[str, Callable[[int], None]] = {"plain fwd+bwd+Adam": plain_step(gm, block, images, args.batch)}
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
        clock = StepClock()
        intervals: dict[str, list[list[float]]] = {k: [] for k in variants}  # per unit, pooled over rounds
        order = list(variants.items())
        for r in range(args.rounds):
            # every other round backwards: a variant's neighbour (the allocator's and caches' state it leaves) is not
            # always the same one (in one order AdaRound read 1.53x eager and 1.78x fused for the same work)
            for name, run in order if r % 2 == 0 else order[::-1]:
                units = clock.measure(lambda run=run: run(args.iters))
                pooled = intervals[name]
                pooled.extend([] for _ in range(len(units) - len(pooled)))
                for k, ts in enumerate(units):
                    pooled[k].extend(ts)
        per_iter = {k: sum(statistics.median(ts) for ts in units) for k, units in intervals.items()}
        base = per_iter["plain fwd+bwd+Adam"]
        for name, t in per_iter.items():
            print(f"{arch + ':' + block:<32} {name:<28} {1000 * t:8.2f} {t / base:8.2f}")

if __name__ == "__main__":
    main()
