"""The quantization report of a prepared model: one row per quantizer, printable and saved beside the record."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch.fx as fx
from torch import nn

from bench.quant.insert import TiedRequant, weighted_modules
from bench.quant.quantizer import FakeQuantize

COLUMNS = (
    "quantizer", "kind", "tensor", "readers", "bits", "signed", "symmetric", "granularity", "scale_form",
    "qmin", "qmax", "scale_min", "scale_max", "zero_point_min", "zero_point_max", "enabled",
)


def _row(name: str, fq: FakeQuantize, tensor: str, readers: str) -> dict[str, Any]:
    spec = fq.spec
    qmin, qmax = fq.qrange
    cal = fq.calibrated and not spec.bypass
    return {
        "quantizer": name,
        "kind": fq.kind,
        "tensor": tensor,
        "readers": readers,
        "bits": spec.bits,
        "signed": fq.signed,
        "symmetric": spec.symmetric,
        "granularity": f"per-channel(axis {spec.ch_axis})" if spec.per_channel else "per-tensor",
        "scale_form": "power-of-two" if spec.pot_scale else "fp32",
        "qmin": qmin,
        "qmax": qmax,
        "scale_min": float(fq.scale.min()) if cal else None,
        "scale_max": float(fq.scale.max()) if cal else None,
        "zero_point_min": int(fq.zero_point.min()) if cal else None,
        "zero_point_max": int(fq.zero_point.max()) if cal else None,
        "enabled": fq.active or fq.observing,
    }


def quant_report(gm: fx.GraphModule) -> list[dict[str, Any]]:
    """Rows for every weight quantizer (its layer) and activation quantizer (the tensor and the nodes reading it)."""
    rows = []
    for layer, m in weighted_modules(gm):
        if isinstance(m.weight_fq, FakeQuantize):
            rows.append(_row(f"{layer}.weight_fq", m.weight_fq, f"{layer}.weight", layer))
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(str(node.target))
        src = node.args[0]
        readers = ",".join(sorted(u.name for u in node.users))
        if isinstance(m, FakeQuantize):
            rows.append(_row(str(node.target), m, getattr(src, "name", str(src)), readers))
        elif isinstance(m, TiedRequant):
            row = _row(str(node.target), m.source, getattr(src, "name", str(src)), readers)
            row["kind"] = f"act (re-quantized with {m.source_name})"
            rows.append(row)
    return rows


def format_report(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of the report."""
    cols = ("quantizer", "kind", "tensor", "bits", "signed", "symmetric", "granularity", "scale_form", "qmin", "qmax",
            "scale_min", "scale_max", "zero_point_min", "zero_point_max")

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines)


def write_report(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Save the report as CSV."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return path


def count_quantizers(gm: nn.Module) -> dict[str, int]:
    """Number of weight quantizers, activation quantizers and re-quantizations (for tests and summaries)."""
    rows = quant_report(gm)  # type: ignore[arg-type]
    return {
        "weight": sum(r["kind"] == "weight" for r in rows),
        "act": sum(r["kind"] == "act" for r in rows),
        "requant": sum(str(r["kind"]).startswith("act (") for r in rows),
    }
