"""The records behind the site: values, matching table slots to cells, seeds, neighbours, the re-run command."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pandas as pd
import pytest

from bench.site.cells import (
    Cell,
    CellIndex,
    command_from_overrides,
    command_from_row,
    norm,
    qparams_rows,
    rerun_command,
)


@pytest.mark.parametrize("value, text", [(4, "4"), (4.0, "4"), ("4", "4"), ("4.0", "4"), (math.nan, ""),
                                         (None, ""), (True, "true"), ("False", "false"), ("tvm", "tvm"),
                                         (-1.0, "-1"), (0.5, "0.5")])
def test_norm(value: object, text: str) -> None:
    assert norm(value) == text


@pytest.fixture(scope="module")
def index(fixture_results) -> CellIndex:
    frame = pd.read_csv(fixture_results.results / "cells.csv").assign(folder="")
    return CellIndex.build(frame, fixture_results.runs)


def test_index_joins_run_folders(index: CellIndex, fixture_results) -> None:
    assert len(index) == len(fixture_results.records)
    assert all(c.record is not None and c.run_dir is not None for c in index)


def test_match_seeds_and_neighbours(index: CellIndex) -> None:
    slot = {"arch": "resnet18_mini", "algo": "lsq", "hw": "tvm", "w_bits": 4, "a_bits": 4}
    cell = index.match("", slot, value=85.0 - 6.0 + 0.15)  # mean of seeds 0 and 1
    assert cell is not None and norm(cell.row["seed"]) == "0" and norm(cell.row["hw"]) == "tvm"
    seeds = index.seeds(cell)
    assert [norm(s.row["seed"]) for s in seeds] == ["0", "1"]
    near = index.neighbours(cell)
    assert {norm(c.row["hw"]) for c in near["hw"]} == {"academic", "tensorrt", "snpe"}
    assert {norm(c.row["algo"]) for c in near["algo"]} == {"pact"}
    assert {norm(c.row["arch"]) for c in near["arch"]} == {"mobilenetv2_mini"}
    assert [norm(c.row["seed"]) for c in near["seed"]] == ["1"]
    # a value that no cell has: strict matching refuses, loose matching still finds the slot's cell
    assert index.match("", slot, value=1.0, strict=True) is None
    assert index.match("", slot, value=1.0) is not None
    # the NC slot
    nc = index.match("", {"arch": "mobilenetv2_mini", "algo": "pact", "hw": "tvm", "w_bits": 4}, status="nc")
    assert nc is not None and nc.status == "nc"
    # the BN-folding override is its own cell, told apart by its value
    fold = index.match("", {"arch": "resnet18_mini", "algo": "lsq", "hw": "tensorrt", "w_bits": 4}, value=70.0)
    assert fold is not None and norm(fold.row["quant_bn_fold"]) == "0"


def test_command_from_overrides_drops_what_does_not_change_the_result() -> None:
    cmd = command_from_overrides(["algo=lsq", "hw=tvm", "runs_dir=/tmp/x", "progress=False", "hydra/launcher=parallel",
                                  "hydra.launcher.n_jobs=2", "experiment=table7_hw", "seed=2", "train.lr='0.1 0'"],
                                 threads=1)
    assert cmd.startswith("python -m bench run algo=lsq hw=tvm experiment=table7_hw seed=2 ")
    assert shlex.split(cmd)[4:] == ["algo=lsq", "hw=tvm", "experiment=table7_hw", "seed=2", "train.lr='0.1 0'",
                                    "threads=1"]
    assert command_from_overrides(["algo=lsq", "threads=2"], threads=1) == "python -m bench run algo=lsq threads=2"


def test_rerun_command_gives_back_the_config_hash(make_cfg, tmp_path: Path) -> None:
    """The command built from a run's overrides composes to the same config_hash as the run's own overrides."""
    from bench.runner import cell_hash

    launched = ["algo=lsq", "hw=tvm", "data=synthetic", "arch=tiny", "debug=smoke", "seed=1",
                f"runs_dir={tmp_path / 'elsewhere'}", "progress=False", "threads=1"]
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in launched))
    rec = {"config": {}, "extra": {"launch": {"torch_threads": 1}}}
    cmd, source = rerun_command(Cell("h", {"algo": "lsq"}, record=rec, run_dir=run))
    assert source == "run folder" and "runs_dir" not in cmd and "progress" not in cmd and "threads=1" in cmd
    argv = shlex.split(cmd)[4:]
    assert cell_hash(make_cfg(*argv)) == cell_hash(make_cfg(*launched))
    # without the run folder: the overrides cells.csv keeps
    row = {"algo": "lsq", "overrides": json.dumps(launched), "torch_threads": 1.0}
    assert rerun_command(Cell("h", row)) == (cmd, "cells.csv")


def test_command_from_row() -> None:
    row = {"algo": "pact", "hw": "snpe", "arch": "resnet18_mini", "w_bits": 4, "a_bits": 4, "kind": "qat",
           "calib_act": "mse", "calib_weight": "minmax", "quant_bn_fold": 0.0, "seed": 2, "data": "fashion_mnist",
           "bn_recalib": False, "train_epochs": 3, "quant_only": "all"}
    assert command_from_row(row) == ("python -m bench run algo=pact hw=snpe arch=resnet18_mini bits=w4a4 "
                                     "algo.init=calib calib.act=mse calib.weight=minmax quant.bn_fold=0 "
                                     "train.epochs=3 seed=2")
    cmd, source = rerun_command(Cell("h", row))
    assert source == "row" and cmd.startswith("python -m bench run algo=pact")


def test_qparams_rows() -> None:
    rows = qparams_rows({"w": {"kind": "weight", "spec": "int4", "qmin": -8, "qmax": 7, "scale": [0.5, 0.25],
                               "zero_point": [0, 0], "learned": {"s": [0.5, 0.25]}},
                         "a": {"kind": "act", "qmin": 0, "qmax": 15, "scale": [0.1], "zero_point": [3]}})
    assert rows[0]["scale"] == "0.25 .. 0.5" and rows[0]["real range"] == "[-4, 3.5]" and rows[0]["channels"] == "2"
    assert rows[1]["real range"] == "[-0.3, 1.2]" and rows[1]["zero point"] == "3"
    assert qparams_rows(None) == [] and qparams_rows({"x": 3}) == []
