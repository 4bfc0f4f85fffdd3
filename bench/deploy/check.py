"""Fake quantization vs integer execution on a test set (``deploy.check=true``, ``python -m bench check-real``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx

from bench.deploy.executor import IntegerExecutor, IntTensor, NotExecutable
from bench.engine import distributed
from bench.quant.insert import TiedRequant
from bench.quant.profiles import HardwareProfile
from bench.quant.quantizer import FakeQuantize


@torch.no_grad()
def code_mismatches(gm: fx.GraphModule, ex: IntegerExecutor, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per activation quantizer (graph order): the share of its integer codes on which fake quantization and the
    integer executor disagree for the batch ``x``, and the largest difference in codes. Where the simulation and the
    target part, the first row with mismatches names the layer."""
    trace: dict[str, IntTensor] = {}
    ex.run(x, trace)
    fake: dict[str, torch.Tensor] = {}
    wanted = {n.name: n for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(str(n.target)), FakeQuantize | TiedRequant)}

    class _Capture(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n.name in wanted:
                fake[n.name] = out
            return out

    _Capture(gm).run(x)
    rows = []
    for name in wanted:
        if name not in trace or name not in fake:
            continue
        it = trace[name]
        q = it.q.to(torch.float64)
        s = it.scale.to(torch.float64)
        z = it.zero.to(torch.float64)
        if s.dim():
            shape = [1, -1] + [1] * (q.dim() - 2)
            s, z = s.reshape(shape), z.reshape(shape)
        fq = torch.round(fake[name].to(torch.float64) / s) + z
        diff = (fq - q).abs()
        rows.append({"node": name, "codes": int(q.numel()), "mismatch": float((diff > 0).double().mean()),
                     "max_code_diff": int(diff.max().item()) if diff.numel() else 0})
    return rows


@torch.no_grad()
def check_real(gm: fx.GraphModule, profile: HardwareProfile, loader: Iterable, max_batches: int | None = None
               ) -> dict[str, Any]:
    """Evaluate ``gm`` (fake quantization) and its integer execution on ``loader``.

    Returns the top-1 of both, the share of test images on which their predictions agree, and the max / mean
    absolute difference of the logits in units of the output scale (the last layer's accumulator step ``s_x s_w``
    of each class), plus the integer executor's overflow counts. A model the executor refuses gives
    ``status = "not_executable"`` and the reason.
    """
    t0 = time.perf_counter()
    try:
        ex = IntegerExecutor(gm, profile.requant, profile.rounding, float_between=profile.graph == 1)
    except NotExecutable as e:
        return {"status": "not_executable", "reason": str(e), "requant": profile.requant, "rounding": profile.rounding}
    was = gm.training
    gm.eval()
    n = fake_hit = int_hit = agree = 0
    max_diff, sum_diff, count = 0.0, 0.0, 0
    dev = distributed.current().device
    first: torch.Tensor | None = None
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(dev), y.to(dev)
        if first is None:
            first = x
        fake = gm(x).to(torch.float64)
        try:
            out = ex.run(x)
        except NotExecutable as e:
            gm.train(was)
            return {"status": "not_executable", "reason": str(e), "requant": profile.requant,
                    "rounding": profile.rounding}
        real = out.value()
        units = (fake - real).abs() / out.scale.abs().reshape(1, -1)
        max_diff = max(max_diff, float(units.max()))
        sum_diff += float(units.sum())
        count += units.numel()
        fp, ip = fake.argmax(1), real.argmax(1)
        fake_hit += int((fp == y).sum())
        int_hit += int((ip == y).sum())
        agree += int((fp == ip).sum())
        n += int(y.numel())
    layers = code_mismatches(gm, ex, first) if first is not None else []
    gm.train(was)
    stats = ex.stats.values()
    return {
        "status": "ok", "n": n, "requant": profile.requant, "rounding": profile.rounding,
        "fake_top1": 100.0 * fake_hit / max(n, 1), "int_top1": 100.0 * int_hit / max(n, 1),
        "agreement": 100.0 * agree / max(n, 1),
        "max_abs_logit_diff_units": max_diff, "mean_abs_logit_diff_units": sum_diff / max(count, 1),
        "int32_overflows": sum(s.overflows for s in stats),
        "max_abs_acc": max((s.max_abs_acc for s in stats), default=0),
        "acc_bound": max((s.bound for s in stats), default=0),
        "check_s": round(time.perf_counter() - t0, 3),
        # per activation quantizer on the first test batch: share of integer codes where simulation and target differ
        "layer_code_mismatch": {r["node"]: round(r["mismatch"], 6) for r in layers},
        "first_mismatch_layer": next((r["node"] for r in layers if r["mismatch"] > 0), None),
    }


def format_check(res: dict[str, Any]) -> str:
    """One line for the console."""
    if res.get("status") != "ok":
        return f"deploy check: {res.get('status')}: {res.get('reason')}"
    where = f"  first differing layer {res['first_mismatch_layer']}" if res.get("first_mismatch_layer") else ""
    return (f"deploy check ({res['requant']}, {res['rounding']}): fake-quant top-1 {res['fake_top1']:.2f}  integer "
            f"top-1 {res['int_top1']:.2f}  agreement {res['agreement']:.2f}%  logit diff max "
            f"{res['max_abs_logit_diff_units']:.1f} / mean {res['mean_abs_logit_diff_units']:.2f} output steps  "
            f"int32 overflows {res['int32_overflows']} (largest |acc| {res['max_abs_acc']}, bound {res['acc_bound']})"
            f"{where}")
