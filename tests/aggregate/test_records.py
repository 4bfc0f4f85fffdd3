"""Loading, corrupt-record rejection, dedup, seed grouping, table filters and slot resolution."""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate import records as R


def test_load_rejects_corrupt_records_with_one_warning_each(tmp_path: Path, write_rec, rec) -> None:
    write_rec("good/a", algo="lsq")
    write_rec("good/b", algo="pact")
    bad_json = tmp_path / "runs" / "x" / "result.json"
    bad_json.parent.mkdir(parents=True)
    bad_json.write_text("")
    missing = tmp_path / "runs" / "y" / "result.json"
    missing.parent.mkdir(parents=True)
    missing.write_text('{"track": "fmnist-mini"}')
    status = tmp_path / "runs" / "z" / "result.json"
    status.parent.mkdir(parents=True)
    r = rec()
    r["status"] = "running"
    status.write_text(__import__("json").dumps(r))
    (tmp_path / "runs" / "good" / "a" / ".result.json.abc.tmp").write_text("{half")  # an atomic write in flight
    err = io.StringIO()
    good, bad = R.load_records(tmp_path / "runs", warn=err)
    assert len(good) == 2
    assert sorted(Path(b.path).parent.name for b in bad) == ["x", "y", "z"]
    lines = err.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0] == f"warning: skipped corrupt record {bad_json}: Expecting value: line 1 column 1 (char 0)"
    assert "missing field(s) algo" in lines[1] and str(missing) in lines[1]
    assert "unknown status 'running'" in lines[2]


def test_dedup_prefers_ok_over_failed_then_latest(rec) -> None:
    ok_old = rec(top1=70.0, finished_at="2026-01-01T00:00:00+00:00")
    failed_new = rec(top1=None, status="failed", error="boom", finished_at="2026-01-03T00:00:00+00:00")
    ok_new = rec(top1=71.0, finished_at="2026-01-02T00:00:00+00:00")
    assert ok_old["config_hash"] == failed_new["config_hash"] == ok_new["config_hash"]
    df = R.dedup(R.records_frame([(Path(f"r{i}/result.json"), r) for i, r in enumerate([ok_old, failed_new,
                                                                                         ok_new])]))
    assert len(df) == 1 and df.iloc[0]["top1"] == 71.0
    only_failed = R.dedup(R.records_frame([(Path("f/result.json"), failed_new)]))
    assert list(only_failed["status"]) == ["failed"]


def test_seeds_group_into_one_cell_with_t_ci(cells_of, rec) -> None:
    vals = [70.2, 70.6, 69.9]
    cells = cells_of([rec(seed=s, top1=v) for s, v in enumerate(vals)] + [rec(seed=0, epochs=3, top1=72.0)])
    assert len(cells) == 2  # a different train.epochs is a different cell
    c = cells[cells["n"] == 3].iloc[0]
    sd = statistics.stdev(vals)
    assert c["mean"] == pytest.approx(statistics.mean(vals))
    assert c["std"] == pytest.approx(sd)
    assert c["ci95"] == pytest.approx(4.3027 * sd / math.sqrt(3))
    assert c["seeds"] == "0,1,2" and c["status"] == "ok"


def test_cell_id_ignores_only_the_seed(rec) -> None:
    assert R.cell_id(rec(seed=0)) == R.cell_id(rec(seed=5))
    assert R.cell_id(rec(seed=0)) != R.cell_id(rec(seed=0, calib=("mse", "minmax")))


def test_nc_seed_or_missing_accuracy_makes_the_cell_nc(cells_of, rec) -> None:
    cells = cells_of([rec(seed=0, top1=70.0), rec(seed=1, top1=12.0, status="nc")])
    assert list(cells["status"]) == ["nc"] and math.isnan(cells.iloc[0]["mean"])
    cells = cells_of([rec(seed=0, top1=None)])  # ok but no number: did not converge
    assert list(cells["status"]) == ["nc"]


def test_a_qat_cell_at_chance_level_is_nc_but_a_ptq_cell_keeps_its_number(cells_of, rec) -> None:
    # Fashion-MNIST has 10 classes: chance is 10 %, and the margin is 1 point (11.0 is NC, 11.01 is not)
    for top1, want in ((10.0, "nc"), (11.0, "nc"), (11.01, "ok"), (65.0, "ok")):
        assert list(cells_of([rec(algo="dsq", top1=top1)])["status"]) == [want], top1
    assert list(cells_of([rec(algo="ptq", top1=10.0)])["status"]) == ["ok"]  # the paper prints collapsed PTQ
    assert R.at_chance(0.5, 1000) and not R.at_chance(1.5, 1000) and not R.at_chance(5.0, None)


def test_failed_records_are_kept_aside(cells_of, rec) -> None:
    recs = [rec(seed=0, top1=70.0), rec(seed=1, top1=None, status="failed", error="CUDA OOM")]
    df = R.dedup(R.records_frame([(Path(f"r{i}/result.json"), r) for i, r in enumerate(recs)]))
    failed = R.failed_records(df)
    assert list(failed["error"]) == ["CUDA OOM"] and list(failed["path"]) == ["r1/result.json"]
    cells = R.group_seeds(df)
    assert list(cells["n"]) == [1] and list(cells["mean"]) == [70.0]


def _flags(cells: pd.DataFrame, predicate) -> list[bool]:
    return [bool(x) for x in predicate(cells)]


