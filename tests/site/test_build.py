"""The generated site, read as HTML: real tables with headers, one row per CSV row, relative links that resolve,
nothing from another host, cell pages, heatmap and the paper's numbers; the CLI's errors write nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from bench.aggregate.bundle import read_bundle
from bench.errors import BenchError
from bench.site import build_site
from bench.site.build import MARKER

ROOT = Path(__file__).resolve().parents[2]


class Page(HTMLParser):
    """The parts of a page the tests read: links, sources, bench tables (header texts, rows, cells)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._in: str = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key):
                self.refs.append(str(a[key]))
        if tag == "table" and "bench-table" in (a.get("class") or ""):
            self.tables.append({"id": a.get("id"), "headers": [], "header_attrs": [], "rows": []})
        if not self.tables:
            return
        t = self.tables[-1]
        if tag in ("thead", "tbody"):
            self._in = tag
        elif tag == "tr" and self._in == "tbody":
            t["rows"].append({"attrs": a, "cells": []})
        elif tag in ("th", "td"):
            self._cell = []
            if self._in == "thead":
                t["header_attrs"].append(a)
            elif self._in == "tbody":
                t["rows"][-1]["cells"].append({"attrs": a, "text": ""})

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self.tables:
            text = " ".join("".join(self._cell).split())
            t = self.tables[-1]
            if self._in == "thead":
                t["headers"].append(text)
            elif self._in == "tbody" and t["rows"]:
                t["rows"][-1]["cells"][-1]["text"] = text
            self._cell = None
        if tag in ("thead", "tbody"):
            self._in = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def page(site: Path, rel: str) -> Page:
    return Page((site / rel).read_text(encoding="utf-8"))


def test_every_table_page_has_its_csv_rows(fixture_site: Path, fixture_results) -> None:
    csvs = sorted(p for p in fixture_results.results.rglob("*.csv") if not pd.read_csv(p).empty
                  or p.name != "failed.csv")
    assert csvs
    for csv in csvs:
        rel = str(csv.relative_to(fixture_results.results).with_suffix("")).replace("/", "--")
        p = page(fixture_site, f"tables/{rel}.html")
        assert len(p.tables) == 1, rel
        t = p.tables[0]
        assert len(t["rows"]) == len(pd.read_csv(csv)), rel
        assert t["headers"] and all(t["headers"]), rel


def test_links_are_relative_and_resolve(fixture_site: Path) -> None:
    pages = sorted(fixture_site.rglob("*.html"))
    assert len(pages) > 20
    for html in pages:
        text = html.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, html
        assert str(fixture_site) not in text and "file:" not in text, html
        for ref in Page(text).refs:
            if ref == "data:,":  # the empty favicon: no request for /favicon.ico
                continue
            assert not ref.startswith("/") and "://" not in ref, (html, ref)
            target = (html.parent / ref.split("#")[0]).resolve()
            assert target.exists(), (html, ref)
            assert fixture_site.resolve() in target.parents, (html, ref)
    assert (fixture_site / MARKER).is_file()


def test_table7_groups_gaps_seeds_reference_and_cell_links(fixture_site: Path) -> None:
    t = page(fixture_site, "tables/table7_hw_w4a4.html").tables[0]
    assert t["headers"][:3] == ["arch", "algo", "FP32"]
    assert "TVM" in t["headers"] and "TVM gap" in t["headers"]
    tvm = t["headers"].index("TVM")
    assert t["header_attrs"][tvm]["data-g-hw"] == "tvm"
    gap = t["headers"].index("TVM gap")
    first = t["rows"][0]
    assert first["attrs"]["data-f-arch"] == "resnet18_mini" and first["attrs"]["data-f-algo"] == "lsq"
    # two seeds: mean ± std, n and the 95% CI; the paper's ImageNet number, labelled so
    cell = first["cells"][tvm]["text"]
    assert re.match(r"79\.15 ± 0\.21", cell) and "n=2" in cell and "95% CI" in cell
    assert "ImageNet (MQBench) 67.7" in cell
    # the gap is printed and shaded
    g = first["cells"][gap]
    assert g["text"] == "6.00" and "background-color: hsl(0" in g["attrs"]["style"]
    assert g["attrs"]["data-order"] == "6.0"
    # the NC slot says so and sorts last
    nc = [r["cells"][tvm] for r in t["rows"] if r["cells"][tvm]["text"].startswith("NC")]
    assert len(nc) == 1 and nc[0]["attrs"]["data-order"] == "-"


def test_cell_links_point_to_the_right_record(fixture_site: Path, fixture_results) -> None:
    text = (fixture_site / "tables/table7_hw_w4a4.html").read_text()
    links = set(re.findall(r'href="\.\./cells/([0-9a-f]{16})\.html"', text))
    by_hash = {r["config_hash"]: r for r in fixture_results.records}
    assert len(links) == 2 * 2 * 4  # 2 archs x 2 algos x 4 profiles, each the slot's lowest seed
    for h in links:
        r = by_hash[h]
        assert r["seed"] == 0 and r["config"]["quant"]["bn_fold"] is None and r["kind"] == "qat"


