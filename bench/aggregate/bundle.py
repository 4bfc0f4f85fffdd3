"""``records.jsonl.gz``: what a record's site page needs from its run folder, committed beside ``cells.csv``.

Run folders are not committed, so without this file a site of the committed results could not show a record's config,
training curve, quantizer ranges or deployment check. One JSON line per deduplicated record (the rows of
``cells.csv``, in its order), keyed by ``config_hash``:

- ``config``: the record's config (``result.json``), not rounded (it hashes to the record's ``config_hash``);
- ``curve``: the rows of its ``metrics.jsonl``, at most :data:`CURVE_ROWS` (:func:`downsample`), not rounded;
- ``quantizers``: per quantizer of its ``qparams.json`` a summary, no per-channel arrays (:func:`summarize_qparams`);
- ``deploy`` / ``onnx``: its ``extra.deploy`` / ``extra.onnx`` as recorded;
- ``record``: the whole ``result.json`` but its config, **not rounded**, and ``overrides``: the Hydra overrides it was
  launched with (``.hydra/overrides.yaml``): with ``config`` and ``curve`` they make the record whole again, so
  ``python -m bench restore`` can put the committed records back into a runs folder on another machine (a
  regeneration that spans machines resumes instead of re-running them);
- ``restored``: for a record that came back that way, its original run folder, whether the committed results held
  it whole (``source``) and what they did not hold (``missing``).

A missing or unreadable file gives None for its part. The bytes are deterministic (sorted keys, compact separators,
floats rounded to :data:`DIGITS` significant digits but in ``record``, ``config`` and ``curve``, gzip without a
timestamp): the same records give the same file. A restored run folder has no ``qparams.json``: its quantizer
summary comes from its ``restored.json``.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aggregate.records import launch_overrides
from bench.results import write_atomic

BUNDLE_NAME = "records.jsonl.gz"
RESTORED_NAME = "restored.json"  # beside the result.json of a record put back by ``bench restore``
CURVE_ROWS = 200  # at most this many metrics rows per record
DIGITS = 6  # significant digits of every float


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict] | None:
    """The JSON-object lines of a ``metrics.jsonl`` (other lines skipped); None when the file is missing, unreadable,
    or has lines but not one object."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    rows = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows if rows or not lines else None


