"""The site's static files: DataTables from the ``itables`` package, and the site's own CSS and JavaScript.

itables ships DataTables (with its extensions and jQuery) as one ES module, ``itables/html/dt_bundle.js``. Browsers
refuse ``<script type="module" src=...>`` from ``file://`` pages, so the site loads it the way itables' own offline
mode does: a classic script holds the module's text and imports it from a ``blob:`` URL (no request leaves the page).
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from bench.errors import BenchError

STATIC = Path(__file__).resolve().parent / "static"
BUNDLE_JS = "dt_bundle.js"
BUNDLE_CSS = "dt_bundle.css"


def itables_files() -> tuple[Path, Path, str]:
    """(dt_bundle.js, dt_bundle.css, itables version) of the installed itables package; a one-line BenchError when
    it is missing."""
    try:
        import itables
    except ImportError:
        raise BenchError("the itables package (DataTables for the site) is not installed; "
                         "pip install itables (or pip install -e .)") from None
    html = Path(str(resources.files("itables") / "html"))
    js, css = html / BUNDLE_JS, html / BUNDLE_CSS
    if not js.is_file() or not css.is_file():
        raise BenchError(f"itables {itables.__version__} has no html/{BUNDLE_JS}; accepted: itables >= 2.9")
    return js, css, str(itables.__version__)


def write_assets(out: Path) -> None:
    """Write ``out/assets/``: the DataTables bundle (wrapped, see the module doc), its CSS, site.css and site.js."""
    js, css, version = itables_files()
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    source = js.read_text(encoding="utf-8")
    wrapper = (f"/* DataTables {BUNDLE_JS} of the itables {version} Python package (MIT; DataTables and jQuery: MIT), "
               "as an ES module imported from a blob: URL so that it also runs from file:// pages. */\n"
               "window.benchDataTables = import(URL.createObjectURL(new Blob([" + json.dumps(source)
               + "], {type: \"text/javascript\"})));\n")
    (assets / BUNDLE_JS).write_text(wrapper, encoding="utf-8")
    shutil.copyfile(css, assets / BUNDLE_CSS)
    for name in ("site.css", "site.js"):
        shutil.copyfile(STATIC / name, assets / name)