def test_table_filters(cells_of, rec) -> None:
    recs = [
        rec(algo="lsq", hw="tensorrt"),  # 0 hardware default
        rec(algo="lsq", quant={"bn_fold": 2}),  # 1 BN-fold override
        rec(algo="lsq", quant={"graph": 3}),  # 2 graph override
        rec(algo="lsq", quant={"only": "weights"}),  # 3 debugging: not a benchmark cell
        rec(algo="lsq", quant={"bypass": True}),  # 4
        rec(algo="lsq", quant={"first_last_bits": 4}),  # 5
        rec(algo="ptq"),  # 6 plain PTQ
        rec(algo="ptq", ptq={"bn_recalib": True}),  # 7 BN calib
        rec(algo="ptq", ptq={"cle": True}),  # 8
        rec(algo="ptq", ptq={"bias_correction": "empirical"}),  # 9
        rec(algo="brecq"),  # 10 an advanced PTQ method: none of these tables
        rec(algo="fp32", w=32, a=32),  # 11
    ]
    cells = cells_of(recs)
    cells = cells.assign(_i=[int(Path(p).parent.name) for p in cells["path"]]).sort_values("_i")
    assert _flags(cells, R.is_hardware_cell) == [i == 0 for i in range(12)]
    assert _flags(cells, R.is_bnfold_cell) == [i in (0, 1) for i in range(12)]
    assert _flags(cells, R.is_graph_cell) == [i in (0, 2) for i in range(12)]
    assert _flags(cells, R.is_ptq_cell) == [i == 6 for i in range(12)]
    assert _flags(cells, R.is_bn_calib_cell) == [i == 7 for i in range(12)]


def test_resolve_slots_prefers_real_longer_default_calibrated_cells(cells_of, rec) -> None:
    cells = cells_of([
        rec(epochs=1, top1=70.0), rec(epochs=3, top1=71.0),  # longer training wins
        rec(arch="resnet50", epochs=5, smoke=True, top1=10.0), rec(arch="resnet50", top1=76.0),  # smoke loses
        rec(arch="mobilenetv2", calib=("quantile", "norm"), top1=69.0, finished_at="2026-02-01T00:00:00+00:00"),
        rec(arch="mobilenetv2", top1=68.0),  # MinMax init: the default the hardware table wants
    ])
    kept, dropped = R.resolve_slots(cells, ["arch", "algo", "hw"], prefer_calib=True)
    assert dropped == 3
    assert dict(zip(kept["arch"], kept["mean"], strict=True)) == {"resnet18": 71.0, "resnet50": 76.0,
                                                                   "mobilenetv2": 68.0}
    kept, _ = R.resolve_slots(cells[cells["arch"] == "mobilenetv2"], ["arch"], prefer_calib=False)
    assert list(kept["mean"]) == [69.0]  # without the preference: the latest


def test_resolve_slots_prefers_the_papers_initialisation_over_minmax(cells_of, rec) -> None:
    # algo.init=paper is the default protocol of the QAT tables (MQBench App. F); older calib-initialised records of
    # the same slot are set aside, whichever finished last
    cells = cells_of([
        rec(calib=("paper", "paper"), top1=80.0, finished_at="2026-01-01T00:00:00+00:00"),
        rec(calib=("minmax", "minmax"), top1=70.0, finished_at="2026-02-01T00:00:00+00:00"),
    ])
    kept, dropped = R.resolve_slots(cells, ["arch", "algo", "hw"], prefer_calib=True)
    assert dropped == 1 and list(kept["mean"]) == [80.0]


@pytest.mark.slow
def test_the_legacy_maps_agree_with_the_registries_for_every_name_they_know() -> None:
    """Old records (legacy maps) and new records (registries' metadata) must sort and read alike."""
    from omegaconf import OmegaConf

    from bench.aggregate import legacy
    from bench.algos import ALGOS
    from bench.config import CONF_DIR
    from bench.data import DATASETS
    from bench.models import ARCHS
    from bench.quant.observers import OBSERVERS

    for name, kind in legacy.KINDS.items():
        e = ALGOS.entry(name)
        assert (e.meta["kind"], e.label, e.order) == (kind, legacy.label("algo", name), legacy.order("algo", name))
    for name, n in legacy.NUM_CLASSES.items():
        assert DATASETS.entry(name).meta["num_classes"] == n
    for name in legacy.ORDERS["calib_act"]:
        e = OBSERVERS.entry(name)
        assert (e.label, e.order) == (legacy.label("calib_act", name), legacy.order("calib_act", name))
    for base in legacy.ORDERS["arch"]:
        for name in (base, f"{base}_mini"):
            assert ARCHS.entry(name).order == legacy.order("arch", name), name
    for name in legacy.ORDERS["hw"]:
        hw = OmegaConf.load(CONF_DIR / "hw" / f"{name}.yaml")
        assert (hw.label, hw.order) == (legacy.label("hw", name), legacy.order("hw", name))


def test_cells_csv_says_the_cpu_of_each_record() -> None:
    rec = {"extra": {"launch": {"cpu": "AMD EPYC (family 25, model 1)", "cpu_capability": "AVX2"}}}
    assert "cpu" in R.RECORD_COLUMNS
    assert R.flatten(Path("r/result.json"), {**rec, "track": "t", "algo": "lsq", "status": "ok", "top1": 80.0,
                                                "config_hash": "h"})["cpu"] == "AMD EPYC (family 25, model 1); AVX2"
