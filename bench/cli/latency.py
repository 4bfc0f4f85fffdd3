"""``python -m bench latency [archs=A,B] [batch=1,8] [profile=NAME] [image_size=N] [threads=N] [repeats=N]
[out=FILE]``: FP32 vs INT8 onnxruntime latency per arch (MQBench Table 9 analogue)."""

from __future__ import annotations

IMAGENET_ARCHS = ("resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf")
ACCEPTED = ("archs", "batch", "profile", "image_size", "threads", "repeats", "warmup", "out")
USAGE = ("usage: python -m bench latency [archs=A,B] [batch=1,8] [profile=NAME] [image_size=N] [threads=N] "
         "[repeats=N] [warmup=N] [out=FILE]")
HELP = f"""{USAGE}

Exports each arch as FP32 ONNX and as 8-bit QDQ ONNX (the profile's quantizers, calibrated on random data: latency
needs no dataset), and times both with onnxruntime on this CPU, side by side in one process (runs interleaved):
median of `repeats` runs after `warmup`. Reports the INT8 speed-up over FP32 and the kernels onnxruntime ran for
the INT8 model (QLinearConv etc. are integer kernels; Conv/Gemm are float fall-backs).

arguments:
  archs=A,B       default: {",".join(IMAGENET_ARCHS)} (the ImageNet-resolution archs); minis work too
  batch=1,8       batch sizes (default 1,8)
  profile=NAME    quantizer profile of the INT8 model (default fbgemm: x86 CPUs); an 8-bit hardware profile
  image_size=N    input resolution (default 224)
  threads=N       onnxruntime intra-op threads (default 1)
  repeats=N       timed runs per batch size and model (default 20); warmup=N untimed runs first (default 5)
  out=FILE        write the rows as CSV (also printed as a table)

examples:
  python -m bench latency out=results/fmnist-mini/latency.csv
  python -m bench latency archs=resnet18_mini image_size=32 repeats=50"""


def parse(argv: list[str]) -> dict[str, object] | str:
    """The arguments with defaults, or the one-line error of the first bad one."""
    from bench.cli.args import key_values
    from bench.models import ARCHS
    from bench.quant.profiles import profile_names

    args: dict[str, object] = {"archs": list(IMAGENET_ARCHS), "batch": [1, 8], "profile": "fbgemm",
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
        elif key == "profile":
            names = [n for n in profile_names() if n != "academic"]
            if value not in names:
                return f"unknown profile {value!r}; accepted: {', '.join(names)} (academic is not deployable)"
            args[key] = value
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

    from bench.deploy.latency import measure_arch

    torch.set_num_threads(int(args["threads"]))  # type: ignore[arg-type]
    rows = []
    for arch in args["archs"]:  # type: ignore[attr-defined]
        mini = arch.endswith("_mini")
        got = measure_arch(arch, profile=str(args["profile"]), image_size=int(args["image_size"]),  # type: ignore
                           batch_sizes=tuple(args["batch"]), warmup=int(args["warmup"]),  # type: ignore
                           repeats=int(args["repeats"]), threads=int(args["threads"]),  # type: ignore
                           num_classes=10 if mini else 1000)
        for r in got:
            print(f"{r['arch']:<20} batch {r['batch']:>2}: fp32 {r['fp32_ms']:9.2f} ms  int8 {r['int8_ms']:9.2f} ms  "
                  f"speed-up {r['speedup']:.2f}x  ({r['integer_kernels']} integer kernels)", flush=True)
        rows.extend(got)
    df = pd.DataFrame(rows)
    if args["out"]:
        from pathlib import Path

        from bench.aggregate.render import write_text

        path = Path(str(args["out"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, df.to_csv(index=False))
        print(f"wrote {path}")
    return 0