def test_cell_page(fixture_site: Path, fixture_results) -> None:
    rec = next(r for r in fixture_results.records if r["algo"] == "lsq" and r["hw"] == "tvm"
               and r["arch"] == "resnet18_mini" and r["seed"] == 0)
    text = (fixture_site / f"cells/{rec['config_hash']}.html").read_text()
    assert "LSQ · TVM · resnet18_mini · W4A4 · seed 0" in text
    assert "python -m bench run algo=lsq hw=tvm arch=resnet18_mini bits=w4a4 seed=0</code>" in text
    assert "runs_dir" not in text.split('id="command"')[1].split("</code>")[0]
    assert f'src="{rec["config_hash"]}.png"' in text and (fixture_site / f"cells/{rec['config_hash']}.png").is_file()
    assert "conv1.weight_fq" in text and "[-0.3, 1.2]" in text  # quantizer ranges (act: scale 0.1, zero point 3)
    assert "other profiles" in text and "other seeds" in text and "mean 79.15 ± 0.21" in text
    assert "name: lsq" in text  # the config, as YAML
    assert 'data-source="run-folder"' in text and "from its run folder (runs=fmnist-mini)" in text
    assert 'id="no-run-folder"' not in text
    ptq = next(r for r in fixture_results.records if r["algo"] == "ptq" and r["hw"] == "tvm")
    text = (fixture_site / f"cells/{ptq['config_hash']}.html").read_text()
    assert "integer-only execution" in text and "87.9" in text and "half_up" in text


def test_findings_scorecard_on_the_index(fixture_site: Path) -> None:
    p = page(fixture_site, "index.html")
    t = p.tables[0]
    assert t["headers"] == ["id", "paper", "where", "claim", "units", "mean_diff", "ci95_lo", "ci95_hi", "verdict"]
    assert len(t["rows"]) == 2
    verdict = t["rows"][1]["cells"][-1]
    assert verdict["text"] == "does not hold" and "verdict-does-not-hold" in verdict["attrs"]["class"]
    full = page(fixture_site, "tables/findings.html").tables[0]
    assert "paper_evidence" in full["headers"] and "note" in full["headers"]
    text = (fixture_site / "index.html").read_text()
    assert "machine (README)" in text and "2 CPU cores" in text and "tables/table7_hw_w4a4.html" in text
    assert "<li>a list under a line</li>" in text
    assert 'src="figures/fig6_robustness_w4a4.png"' in text


def test_committed_results_without_runs(committed_site: Path) -> None:
    root = ROOT / "results" / "fmnist-mini"
    t = page(committed_site, "tables/table7_hw_w4a4.html").tables[0]
    assert len(t["rows"]) == len(pd.read_csv(root / "table7_hw_w4a4.csv"))
    cells = pd.read_csv(root / "cells.csv")
    bundle = read_bundle(root / "records.jsonl.gz")
    # the first record with a training curve in the bundle (PTQ records have none), else the first record
    with_curve = [i for i, h in enumerate(cells["config_hash"]) if (bundle.get(h) or {}).get("curve")]
    i = with_curve[0] if with_curve else 0
    h = cells["config_hash"].iloc[i]
    text = (committed_site / f"cells/{h}.html").read_text()
    assert 'id="no-run-folder"' in text and "built without runs=" in text
    kept = "overrides" in cells.columns and isinstance(cells["overrides"].iloc[i], str)
    assert "python -m bench run " in text
    assert ("as cells.csv keeps them" if kept else "Rebuilt from the record") in text
    if (root / "records.jsonl.gz").is_file():  # the record's own curve, from the results' bundle
        assert 'data-source="bundle"' in text and f'src="{h}.png"' in text
    else:
        assert "../figures/curves/" in text  # the results folder's curve of its arch and profile


def test_without_runs_pages_come_from_the_bundle(bundle_site: Path, fixture_site: Path, fixture_results) -> None:
    """Without run folders a cell page says so, its command is the launch overrides cells.csv keeps, and its config,
    own training curve, quantizer ranges and deployment check come from the results' records.jsonl.gz."""
    rec = fixture_results.records[0]
    text = unescape((bundle_site / f"cells/{rec['config_hash']}.html").read_text())
    assert 'id="no-run-folder"' in text and "built without runs=" in text and "as cells.csv keeps them" in text
    assert "python -m bench run algo=lsq hw=academic arch=resnet18_mini bits=w4a4 seed=0</code>" in text
    assert 'data-source="bundle"' in text and "from the results' records.jsonl.gz" in text
    assert f'src="{rec["config_hash"]}.png"' in text and (bundle_site / f"cells/{rec['config_hash']}.png").is_file()
    assert "at most 200 points" in text
    assert "name: lsq" in text and "Needs the run folder" not in text  # the config, as YAML
    assert "conv1.weight_fq" in text and "[-0.3, 1.2]" in text and "0.01 .. 0.02" in text  # quantizer ranges
    assert "records.jsonl.gz (qparams.json summarised)" in text
    assert text.index("conv1.weight_fq") < text.index("act_fq_x")  # qparams.json's order, not the bundle's
    ptq = next(r for r in fixture_results.records if r["algo"] == "ptq" and r["hw"] == "tvm")
    text = unescape((bundle_site / f"cells/{ptq['config_hash']}.html").read_text())
    assert "integer-only execution" in text and "87.9" in text and "half_up" in text
    assert "No training curve: this record has no metrics.jsonl" in text  # PTQ: nothing trained
    # every page with a curve in the site with run folders has one here too
    pngs = sorted(p.name for p in (bundle_site / "cells").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (fixture_site / "cells").glob("*.png"))


