import io
import json
import os

import pytest

from bench.aggregate.records import load_records
from bench.results import collect, config_hash, find_record, iter_records, record_paths, write_json_atomic


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "result.json"
    write_json_atomic(p, {"x": 1})
    write_json_atomic(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert os.listdir(p.parent) == ["result.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "result.json"
    write_json_atomic(p, {"x": 1})
    with pytest.raises(ValueError):
        write_json_atomic(p, {"x": float("nan")})  # JSON has no NaN: refused, old record intact
    assert json.loads(p.read_text()) == {"x": 1} and os.listdir(tmp_path) == ["result.json"]


def test_find_and_collect_tolerate_partial_files(tmp_path):
    write_json_atomic(tmp_path / "c1" / "result.json", {"config_hash": "aa", "status": "ok", "top1": 1.0})
    write_json_atomic(tmp_path / "c2" / "result.json", {"config_hash": "bb", "status": "failed"})
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "result.json").write_text("{broken")
    assert len(iter_records(tmp_path)) == 2
    assert find_record(tmp_path, "aa") == tmp_path / "c1" / "result.json"
    assert find_record(tmp_path, "bb") is None  # failed cells are re-run
    df = collect(tmp_path)
    assert sorted(df["config_hash"]) == ["aa", "bb"]


def test_a_folder_removed_mid_walk_is_skipped(tmp_path, monkeypatch):
    # A concurrent cell's probe folder (validate.unwritable) was listed, then removed before the walk reached it:
    # Path.rglob raised FileNotFoundError there and failed a Slurm sweep's cells.
    write_json_atomic(tmp_path / "a" / "result.json", {"config_hash": "aa", "status": "ok", "top1": 1.0})
    write_json_atomic(tmp_path / "z" / "result.json", {"config_hash": "zz", "status": "ok", "top1": 2.0})
    gone = tmp_path / ".bench-probe-x"
    gone.mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == os.fspath(gone):
            raise FileNotFoundError(2, "No such file or directory", os.fspath(gone))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert record_paths(tmp_path) == [tmp_path / "a" / "result.json", tmp_path / "z" / "result.json"]
    assert [r["config_hash"] for _, r in iter_records(tmp_path)] == ["aa", "zz"]
    assert find_record(tmp_path, "zz") == tmp_path / "z" / "result.json"
    good, bad = load_records(tmp_path, warn=io.StringIO())  # these minimal records lack the aggregator's fields
    assert len(good) + len(bad) == 2


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 16


def _record(h: str, status: str = "ok", top1: float = 50.0):
    from bench.results import ResultRecord

    return ResultRecord(
        track="test", algo="ptq", calib_weight="minmax", calib_act="minmax", hw="academic", graph=1, bn_fold=-1,
        arch="tiny", data="synthetic", w_bits=4, a_bits=4, seed=0, status=status, fp32_top1=60.0, top1=top1,
        top5=90.0, init_top1=top1, train_epochs=0, config_hash=h, git_sha="x", versions={}, wall_s=1.0,
        started_at="2026-01-01T00:00:00+00:00", config={"cell": h},
    )


def test_second_finished_record_of_a_cell_is_kept_aside(tmp_path):
    from bench.results import DUPLICATE_NAME, write_record_once

    first = write_record_once(_record("h1"), tmp_path / "a", tmp_path)
    owner = write_record_once(_record("h1", top1=51.0), tmp_path / "b", tmp_path)
    assert owner == first  # the cell belongs to the first record
    assert [p.parent.name for p in tmp_path.rglob("result.json")] == ["a"]
    assert json.loads((tmp_path / "b" / DUPLICATE_NAME).read_text())["top1"] == 51.0  # nothing computed is deleted
    assert find_record(tmp_path, "h1") == first
    # failed records are not claimed: a later successful run of the cell still owns it
    write_record_once(_record("h2", status="failed"), tmp_path / "c", tmp_path)
    assert write_record_once(_record("h2"), tmp_path / "d", tmp_path) == tmp_path / "d" / "result.json"


def test_stale_index_entry_is_taken_over(tmp_path):
    import shutil

    from bench.results import write_record_once

    write_record_once(_record("h1"), tmp_path / "a", tmp_path)
    shutil.rmtree(tmp_path / "a")  # the user deleted the run folder
    assert find_record(tmp_path, "h1") is None
    assert write_record_once(_record("h1"), tmp_path / "b", tmp_path) == tmp_path / "b" / "result.json"
    assert find_record(tmp_path, "h1") == tmp_path / "b" / "result.json"


def _writer(args):
    from bench.results import write_record_once

    runs, i = args
    cell = f"c{i % 40:02d}"  # 40 cells, 10 of them finished twice at the same moment
    write_record_once(_record(cell, top1=float(i)), runs / f"run{i:02d}", runs)
    return i


def test_50_concurrent_writers_leave_valid_records_one_per_cell(tmp_path, capsys):
    import multiprocessing as mp

    from bench.aggregate.records import load_records

    runs = tmp_path / "runs"
    with mp.get_context("fork").Pool(16) as pool:
        assert sorted(pool.map(_writer, [(runs, i) for i in range(50)])) == list(range(50))
    files = sorted(runs.rglob("result.json"))
    recs = [json.loads(p.read_text()) for p in files]  # every file parses: no half-written JSON
    assert len(recs) == 40 and len({r["config_hash"] for r in recs}) == 40
    assert len(list(runs.rglob("result.duplicate.json"))) == 10
    assert not list(runs.rglob("*.tmp"))
    # a corrupt record is rejected with its path named, and the others are still read
    files[0].write_text('{"track": "test", "status": ')
    pairs, rejects = load_records(runs)
    assert len(pairs) == 39 and [r.path for r in rejects] == [str(files[0])]
    assert str(files[0]) in capsys.readouterr().err


def test_launch_info_names_the_cpu_and_the_isa_torch_dispatches_to(monkeypatch, tmp_path):
    import builtins

    import torch

    from bench import results as res

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "model name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: other\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k))
    res.cpu_model.cache_clear()
    try:
        assert res.cpu_model() == "AMD EPYC (family 25, model 1)"
        info = res.launch_info()
    finally:
        res.cpu_model.cache_clear()
    assert info["cpu"] == "AMD EPYC (family 25, model 1)"
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_cpu_of_joins_model_and_isa_and_is_empty_for_older_records():
    from bench.results import cpu_of

    rec = {"extra": {"launch": {"cpu": "AMD EPYC (family 25, model 1)", "cpu_capability": "AVX2"}}}
    assert cpu_of(rec) == "AMD EPYC (family 25, model 1); AVX2"
    assert cpu_of({"extra": {"launch": {"torch_threads": 1}}}) == ""  # written before the launch info had it
