"""Discovery of a results folder: validation (one-line errors), tables and their categories, Markdown parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.site.discover import category_of, check_results, discover, parse_markdown


def test_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="results=.*nope does not exist") as e:
        check_results(tmp_path / "nope")
    assert "\n" not in str(e.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BenchError, match="is not a directory"):
        check_results(tmp_path / "file")
    with pytest.raises(BenchError, match=r"has no records \(no cells.csv\)"):
        check_results(tmp_path)
    (tmp_path / "cells.csv").write_text("")
    with pytest.raises(BenchError, match="has no records"):
        check_results(tmp_path)
    (tmp_path / "cells.csv").write_text("track,algo,config_hash\n")
    with pytest.raises(BenchError, match="has no records"):
        check_results(tmp_path)


@pytest.mark.parametrize("stem, category", [
    ("table7_hw_w4a4", "table7"), ("table4_academic_w4a4", "table4"), ("table5_bnfold_tensorrt_w4a4", "table5"),
    ("table6_graph_w4a4", "table6"), ("table10_ptq_w8a8", "table10"), ("table11_init", "table11"),
    ("ptq_lowbit_w2a4", "ptq_lowbit"), ("ptq_advanced", "ptq_advanced"), ("deploy_check", "deploy"),
    ("onnx_runtime", "deploy"), ("latency", "latency"), ("findings", "findings"), ("cells", "records"),
    ("hw_robustness_w4a4", "other"), ("something_new", "other"),
])
def test_categories(stem: str, category: str) -> None:
    assert category_of(stem) == category


def test_markdown_parts() -> None:
    md = parse_markdown("# Title here\n\n| arch | algo |\n|---|---|\n| a | LSQ |\n| b \\| c | PACT |\n\n"
                        "legend line\n\nsecond note\n")
    assert md.title == "Title here"
    assert md.header == ["arch", "algo"]
    assert md.rows == [["a", "LSQ"], ["b | c", "PACT"]]
    assert "legend line" in md.notes and "second note" in md.notes and "|" not in md.notes


def test_discover_fixture(fixture_results) -> None:
    res = discover(fixture_results.results)
    stems = {t.rel for t in res.tables}
    assert {"table7_hw_w4a4", "table4_academic_w4a4", "table10_ptq_w8a8", "findings", "cells", "failed"} <= stems
    t7 = next(t for t in res.tables if t.rel == "table7_hw_w4a4")
    assert t7.category == "table7" and t7.title.startswith("QAT W4A4 on the hardware profiles")
    assert len(res.cells) == len(fixture_results.records)
    assert res.figures and all(p.suffix == ".png" for p in res.figures)
    # page order: findings first, records near the end, unknown tables last
    cats = [t.category for t in res.tables]
    assert cats[0] == "findings" and cats.index("records") > cats.index("table7") and cats[-1] == "other"


def test_discover_committed() -> None:
    root = Path(__file__).resolve().parents[2] / "results" / "fmnist-mini"
    res = discover(root)
    assert any(t.category == "table7" for t in res.tables)
    # the deployment checks' sub-folder is found when the committed results hold one (issue 19 regenerates it)
    assert any(t.folder == "deploy" and t.category == "deploy" for t in res.tables) == (root / "deploy").is_dir()
    assert len(res.cells) > 0
