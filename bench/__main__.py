"""``python -m bench <verb> ...``: verb dispatch only."""

from __future__ import annotations

import sys

VERBS = {
    "run": ("bench.cli.run", "run one grid cell, or a Hydra multirun with -m"),
    "pretrain": ("bench.cli.pretrain", "train (or load) and cache the FP32 baseline of an arch on a dataset"),
    "list": ("bench.cli.list_", "show what each grid axis offers (algo, hw, arch, data, bits, ...)"),
    "check-real": ("bench.cli.check_real",
                   "run a quantized cell and compare its fake-quant and integer-only execution"),
    "export": ("bench.cli.export", "run a quantized cell, export it as QDQ ONNX and evaluate it with onnxruntime"),
    "latency": ("bench.cli.latency", "FP32 vs INT8 onnxruntime latency per arch on this CPU (Table 9 analogue)"),
    "aggregate": ("bench.cli.aggregate",
                  "turn result records (runs/) into the benchmark tables and plots (results/<track>/)"),
    "site": ("bench.cli.site", "a static site of a results folder: sortable tables, a page per record (site/)"),
    "audit": ("bench.cli.audit", "re-run committed cells at the current commit and compare with their numbers"),
    "restore": ("bench.cli.restore",
                "put the committed records of a results folder back into a runs folder (resume a regeneration)"),
}

USAGE = "usage: python -m bench <verb> [args]   (python -m bench <verb> --help for each verb)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: dispatch to a verb module's ``main(argv)``."""
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n\nverbs:")
        for verb, (_, desc) in VERBS.items():
            print(f"  {verb:<10} {desc}")
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}; accepted: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
