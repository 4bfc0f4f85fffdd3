"""End to end on real cells (slow): tiny QAT and PTQ runs (data=synthetic arch=tiny debug=smoke, seconds each), a
deployment check, ``python -m bench aggregate``, ``python -m bench site`` with ``runs=``, then headless Chromium:
every page loads clean with its CSV's rows, the profile filter, sorting, cell pages with their own training curve,
quantizer ranges and deployment check, and a re-run command that gives back the record's config_hash."""

from __future__ import annotations

import html
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
CELL = ["data=synthetic", "arch=tiny", "debug=smoke", "progress=false"]

pytestmark = pytest.mark.slow


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENCH_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"python -m bench {' '.join(args)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs, results and site of real tiny cells: LSQ and PACT on academic, TVM and TensorRT (LSQ on TVM with a
    second seed), and a PTQ cell with its integer-execution check."""
    tmp = tmp_path_factory.mktemp("real")
    runs, results, site = tmp / "runs", tmp / "results", tmp / "site"
    bench("run", "-m", "algo=lsq,pact", "hw=academic,tvm,tensorrt", *CELL, f"runs_dir={runs}", cwd=tmp)
    bench("run", "algo=lsq", "hw=tvm", "seed=1", *CELL, f"runs_dir={runs}", cwd=tmp)
    bench("check-real", "algo=ptq", "hw=tvm", *CELL, f"runs_dir={runs}", cwd=tmp)
    bench("aggregate", f"runs={runs}", f"out={results}", cwd=tmp)
    r = bench("site", f"results={results}", f"runs={runs}", f"out={site}", cwd=tmp)
    assert "8 cell pages (8 with their run folder" in r.stdout
    return {"runs": runs, "results": results, "site": site}


def url(site: Path, rel: str) -> str:
    return (site / rel).resolve().as_uri()


def test_every_page_of_real_runs(real: dict[str, Path], visit) -> None:
    site, results = real["site"], real["results"]
    base = site.resolve().as_uri()
    assert visit(url(site, "index.html"), base).problems() == []
    pages = 0
    for csv in sorted(results.glob("*.csv")):
        if csv.name == "failed.csv" and pd.read_csv(csv).empty:
            continue
        v = visit(url(site, f"tables/{csv.stem}.html"), base)
        assert v.problems() == [], csv.name
        assert v.rows() == len(pd.read_csv(csv)), csv.name
        pages += 1
    assert pages >= 8


def test_filter_sort_and_cell_pages(real: dict[str, Path], visit) -> None:
    site, results, runs = real["site"], real["results"], real["runs"]
    base = site.resolve().as_uri()
    hw = pd.read_csv(results / "qat_w4a4_hw.csv")
    v = visit(url(site, "tables/qat_w4a4_hw.html"), base)
    v.page.select_option("select[data-axis=hw]", "tvm")
    assert v.page.eval_on_selector_all("table.bench-table tbody tr", "rs => rs.map(r => r.dataset.fHw)") \
        == ["tvm"] * int((hw["hw"] == "tvm").sum())
    # sorting the records by wall time
    v = visit(url(site, "tables/cells.html"), base)
    heads = v.page.eval_on_selector_all("table.bench-table thead th", "ths => ths.map(t => t.textContent.trim())")
    i = heads.index("wall_s")
    v.page.locator("table.bench-table thead th").nth(i).click()
    v.page.wait_for_function(f"document.querySelector('table.bench-table').tHead.rows[0].cells[{i}]"
                             ".getAttribute('aria-sort') === 'ascending'")
    walls = v.page.eval_on_selector_all(f"table.bench-table tbody tr td:nth-child({i + 1})",
                                        "ts => ts.map(t => parseFloat(t.getAttribute('data-order')))")
    assert walls == sorted(walls) and len(walls) == 8
    assert v.problems() == []
    # Table 7: a slot's link opens its cell page; the record's own curve has loaded
    v = visit(url(site, "tables/table7_hw_w4a4.html"), base)
    v.page.click("table.bench-table tbody tr:first-child td.group a >> nth=0")
    v.page.wait_for_load_state("load")
    assert v.page.eval_on_selector("img.curve", "i => i.complete && i.naturalWidth") > 0
    assert v.page.eval_on_selector("img.curve", "i => i.getAttribute('src')").endswith(".png")
    assert v.page.locator("#quantizers + div table tbody tr").count() > 5
    assert v.problems() == []
    # the PTQ cell's deployment check
    ptq = next(json.loads(p.read_text()) for p in runs.rglob("result.json")
               if json.loads(p.read_text())["algo"] == "ptq")
    v = visit(url(site, f"cells/{ptq['config_hash']}.html"), base)
    assert "integer-only execution" in v.page.inner_text("#deploy + h3")
    assert v.problems() == []


def test_rerun_commands_give_back_the_config_hash(real: dict[str, Path], make_cfg) -> None:
    """Every cell page's command, composed as the CLI composes it, has the record's config_hash."""
    from bench.runner import cell_hash

    site = real["site"]
    n = 0
    for rec_path in real["runs"].rglob("result.json"):
        rec = json.loads(rec_path.read_text())
        text = html.unescape((site / "cells" / f"{rec['config_hash']}.html").read_text())
        command = text.split('<code id="command">')[1].split("</code>")[0]
        assert "From the record's Hydra overrides (.hydra/overrides.yaml)" in text
        argv = shlex.split(command)[4:]
        assert cell_hash(make_cfg(*argv)) == rec["config_hash"], command
        n += 1
    assert n == 8
