"""The whole site in a real headless Chromium (slow: every page of two sites): the index and every table page load
from file:// with no console error, no failed request and nothing from another host, each with as many rows as its
CSV; and the site works from a static web server."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "fmnist-mini"

pytestmark = pytest.mark.slow


def url(site: Path, rel: str) -> str:
    return (site / rel).resolve().as_uri()


def table_pages(results: Path) -> list[tuple[str, Path]]:
    """(page, CSV) of every table the site shows."""
    out = []
    for csv in sorted(results.rglob("*.csv")):
        rel = csv.relative_to(results)
        if rel.parts[0] == "curves" or (csv.name == "failed.csv" and pd.read_csv(csv).empty):
            continue
        out.append((f"tables/{str(rel.with_suffix('')).replace('/', '--')}.html", csv))
    return out


@pytest.mark.parametrize("which", ["committed", "fixture"])
def test_every_page_loads_clean_with_its_rows(which: str, request: pytest.FixtureRequest, visit) -> None:
    """The index and every table page from file://: no console error, no failed request, no other host; as many
    rows as the table's CSV once DataTables has taken the table over."""
    if which == "committed":
        site, results = request.getfixturevalue("committed_site"), COMMITTED
    else:
        site, results = request.getfixturevalue("fixture_site"), request.getfixturevalue("fixture_results").results
    base = site.resolve().as_uri()
    v = visit(url(site, "index.html"), base)
    assert v.problems() == []
    assert v.page.title().startswith("Index")
    pages = table_pages(results)
    assert any(p.startswith("tables/table7_") for p, _ in pages)
    for rel, csv in pages:
        v = visit(url(site, rel), base)
        assert v.problems() == [], rel
        assert v.rows() == len(pd.read_csv(csv)), rel
        assert v.page.is_visible(".dt-search input"), rel  # DataTables' own search box: the library is running


@pytest.fixture
def server(fixture_site: Path):
    """The fixture site on a static web server (Python's http.server) on localhost."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(fixture_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_works_from_a_static_web_server(server: str, fixture_results, visit) -> None:
    for rel in ("index.html", "tables/table7_hw_w4a4.html", "tables/cells.html"):
        v = visit(server + rel, server)
        assert v.problems() == [], rel
    assert v.rows() == len(pd.read_csv(fixture_results.results / "cells.csv"))
    v.page.click("table.bench-table tbody tr:first-child a")
    v.page.wait_for_load_state("load")
    assert v.page.url.startswith(server + "cells/") and v.problems() == []
