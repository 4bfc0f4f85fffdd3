"""``python -m bench <verb> ...``: verb dispatch only."""

from __future__ import annotations

import sys

VERBS = {
    "run": ("bench.cli.run", "run one grid cell, or a Hydra multirun with -m"),
    "pretrain": ("bench.cli.pretrain", "train (or load) and cache the FP32 baseline of an arch on a dataset"),
    "list": ("bench.cli.list_", "show what each grid axis offers (algo, hw, arch, data, bits, ...)"),
    "aggregate": ("bench.cli.aggregate",
                  "turn result records (runs/) into the benchmark tables and plots (results/<track>/)"),
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