def test_without_runs_nor_bundle_the_page_says_what_it_needs(tmp_path: Path, fixture_results) -> None:
    """A results folder without records.jsonl.gz (aggregated before it existed): the row and the command only."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(fixture_results.results, results)
    for b in results.rglob("records.jsonl.gz"):
        b.unlink()
    report = build_site(results, tmp_path / "s", log=lambda s: None)
    assert report.from_bundle == 0 and report.with_run_folder == 0
    rec = fixture_results.records[0]
    text = unescape((tmp_path / "s" / f"cells/{rec['config_hash']}.html").read_text())
    assert 'id="no-run-folder"' in text and 'class="warn"' in text and "as cells.csv keeps them" in text
    assert "Needs the run folder (runs=) or the results' records.jsonl.gz." in text
    assert 'id="details-source"' not in text and "name: lsq" not in text


def test_a_record_missing_from_runs_comes_from_the_bundle(tmp_path: Path, fixture_results) -> None:
    """runs= without a record's folder: that page is filled from the bundle, the others from their run folders."""
    import shutil

    first, second = fixture_results.records[:2]
    runs = tmp_path / "runs"
    folder = next(d for d in fixture_results.runs.iterdir() if d.name.startswith("000_"))
    shutil.copytree(folder, runs / folder.name)
    report = build_site(fixture_results.results, tmp_path / "s", runs=runs, log=lambda s: None)
    assert report.with_run_folder == 1 and report.from_bundle == report.cells - 1
    text = (tmp_path / "s" / f"cells/{first['config_hash']}.html").read_text()
    assert 'data-source="run-folder"' in text and 'id="no-run-folder"' not in text
    text = (tmp_path / "s" / f"cells/{second['config_hash']}.html").read_text()
    assert f"runs=runs does not hold a record with config_hash {second['config_hash']}" in text
    assert 'data-source="bundle"' in text and f'src="{second["config_hash"]}.png"' in text


def test_out_that_is_not_a_site_is_refused(tmp_path: Path, fixture_results) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BenchError, match="not empty and was not written by python -m bench site"):
        build_site(fixture_results.results, out, log=lambda s: None)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_rebuild_replaces_an_earlier_site(tmp_path: Path, fixture_results) -> None:
    out = tmp_path / "site"
    build_site(fixture_results.results, out, log=lambda s: None)
    (out / "stale.html").write_text("old")
    build_site(fixture_results.results, out, log=lambda s: None)
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temp folder left behind


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["results=nope"], "error: results=nope does not exist; accepted: a folder written by python -m bench aggregate"),
    (["results=empty"], "error: results=empty has no records (no cells.csv)"),
    (["results=norecords"], "error: results=norecords has no records (cells.csv is empty"),
    (["result=x"], "error: unknown argument 'result=x'; accepted: results=, runs=, out="),
    (["results=good", "runs=nope"], "error: runs=nope does not exist"),
    (["results=good", "runs=empty"], "error: runs=empty holds no result.json records"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path: Path, fixture_results, args: list[str],
                                                   message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "norecords").mkdir()
    (tmp_path / "norecords" / "cells.csv").write_text("track,config_hash\n")
    (tmp_path / "good").symlink_to(fixture_results.results)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = bench("site", *args, "out=site", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no site/, no temp folder


def test_cli_builds_and_helps(tmp_path: Path, fixture_results) -> None:
    r = bench("site", f"results={fixture_results.results}", f"runs={fixture_results.runs}", "out=web", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote web/: index.html,") and (tmp_path / "web" / "index.html").is_file()
    h = bench("site", "--help", cwd=tmp_path)
    assert h.returncode == 0 and h.stdout.startswith("usage: python -m bench site")
    top = bench("--help", cwd=tmp_path)
    assert "site" in top.stdout


def test_site_imports_no_torch(tmp_path: Path, fixture_results) -> None:
    """Like the aggregator, the site reads records only: building one imports neither torch nor the registries."""
    code = ("import sys; from bench.site import build_site; "
            f"build_site({str(fixture_results.results)!r}, {str(tmp_path / 's')!r}, runs={str(fixture_results.runs)!r},"
            " log=lambda s: None); "
            "bad = [m for m in ('torch', 'bench.algos', 'bench.runner') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)},
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_site_inside_the_results_folder_is_not_read_as_results(tmp_path: Path, fixture_results) -> None:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(fixture_results.results, results)
    first = build_site(results, results / "site", log=lambda s: None)
    second = build_site(results, results / "site", log=lambda s: None)
    assert first.tables == second.tables and first.cells == second.cells