def downsample(rows: Sequence[dict], limit: int = CURVE_ROWS) -> list[dict]:
    """At most ``limit`` rows, evenly spread, the first and last kept; the epoch-end test rows (a ``test_*`` field)
    are kept too while they are at most half of ``limit``."""
    n = len(rows)
    if n <= limit:
        return list(rows)
    keep = {0, n - 1}
    tests = [i for i, r in enumerate(rows) if any(str(k).startswith("test_") for k in r)]
    if len(tests) <= limit // 2:
        keep.update(tests)
    rest = [i for i in range(n) if i not in keep]
    k = limit - len(keep)  # < len(rest), since n > limit
    keep.update(rest[(2 * j + 1) * len(rest) // (2 * k)] for j in range(k))
    return [rows[i] for i in sorted(keep)]


def _numbers(v: Any) -> list[int | float]:
    """The finite numbers of a number or a (nested) list (integers stay integers)."""
    if isinstance(v, bool):
        return []
    if isinstance(v, int | float):
        return [v] if math.isfinite(v) else []
    if isinstance(v, list):
        return [x for item in v for x in _numbers(item)]
    return []


def _span(values: list[int | float]) -> dict[str, int | float] | None:
    return {"min": min(values), "max": max(values)} if values else None


def summarize_qparams(qparams: Any) -> dict[str, dict] | None:
    """Per quantizer of a ``qparams.json``: ``index`` (its place in the file: the graph order, which the bundle's
    sorted keys lose), kind, spec, signed, qmin, qmax, ``channels`` (entries of its scale),
    ``scale`` and ``zero_point`` as ``{min, max}`` over channels (plus ``scale_value`` / ``zero_point_value`` when
    per-tensor), ``range``: the real range ``scale * ([qmin, qmax] - zero_point)`` as ``{min, max}`` over channels,
    and ``learned``: ``{name: {min, max}}``. None when ``qparams`` is not an object."""
    if not isinstance(qparams, Mapping):
        return None
    out: dict[str, dict] = {}
    for index, (name, q) in enumerate(qparams.items()):
        if not isinstance(q, Mapping):
            continue
        scale, zp = _numbers(q.get("scale")), _numbers(q.get("zero_point"))
        qmin, qmax = q.get("qmin"), q.get("qmax")
        s: dict[str, Any] = {k: q.get(k) for k in ("kind", "spec", "signed", "qmin", "qmax")}
        s.update(index=index, channels=len(scale), scale=_span(scale), zero_point=_span(zp))
        if len(scale) == 1:
            s["scale_value"] = scale[0]
        if len(zp) == 1:
            s["zero_point_value"] = zp[0]
        lims = _numbers([qmin, qmax])
        if scale and len(lims) == 2:
            zps = zp if len(zp) == len(scale) else [0.0] * len(scale)
            s["range"] = {"min": min(x * (lims[0] - z) for x, z in zip(scale, zps, strict=True)),
                          "max": max(x * (lims[1] - z) for x, z in zip(scale, zps, strict=True))}
        learned = q.get("learned")
        if isinstance(learned, Mapping):
            s["learned"] = {str(k): _span(_numbers(v)) for k, v in learned.items()}
        out[str(name)] = s
    return out


def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """``obj`` with every finite float rounded to ``digits`` significant digits (tuples become lists)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def entry(config_hash: str, result_path: str | Path) -> dict[str, Any]:
    """The bundle line of one record, read from its run folder (``result_path``: its result.json)."""
    path = Path(result_path)
    parts = ("config", "curve", "quantizers", "deploy", "onnx", "record", "overrides", "restored")
    if not path.name:  # no result.json to read beside
        return {"config_hash": config_hash, **dict.fromkeys(parts)}
    rec = read_json(path)
    rec = rec if isinstance(rec, dict) else {}
    extra = rec.get("extra") if isinstance(rec.get("extra"), Mapping) else {}
    config = rec.get("config")
    curve = read_jsonl(path.with_name("metrics.jsonl"))
    qname = extra.get("qparams_json")
    qname = qname if isinstance(qname, str) and qname and Path(qname).name == qname else "qparams.json"
    restored = read_json(path.with_name(RESTORED_NAME))
    restored = restored if isinstance(restored, dict) else None
    quantizers = summarize_qparams(read_json(path.with_name(qname)))
    if quantizers is None and restored is not None:  # a restored record: its summary as committed
        quantizers = restored.get("quantizers")
    return {"config_hash": config_hash, "config": config if isinstance(config, Mapping) else None,
            "curve": downsample(curve) if curve is not None else None,
            "quantizers": quantizers,
            "deploy": extra.get("deploy"), "onnx": extra.get("onnx"),
            "record": {k: v for k, v in rec.items() if k != "config"} or None,
            "overrides": _overrides(path),
            # where it came from, not how or when it was restored: the same records give the same line
            "restored": {k: restored.get(k) for k in ("source", "missing", "original_path")} if restored else None}


def _overrides(result_path: Path) -> list[str] | None:
    """The launch overrides beside a result.json (``.hydra/overrides.yaml``) as a list, or None."""
    text = launch_overrides(result_path)
    return json.loads(text) if text is not None else None


def dumps(obj: Any, exact: tuple[str, ...] = ("record", "config", "curve")) -> str:
    """One deterministic JSON line (floats rounded but in the keys ``exact``, sorted keys, compact separators)."""
    out = rounded({k: v for k, v in obj.items() if k not in exact}) if isinstance(obj, Mapping) else rounded(obj)
    if isinstance(obj, Mapping):
        out.update({k: obj[k] for k in exact if k in obj})
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def write_bundle(recs: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``<out_dir>/records.jsonl.gz`` for the records ``recs`` (the rows of cells.csv: ``config_hash`` and
    ``path``, the record's result.json), atomically; returns its path."""
    lines = []
    for h, p in zip(recs.get("config_hash", []), recs.get("path", []), strict=True):
        if isinstance(h, str) and h:
            lines.append(dumps(entry(h, p if isinstance(p, str) else "")) + "\n")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:  # no name, no time
        gz.write("".join(lines).encode("utf-8"))
    return write_atomic(Path(out_dir) / BUNDLE_NAME, lambda t: t.write_bytes(buf.getvalue()))


def read_bundle(path: str | Path) -> dict[str, dict]:
    """The lines of a bundle by ``config_hash``; {} when the file is missing or unreadable (bad lines skipped)."""
    try:
        text = gzip.decompress(Path(path).read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return {}
    out: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("config_hash"), str):
            out.setdefault(obj["config_hash"], obj)
    return out
