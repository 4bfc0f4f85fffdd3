"""Fixtures of the site tests: a results folder aggregated from fabricated records (with their run folders; its
records.jsonl.gz fills the record pages of a site built without them), and a real headless Chromium (Debian
``chromium``, driven by Playwright) for the browser tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.results import config_hash, write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "fmnist-mini"
PROFILES = {"academic": (1, -1, False), "tensorrt": (2, 4, True), "tvm": (3, 4, False), "snpe": (3, 4, False)}
LABELS = {"lsq": "LSQ", "pact": "PACT", "ptq": "PTQ", "academic": "Academic", "tensorrt": "TensorRT", "tvm": "TVM",
          "snpe": "SNPE", "minmax": "MinMax", "mse": "MSE", "paper": "paper"}
ORDER = {"lsq": 10, "pact": 60, "ptq": 80, "academic": 0, "tensorrt": 10, "tvm": 40, "snpe": 50,
         "resnet18_mini": 10, "mobilenetv2_mini": 30, "minmax": 10, "mse": 20, "paper": 1000}


def record(algo: str = "lsq", hw: str = "academic", arch: str = "resnet18_mini", w: int = 4, a: int = 4,
           seed: int = 0, top1: float | None = 80.0, status: str = "ok", calib: tuple[str, str] | None = None,
           quant: dict | None = None, extra: dict | None = None) -> dict[str, Any]:
    """A schema-2 record shaped like the runner's (``calib`` = (act, weight); QAT defaults to the paper's init)."""
    kind = "ptq" if algo == "ptq" else "qat"
    calib = calib or (("paper", "paper") if kind == "qat" else ("minmax", "minmax"))
    graph, fold, per_channel = PROFILES[hw]
    q = {"graph": None, "bn_fold": None, "first_last_bits": None, "bypass": False, "only": "all",
         "sensitivity": False, **(quant or {})}
    config = {"algo": {"name": algo, "params": {}}, "calib": {"weight": calib[1], "act": calib[0]},
              "hw": {"name": hw, "graph": graph, "bn_fold": fold, "weight": {"per_channel": per_channel}},
              "bits": {"w": w, "a": a}, "arch": {"name": arch},
              "data": {"name": "fashion_mnist", "track": "fmnist-mini", "calib_size": 1024},
              "train": {"epochs": 1}, "debug": {"smoke": False}, "quant": q,
              "ptq": {"bn_recalib": False, "cle": False, "bias_correction": "none"}, "seed": seed}
    return {"schema_version": 2, "track": "fmnist-mini", "algo": algo, "kind": kind, "calib_weight": calib[1],
            "calib_act": calib[0], "hw": hw, "graph": q["graph"] if q["graph"] is not None else graph,
            "bn_fold": q["bn_fold"] if q["bn_fold"] is not None else fold, "arch": arch, "data": "fashion_mnist",
            "w_bits": w, "a_bits": a, "seed": seed, "status": status, "fp32_top1": 91.0, "top1": top1,
            "top5": 99.0, "init_top1": 50.0, "train_epochs": 1 if kind == "qat" else 0,
            "config_hash": config_hash(config), "git_sha": "abc1234", "versions": {}, "wall_s": 60.0 + seed,
            "started_at": "2026-01-01T00:00:00+00:00", "finished_at": f"2026-01-01T00:0{seed}:00+00:00",
            "num_classes": 10, "labels": {"algo": LABELS[algo], "hw": LABELS[hw], "arch": arch,
                                          "calib_weight": LABELS[calib[1]], "calib_act": LABELS[calib[0]]},
            "order": {"algo": ORDER[algo], "hw": ORDER[hw], "arch": ORDER[arch],
                      "calib_weight": ORDER[calib[1]], "calib_act": ORDER[calib[0]]},
            "error": None, "extra": {"qparams_json": "qparams.json", **(extra or {})}, "config": config}


def write_run(runs: Path, name: str, rec: dict[str, Any], overrides: list[str] | None = None) -> Path:
    """A run folder as ``python -m bench run`` leaves it: result.json, metrics.jsonl, qparams.json, .hydra/."""
    d = runs / name
    write_json_atomic(d / "result.json", rec)
    if rec["kind"] == "qat":
        rows = [{"phase": "qat", "epoch": 1, "step": s, "lr": 0.01, "train_loss": 2.0 - s / 300,
                 "train_top1": 40 + s / 10} for s in (25, 50, 75, 100)]
        rows.append({"phase": "qat", "epoch": 1, "step": 100, "test_top1": rec["top1"] or 10.0, "test_loss": 1.0})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qp = {"conv1.weight_fq": {"kind": "weight", "spec": "int4 sym per-channel", "qmin": -8, "qmax": 7,
                              "scale": [0.01, 0.02], "zero_point": [0, 0], "learned": {"s": [0.01, 0.02]}},
          "act_fq_x": {"kind": "act", "spec": "uint4 asym per-tensor", "qmin": 0, "qmax": 15, "scale": [0.1],
                       "zero_point": [3], "learned": {"s": [0.1]}}}
    (d / "qparams.json").write_text(json.dumps(qp))
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    ov = overrides or [f"algo={rec['algo']}", f"hw={rec['hw']}", f"arch={rec['arch']}",
                       f"bits=w{rec['w_bits']}a{rec['a_bits']}", f"seed={rec['seed']}"]
    ov += [f"runs_dir={runs}", "progress=False", "hydra/launcher=parallel"]
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
    return d


@dataclass
class Fixture:
    """A runs folder of fabricated records, the results folder aggregated from it, and what was written."""

    runs: Path
    results: Path
    records: list[dict[str, Any]] = field(default_factory=list)


FINDINGS_CSV = (
    "id,paper,where,claim,paper_evidence,our_evidence,units,mean_diff,ci95_lo,ci95_hi,detail,verdict,note\n"
    "tvm-gap,MQBench,Table 7,TVM has the largest hardware gap,67.7 vs 70.7,TVM vs other profiles,4,3.0,2.1,3.9,,"
    "holds,\n"
    "lsq-best,MQBench,Table 4,LSQ is the best academic algorithm,70.7,LSQ vs PACT,4,-0.5,-1.2,0.2,,"
    "does not hold,cause not investigated\n")


def make_fixture(root: Path) -> Fixture:
    """Records of Tables 4, 5, 7 and 10, seeds, an NC cell, a deployment check and a failed record; aggregated with
    ``bench.aggregate`` into ``root/results`` (plus a findings scorecard, as the leaderboard script adds)."""
    from bench.aggregate import aggregate

    runs = root / "runs" / "fmnist-mini"
    fx = Fixture(runs, root / "results")
    recs = []
    top = {"lsq": 85.0, "pact": 83.0}
    for arch in ("resnet18_mini", "mobilenetv2_mini"):
        for algo in ("lsq", "pact"):
            for i, hw in enumerate(PROFILES):
                for seed in (0, 1) if arch == "resnet18_mini" else (0,):
                    acc = top[algo] - 3.0 * i - (2.0 if arch != "resnet18_mini" else 0.0) + 0.3 * seed
                    nc = arch == "mobilenetv2_mini" and algo == "pact" and hw == "tvm"
                    recs.append(record(algo, hw, arch, seed=seed, top1=10.0 if nc else acc))
        recs.append(record("lsq", "tensorrt", arch, quant={"bn_fold": 0}, top1=70.0))
        for hw in ("snpe", "tvm"):
            for calib in (("minmax", "minmax"), ("mse", "minmax")):
                dep = {"deploy": {"status": "ok", "requant": "shift", "rounding": "half_up", "fake_top1": 88.0,
                                  "int_top1": 87.9, "agreement": 99.6, "n": 10000}} if hw == "tvm" else {}
                recs.append(record("ptq", hw, arch, w=8, a=8, calib=calib, top1=88.0 if calib[0] == "mse" else 87.5,
                                   extra=dep))
    failed = record("lsq", "snpe", "resnet18_mini", w=2, a=2, status="failed", top1=None)
    failed["error"] = "something went wrong"
    recs.append(failed)
    for i, r in enumerate(recs):
        write_run(runs, f"{i:03d}_{r['algo']}_{r['hw']}_{r['arch']}_s{r['seed']}", r)
    fx.records = recs
    aggregate(root / "runs", out=fx.results, plots=True, log=lambda s: None)
    (fx.results / "findings.csv").write_text(FINDINGS_CSV)
    (fx.results / "findings.md").write_text("# Findings\n\nThe papers' claims, checked against these records.\n")
    (fx.results / "README.md").write_text("# fmnist-mini leaderboard\n\n- commit of the records (`git_sha`): abc1234\n"
                                          "- machine: 2 CPU cores, 8 GiB, no GPU\nNotes:\n- a list under a line\n")
    return fx


@pytest.fixture(scope="session")
def fixture_results(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """The fabricated runs and results folder (built once per session)."""
    return make_fixture(tmp_path_factory.mktemp("site_fixture"))


@pytest.fixture(scope="session")
def fixture_site(fixture_results: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site of the fabricated results, with their run folders."""
    from bench.site import build_site

    out = tmp_path_factory.mktemp("site_out") / "site"
    build_site(fixture_results.results, out, runs=fixture_results.runs, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def bundle_site(fixture_results: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site of the fabricated results without their run folders: record pages from the results' bundle
    (records.jsonl.gz, written by the aggregator beside cells.csv)."""
    from bench.site import build_site

    assert (fixture_results.results / "records.jsonl.gz").is_file()
    out = tmp_path_factory.mktemp("bundle_site") / "site"
    build_site(fixture_results.results, out, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def committed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site of the committed results (no runs folder: runs are not committed)."""
    from bench.site import build_site

    out = tmp_path_factory.mktemp("committed_site") / "site"
    build_site(COMMITTED, out, log=lambda s: None)
    return out


# ---- the browser ----

def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium``; other distributions' names too), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(what: str) -> None:
    """Skip (a machine without a browser), or fail where BENCH_REQUIRE_BROWSER=1 (CI installs one)."""
    msg = f"{what}; the browser tests need it (CI: .ci/run installs chromium and sets BENCH_REQUIRE_BROWSER=1)"
    if os.environ.get("BENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (the system binary: no browser download)."""
    path = chromium_path()
    if path is None:
        _missing("chromium is not installed (sudo apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Visit:
    """A page opened in the browser, with what went wrong on it: console errors, uncaught exceptions, failed
    requests, and requests that left the site (another host: only ``allowed`` schemes and hosts are the site's)."""

    page: Any
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that went wrong, as lines."""
        return [f"console: {e}" for e in self.errors] + [f"failed: {u}" for u in self.failed] + \
            [f"request to another host: {u}" for u in self.foreign]

    def rows(self, selector: str = "table.bench-table") -> int:
        """Rows DataTables shows now (its 'no matching records' row is not one)."""
        return self.page.eval_on_selector(
            selector, "t => [...t.tBodies[0].rows].filter(r => !r.querySelector('td.dt-empty')).length")


def _allowed(url: str, base: str) -> bool:
    return url.startswith(("blob:", "data:")) or url.startswith(base)


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    """``visit(url, base=..., javascript=True)``: open ``url`` in a fresh browser context, wait for the tables'
    JavaScript when the page has tables, and return a :class:`Visit` (requests outside ``base`` are foreign)."""
    contexts: dict[bool, Any] = {}

    def _visit(url: str, base: str, javascript: bool = True, wait: bool = True) -> Visit:
        if javascript not in contexts:
            contexts[javascript] = browser.new_context(java_script_enabled=javascript,
                                                       viewport={"width": 1400, "height": 900})
        page = contexts[javascript].new_page()
        v = Visit(page)
        page.on("console", lambda m: v.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: v.errors.append(str(e)))
        page.on("requestfailed", lambda r: v.failed.append(f"{r.url} ({r.failure})"))
        page.on("request", lambda r: None if _allowed(r.url, base) else v.foreign.append(r.url))
        page.goto(url)
        page.wait_for_load_state("load")
        if javascript and wait and page.query_selector("table.bench-table"):
            page.wait_for_selector("body[data-tables-ready]", state="attached", timeout=20000)
        return v

    yield _visit
    for ctx in contexts.values():
        ctx.close()
