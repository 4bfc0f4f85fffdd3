"""``python -m bench latency [archs=A,B] [batch=1,8] [profiles=A,B] [reference=true] [image_size=N] [threads=N]
[repeats=N] [out=FILE]``: FP32 vs INT8 onnxruntime latency per arch and profile (MQBench Table 9, every profile)."""

from __future__ import annotations

IMAGENET_ARCHS = ("resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf")
ACCEPTED = ("archs", "batch", "profiles", "reference", "plain", "image_size", "threads", "repeats", "warmup", "out")
USAGE = ("usage: python -m bench latency [archs=A,B] [batch=1,8] [profiles=A,B] [reference=true|false] "
         "[plain=false|true] [image_size=N] [threads=N] [repeats=N] [warmup=N] [out=FILE]")
HELP = f"""{USAGE}

Exports each arch as FP32 ONNX (pre-processed by onnxruntime's quant_pre_process), as onnxruntime's own static
quantization of it (the reference: u8 activations, s8 symmetric per-channel weights) and as each profile's 8-bit QDQ
export (its quantizers calibrated on random data: latency needs no dataset), and times them all with onnxruntime on
this CPU, side by side in one process (runs interleaved): median of `repeats` runs after `warmup`. Reports each INT8
model's speed-up over FP32 and relative to the reference's, the kernels onnxruntime ran (QLinearConv etc. are
integer kernels; Conv/FusedConv/Gemm are float) and, for a profile slower than the reference, which kernel and why.

arguments:
  archs=A,B       default: {",".join(IMAGENET_ARCHS)} (the ImageNet-resolution archs); minis work too
  batch=1,8       batch sizes (default 1,8)
  profiles=A,B    the profiles to export (default: every hardware profile; academic keeps BN in float)
  reference=B     time onnxruntime's own quantization too (default true)
  plain=B         also time each profile's portable QDQ export as written, before the exact onnxruntime rewrites
                  (model <profile>/qdq; default false)
  image_size=N    input resolution (default 224)
  threads=N       onnxruntime intra-op threads (default 1)
  repeats=N       timed runs per batch size and model (default 20); warmup=N untimed runs first (default 5)
  out=FILE        write the rows as CSV and the speed-up table next to it as .md (also printed)

examples:
  python -m bench latency out=results/fmnist-mini/latency.csv
  python -m bench latency archs=resnet18_mini image_size=32 repeats=50"""


def parse(argv: list[str]) -> dict[str, object] | str:
    """The arguments with defaults, or the one-line error of the first bad one."""
    from bench.cli.args import key_values
    from bench.deploy.latency import exportable_profiles
    from bench.models import ARCHS
    from bench.quant.profiles import profile_names

    args: dict[str, object] = {"archs": list(IMAGENET_ARCHS), "batch": [1, 8], "profiles": None, "reference": True,
                               "plain": False,
                               "image_size": 224, "threads": 1, "repeats": 20, "warmup": 5, "out": None}
    given = key_values(argv, ACCEPTED)
    if isinstance(given, str):
        return given
    for key, value in given.items():
        if key == "archs":
            archs = value.split(",")
            bad = [x for x in archs if x not in ARCHS.names() or x == "tiny"]
            if bad:
                return f"unknown arch {bad[0]!r}; accepted: {', '.join(n for n in ARCHS.names() if n != 'tiny')}"
            args[key] = archs
        elif key == "batch":
            try:
                sizes = [int(x) for x in value.split(",")]
            except ValueError:
                return f"batch={value} is not a list of integers"
            if any(s < 1 for s in sizes):
                return f"batch={value}: batch sizes must be >= 1"
            args[key] = sizes
        elif key == "profiles":
            names = exportable_profiles()
            bad = [x for x in value.split(",") if x not in names]
            if bad:
                why = " (academic keeps BN in float: not deployable)" if bad[0] in profile_names() else ""
                return f"unknown profile {bad[0]!r}{why}; accepted: {', '.join(names)}"
            args[key] = value.split(",")
        elif key in ("reference", "plain"):
            if value not in ("true", "false"):
                return f"{key}={value}; accepted: true, false"
            args[key] = value == "true"
        elif key == "out":
            args[key] = value
        else:
            try:
                n = int(value)
            except ValueError:
                return f"{key}={value} is not an integer"
            if n < (0 if key == "warmup" else 1):
                return f"{key}={value} out of range; accepted: >= {0 if key == 'warmup' else 1}"
            args[key] = n
    return args


def main(argv: list[str]) -> int:
    """Entry of the ``latency`` verb."""
    from bench.cli.args import help_or_args

    args = help_or_args(argv, HELP, parse)
    if isinstance(args, int):
        return args
    import pandas as pd
    import torch

    from bench.deploy.latency import measure_arch, speed_table

    torch.set_num_threads(int(args["threads"]))  # type: ignore[arg-type]
    rows = []
    for arch in args["archs"]:  # type: ignore[attr-defined]
        mini = arch.endswith("_mini")
        profiles = tuple(args["profiles"]) if args["profiles"] else None  # type: ignore[arg-type]
        got = measure_arch(arch, profiles=profiles, reference=bool(args["reference"]),
                           plain=bool(args["plain"]),
                           image_size=int(args["image_size"]),  # type: ignore[arg-type]
                           batch_sizes=tuple(args["batch"]), warmup=int(args["warmup"]),  # type: ignore
                           repeats=int(args["repeats"]), threads=int(args["threads"]),  # type: ignore
                           num_classes=10 if mini else 1000)
        for r in got:
            timing = "refused" if r["ms"] is None else f"{r['ms']:9.2f} ms  {r['speedup']:.2f}x"
            print(f"{r['arch']:<20} batch {r['batch']:>2} {r['model']:<12} {timing}  {r['kernels']}"
                  + (f"  -- {r['note']}" if r["note"] else ""), flush=True)
        rows.extend(got)
    table = speed_table(rows)
    print(table, end="")
    if args["out"]:
        from pathlib import Path

        from bench.aggregate.render import write_text

        path = Path(str(args["out"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, pd.DataFrame(rows).to_csv(index=False))
        write_text(path.with_suffix(".md"), table)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0
