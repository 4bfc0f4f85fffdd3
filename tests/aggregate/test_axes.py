"""Records describe themselves (schema 2): kind, classes, display names and table order come from them; schema-1
records fall back to the frozen legacy maps; a value neither describes sorts last by name and shows its name."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate import legacy, render
from bench.aggregate import records as R
from bench.aggregate import tables as T
from bench.aggregate.axes import Axes

NEW = "2026-03-01T00:00:00+00:00"


def _described(algo: str, label: str, order: int, **kw):
    """Labels and order of a schema-2 record whose algorithm is ``algo`` (other axes as the registries say)."""
    return {"labels": {"algo": label, "hw": kw.get("hw_label", "TVM"), "arch": "ResNet-18 (mini)",
                       "calib_weight": "MinMax", "calib_act": "MinMax"},
            "order": {"algo": order, "hw": kw.get("hw_order", 40), "arch": 10, "calib_weight": 10, "calib_act": 10}}


def test_kind_and_classes_come_from_the_record(cells_of, rec) -> None:
    # a QAT algorithm the legacy maps never heard of, on a 100-class dataset: chance is 1 %, NC up to 2 %
    new = [rec(algo="myqat", top1=t, kind="qat", num_classes=100, seed=i) for i, t in enumerate((2.0, 2.01))]
    cells = cells_of(new[:1])
    assert list(cells["kind"]) == ["qat"] and list(cells["status"]) == ["nc"]
    assert list(cells_of(new[1:])["status"]) == ["ok"]
    # the same numbers on a schema-1 record of an unknown algorithm: kind unknown, never NC by chance level
    old = cells_of([rec(algo="myqat", top1=2.0)])
    assert list(old["kind"]) == ["unknown"] and list(old["status"]) == ["ok"]
    # schema 1, known algorithm: the legacy kind and the legacy classes of fashion_mnist (chance 10 %, NC up to 11 %)
    assert list(cells_of([rec(algo="dsq", top1=11.0)])["status"]) == ["nc"]
    # a record's own classes beat the legacy ones: fashion_mnist said to have 1000 classes, 11 % is fine
    assert list(cells_of([rec(algo="dsq", top1=11.0, kind="qat", num_classes=1000)])["status"]) == ["ok"]


def test_malformed_self_description_is_rejected(tmp_path: Path, rec) -> None:
    bad = {"kind": 3, "num_classes": 0, "labels": "LSQ", "order": [1]}
    for i, (k, v) in enumerate(bad.items()):
        r = rec(kind="qat")
        r[k] = v
        p = tmp_path / "runs" / str(i) / "result.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(r))
    err = io.StringIO()
    good, rejects = R.load_records(tmp_path / "runs", warn=err)
    assert not good and len(rejects) == 4
    reasons = sorted(r.reason for r in rejects)
    assert reasons == ["kind is not a string (3)", "labels is not an object",
                       "num_classes is not a positive integer (0)", "order is not an object"]


def test_order_and_labels_from_records_legacy_and_unknown(cells_of, rec) -> None:
    recs = [
        # schema 2: an algorithm the registry puts first, with its own display name; TVM relabelled
        rec(algo="zeta", hw="tvm", top1=60.0, kind="qat", finished_at=NEW,
            **_described("zeta", "Zeta-Q", 5, hw_label="TVM (llvm)")),
        # schema 1: legacy order (lsq before pact) and legacy labels
        rec(algo="pact", hw="tvm", top1=61.0), rec(algo="lsq", hw="tvm", top1=62.0),
        # described by nobody: after every known one, by name, shown as it is
        rec(algo="bbb", hw="tvm", top1=63.0), rec(algo="aaa", hw="tvm", top1=64.0),
    ] + [rec(algo=a, top1=70.0) for a in ("zeta", "pact", "lsq", "bbb", "aaa")]
    cells = cells_of(recs)
    axes = Axes.of(cells)
    assert axes.ordered("algo", cells["algo"]) == ["zeta", "lsq", "pact", "aaa", "bbb"]
    assert [axes.label("algo", a) for a in ("zeta", "lsq", "pact", "aaa")] == ["Zeta-Q", "LSQ", "PACT", "aaa"]
    assert axes.label("hw", "tvm") == "TVM (llvm)" and axes.label("hw", "academic") == "Academic"
    assert axes.label("arch", "resnet18") == "ResNet-18 (mini)"  # the records' arch label (legacy had none)
    assert axes.position("hw", "academic") == legacy.order("hw", "academic") == 10
    t7 = T.table7(cells.assign(kind="qat"))  # 'unknown' kinds are no table 7 cells; here they stand in for QAT
    assert list(t7["algo"]) == ["zeta", "lsq", "pact", "aaa", "bbb"]
    md = render.table_markdown(T.Table("t7", "t", t7, keys=["arch", "algo"], axes=axes, group_axis="hw"))
    assert "| arch | algo | FP32 | Academic | TVM (llvm) | Avg. HW |" in md
    assert "| ResNet-18 (mini) | Zeta-Q |" in md and "| ResNet-18 (mini) | aaa |" in md


def test_the_newest_record_wins_where_records_disagree(cells_of, rec) -> None:
    old = rec(algo="lsq", top1=70.0, kind="qat", finished_at="2026-01-01T00:00:00+00:00",
              **_described("lsq", "LSQ (old)", 99))
    new = rec(algo="lsq", hw="tvm", top1=69.0, kind="qat", finished_at=NEW, **_described("lsq", "LSQ", 10))
    axes = Axes.of(cells_of([new, old]))
    assert axes.label("algo", "lsq") == "LSQ" and axes.position("algo", "lsq") == 10


@pytest.fixture
def paper_like_cells(cells_of, rec) -> pd.DataFrame:
    return cells_of([rec(algo=a, hw=h, arch="mobilenetv2_mini", top1=60.0 + i)
                     for i, a in enumerate(("pact", "dsq", "lsq")) for h in ("academic", "tensorrt", "tvm")])


def test_legacy_output_is_unchanged_without_record_metadata(paper_like_cells) -> None:
    """Schema-1 records render as the legacy maps say: PRETTY names, the paper's order, archs by name."""
    names = {t.name: t for t in T.build_all(paper_like_cells, "fmnist-mini")}
    md = render.table_markdown(names["table7_hw_w4a4"])
    assert "| arch | algo | FP32 | Academic | TensorRT | TVM | Avg. HW |" in md
    rows = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| mobilenetv2_mini")]
    assert rows == ["LSQ", "DSQ", "PACT"]
    assert not any(n.startswith(("ptq_", "qat_")) for n in names)  # no schema-2 record: the legacy set of tables


def test_empty_frame_gives_the_legacy_axes() -> None:
    assert Axes.of(pd.DataFrame()) == Axes()
    assert Axes().ordered("arch", ["resnet50_mini", "x", "resnet18"]) == ["resnet18", "resnet50_mini", "x"]
