"""``python -m bench run``: one grid cell (or a sweep with ``-m``) through ``runner.run``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.cli.args import fail
from bench.cli.hydra_app import help_text, launch, remove_if_empty_run_dir
from bench.engine import distributed
from bench.errors import BenchError
from bench.results import RECORD_NAME

log = logging.getLogger("bench.run")

SUMMARY = (
    "Runs one cell of the grid algorithm x arch x hardware profile x bit-width: load (or train and cache) the FP32\n"
    "baseline, apply the algorithm, evaluate, write result.json (+ metrics.jsonl) under runs/<track>/.\n"
    "Defaults: algo=fp32 hw=academic arch=resnet18_mini bits=w4a4 data=fashion_mnist. Every *_mini cell starts\n"
    "from the shipped FP32 baseline (bench/shipped, sha256-checked). An identical cell that was already recorded is\n"
    "skipped. QAT algorithms start as their papers do (algo.init=paper; algo.init=calib uses calib.*)."
)
EXAMPLES = [
    "python -m bench run                                  # FP32 reference cell on the embedded default",
    "python -m bench run arch=mobilenetv2_mini seed=1",
    "python -m bench run algo=ptq hw=tvm bits=w8a8            # post-training quantization on a profile",
    "python -m bench run algo=ptq hw=snpe bits=w4a4 ptq.bn_recalib=true quant.report=true",
    "python -m bench run algo=lsq hw=tvm                  # QAT (train=mini_qat: 300 steps, about a minute)",
    "python -m bench run algo=pact hw=snpe algo.init=calib calib.act=mse train.epochs=3",
    "python -m bench run -m arch=resnet18_mini,resnet50_mini   # a local sweep",
    "python -m bench run data=synthetic arch=tiny debug=smoke  # seconds",
]


def task(cfg: DictConfig) -> None:
    """Hydra task: run the cell; a BenchError ends a single run with one line, a sweep cell with a failed record."""
    from bench import runner

    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    try:
        runner.run(cfg, out)
        if not (Path(out) / RECORD_NAME).exists():  # skipped (recorded before): Hydra's run dir is left empty
            remove_if_empty_run_dir(out, cfg.runs_dir)
        penv = distributed.detect()
        if penv is not None and penv.rank > 0 and hc.mode != RunMode.MULTIRUN:
            # torchrun / srun give each rank its own timestamped run dir; rank 0's holds the record
            shutil.rmtree(out, ignore_errors=True)
    except BenchError as e:
        if hc.mode == RunMode.MULTIRUN:
            path = runner.write_failed(cfg, out, str(e))
            print(f"error: {e} (cell recorded as failed: {path})")
            return
        remove_if_empty_run_dir(out, cfg.runs_dir)
        raise SystemExit(f"{e}") from None


def cell_verb(verb: str, argv: list[str], summary: str, examples: list[str], extra: list[str] | None = None) -> int:
    """A verb that runs cells through :func:`task` (``run``, and ``check-real`` / ``export`` with ``extra``
    overrides appended)."""
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(verb, summary, examples))
        return 0
    try:
        return launch(verb, argv, task, extra=extra)
    except BenchError as e:
        return fail(str(e))


def main(argv: list[str]) -> int:
    """Entry of the ``run`` verb."""
    return cell_verb("run", argv, SUMMARY, EXAMPLES)
