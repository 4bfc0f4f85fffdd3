"""The site in a real headless Chromium, opened from file://: no console error, no failed request, nothing from
another host; as many rows as the CSV; sorting; filters; a cell page and its curve (also from the results' bundle,
without runs=); readable without JavaScript.
Every page of the site, and a static web server: test_browser_all_pages.py (slow).
``BENCH_SCREENSHOT=docs/site_table7.png`` saves the Table 7 page of the committed results (the README shows it)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "fmnist-mini"


def url(site: Path, rel: str) -> str:
    return (site / rel).resolve().as_uri()


def test_index_loads_clean(committed_site: Path, fixture_site: Path, visit) -> None:
    """The index pages from file://: no console error, no failed request, nothing from another host; the figures
    have loaded."""
    for site in (committed_site, fixture_site):
        v = visit(url(site, "index.html"), site.resolve().as_uri())
        assert v.problems() == [] and v.page.title().startswith("Index")
        widths = v.page.eval_on_selector_all(".figures img", "is => is.map(i => i.complete && i.naturalWidth)")
        assert widths and all(w > 0 for w in widths)


def _column(v, header: str) -> list[str]:
    """The data-order values of a column, in the order shown."""
    return v.page.evaluate("""h => {
        const t = document.querySelector('table.bench-table');
        const i = [...t.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === h);
        return [...t.tBodies[0].rows].map(r => r.cells[i].getAttribute('data-order'));
    }""", header)


def _sort(v, header: str, direction: str) -> None:
    """Click a column header (as a reader does) and wait until DataTables says it sorts that way (``aria-sort``)."""
    heads = v.page.eval_on_selector_all("table.bench-table thead th", "ths => ths.map(t => t.textContent.trim())")
    th = v.page.locator("table.bench-table thead th").nth(heads.index(header))
    th.click()
    v.page.wait_for_timeout(50)
    th.wait_for(state="visible")
    v.page.wait_for_function("([i, d]) => document.querySelector('table.bench-table').tHead.rows[0].cells[i]"
                             ".getAttribute('aria-sort') === d", arg=[heads.index(header), direction], timeout=5000)


def _num(x: str) -> float:
    return float("-inf") if x in ("-", None) else float(x)


def test_table7_sort_filter_and_cell_page(committed_site: Path, visit) -> None:
    """Table 7 of the committed results: sorting by a gap reorders the rows, the profile filter keeps TVM's columns,
    the arch filter keeps that arch's rows, a cell link opens the cell page with its curve loaded."""
    base = committed_site.resolve().as_uri()
    v = visit(url(committed_site, "tables/table7_hw_w4a4.html"), base)
    shot = os.environ.get("BENCH_SCREENSHOT")
    if shot:
        path = Path(shot) if Path(shot).is_absolute() else ROOT / shot
        path.parent.mkdir(parents=True, exist_ok=True)
        v.page.screenshot(path=str(path))
    before = _column(v, "TVM gap")
    _sort(v, "TVM gap", "ascending")
    asc = _column(v, "TVM gap")
    assert asc != before and [_num(x) for x in asc] == sorted(_num(x) for x in asc)
    _sort(v, "TVM gap", "descending")
    desc = _column(v, "TVM gap")
    assert [_num(x) for x in desc] == sorted((_num(x) for x in desc), reverse=True)
    # profile: the table has one column per profile, so the filter keeps TVM's columns (and every row)
    n = v.rows()
    v.page.select_option("select[data-axis=hw]", "tvm")
    shown = v.page.eval_on_selector_all("table.bench-table thead th[data-g-hw]", "ths => ths.map(t => t.dataset.gHw)")
    assert shown == ["tvm", "tvm"] and v.rows() == n
    headers = v.page.eval_on_selector_all("table.bench-table thead th", "ths => ths.map(t => t.textContent.trim())")
    assert "TVM" in headers and "TVM gap" in headers and "TensorRT" not in headers
    v.page.select_option("select[data-axis=hw]", "")
    v.page.select_option("select[data-axis=arch]", "resnet50_mini")
    archs = v.page.eval_on_selector_all("table.bench-table tbody tr", "rs => rs.map(r => r.dataset.fArch)")
    assert archs and set(archs) == {"resnet50_mini"}
    assert v.problems() == []
    # a cell: its page, and its curve has loaded
    v.page.click("table.bench-table tbody tr:first-child td.group a >> nth=0")
    v.page.wait_for_load_state("load")
    assert "/cells/" in v.page.url
    assert v.page.eval_on_selector("img.curve", "i => i.complete && i.naturalWidth") > 0
    assert v.page.is_visible("#command") and v.page.is_visible("#no-run-folder")
    assert v.problems() == []


def test_rows_filter_on_a_profile_column(fixture_site: Path, fixture_results, visit) -> None:
    """A table with a profile column: hw=tvm leaves exactly the TVM rows; a cell link opens a page whose own curve
    (from metrics.jsonl) has loaded."""
    csv = pd.read_csv(fixture_results.results / "qat_w4a4_hw.csv")
    v = visit(url(fixture_site, "tables/qat_w4a4_hw.html"), fixture_site.resolve().as_uri())
    assert v.rows() == len(csv)
    v.page.select_option("select[data-axis=hw]", "tvm")
    hws = v.page.eval_on_selector_all("table.bench-table tbody tr", "rs => rs.map(r => r.dataset.fHw)")
    assert hws == ["tvm"] * int((csv["hw"] == "tvm").sum())
    texts = v.page.eval_on_selector_all("table.bench-table tbody tr td:nth-child(3)", "ts => ts.map(t => t.innerText)")
    assert set(texts) == {"TVM"}
    v.page.click("table.bench-table tbody tr:first-child td.link a")
    v.page.wait_for_load_state("load")
    assert v.page.eval_on_selector("img.curve", "i => i.complete && i.naturalWidth") > 0
    assert v.page.eval_on_selector("img.curve", "i => i.getAttribute('src')").endswith(".png")
    assert v.problems() == []


def test_reads_without_javascript(committed_site: Path, visit) -> None:
    """Without JavaScript the table is all there (the filters, which need it, stay hidden)."""
    v = visit(url(committed_site, "tables/table7_hw_w4a4.html"), committed_site.resolve().as_uri(), javascript=False)
    assert v.rows() == len(pd.read_csv(COMMITTED / "table7_hw_w4a4.csv"))
    assert not v.page.is_visible(".filters") and v.page.is_visible("table.bench-table")
    assert v.page.inner_text("table.bench-table tbody tr:first-child").count("±") >= 1
    assert v.problems() == []


def test_cell_page_from_the_bundle(bundle_site: Path, fixture_results, visit) -> None:
    """Built without runs=: a record's page shows its own curve (from the results' records.jsonl.gz), loaded clean."""
    rec = fixture_results.records[0]
    v = visit(url(bundle_site, f"cells/{rec['config_hash']}.html"), bundle_site.resolve().as_uri())
    assert v.page.eval_on_selector("img.curve", "i => i.complete && i.naturalWidth") > 0
    assert v.page.eval_on_selector("img.curve", "i => i.getAttribute('src')") == f"{rec['config_hash']}.png"
    assert v.page.is_visible("#details-source") and v.page.is_visible("#no-run-folder")
    assert "records.jsonl.gz" in v.page.inner_text("#details-source")
    assert v.problems() == []
