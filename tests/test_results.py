import json
import os

import pytest

from bench.results import collect, config_hash, find_record, iter_records, write_json_atomic


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


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 16
