"""Build the static site: validate, render every page into a temp folder beside ``out``, then swap it in.

Layout of the site (every link relative, nothing fetched from another host)::

    index.html               the run (commit, machine, cost), findings, the tables by category, figures, curves
    tables/<slug>.html       one page per table CSV (sortable, filterable, heatmapped gaps, the paper's numbers)
    cells/<config_hash>.html one page per record: record, re-run command, config, curve, quantizer ranges, deploy
    cells/<config_hash>.png  its training curve (from metrics.jsonl when runs= has its run folder, else from the
                             results' records.jsonl.gz)
    data/                    the results folder's CSV and Markdown files
    figures/                 its PNG figures and curves/
    assets/                  DataTables (itables), site.css, site.js
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.aggregate.bundle import BUNDLE_NAME
from bench.errors import BenchError
from bench.site import assets
from bench.site.cells import (
    BUNDLE,
    Cell,
    CellIndex,
    Details,
    details,
    norm,
    quantizer_rows,
    rerun_command,
    seed_summary,
)
from bench.site.discover import CATEGORIES, SITE_MARKER, Results, TableFile, discover
from bench.site.reference import Reference
from bench.site.tables import FILTERS, TableView, build_view, finite, fmt, known_values, learn_labels

MARKER = SITE_MARKER  # in every site this verb writes: only such a folder is replaced
TEMPLATES = Path(__file__).resolve().parent / "templates"
FILTER_NAMES = {axis: name for axis, (name, _) in FILTERS.items()}
NEIGHBOUR_NAMES = {"hw": "other profiles", "algo": "other algorithms", "arch": "other archs",
                   "bits": "other bit-widths", "seed": "other seeds"}
# the findings scorecard's columns shown on the index (its own page has them all, and the claims' full text)
SCORECARD_COLUMNS = ("id", "paper", "where", "claim", "units", "mean_diff", "ci95_lo", "ci95_hi", "verdict")
FACT_FIELDS = ("status", "top1", "top5", "init_top1", "fp32_top1", "train_epochs", "wall_s", "git_sha",
               "config_hash", "started_at", "finished_at", "error")


@dataclass
class SiteReport:
    """What a build wrote."""

    out: Path
    tables: int = 0
    cells: int = 0
    curves: int = 0
    with_run_folder: int = 0
    from_bundle: int = 0  # cell pages filled from the results' records.jsonl.gz (no run folder)
    pages: list[str] = field(default_factory=list)


def check_out(out: Path) -> None:
    """``out`` must be new, empty, or a site this verb wrote (it holds :data:`MARKER`); else a one-line error."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"out={out} is a file; accepted: a new folder, an empty one, or a site written by "
                         "python -m bench site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BenchError(f"out={out} is not empty and was not written by python -m bench site (no {MARKER}); "
                         "accepted: a new folder, an empty one, or an earlier site")


def check_runs(runs: Path | None) -> None:
    """``runs=`` must be a folder with at least one result.json."""
    if runs is None:
        return
    if not runs.exists():
        raise BenchError(f"runs={runs} does not exist; accepted: a runs folder holding result.json records")
    if not runs.is_dir():
        raise BenchError(f"runs={runs} is not a directory; accepted: a runs folder holding result.json records")
    if next(runs.rglob("result.json"), None) is None:
        raise BenchError(f"runs={runs} holds no result.json records; accepted: a runs folder of python -m bench run")


def build_site(results: str | Path, out: str | Path = "site", runs: str | Path | None = None,
               reference: Reference | None = None, log: Callable[[str], None] = print) -> SiteReport:
    """Build the site of the results folder ``results`` (and the run folders under ``runs``) into ``out``.

    Everything is checked before anything is written (a bad ``results=``, a folder without records, a bad
    ``runs=`` or ``out=`` raise a one-line :class:`BenchError`); the pages are written into a temp folder beside
    ``out`` that replaces it at the end.
    """
    res = discover(results)
    runs_path = Path(runs) if runs is not None else None
    check_runs(runs_path)
    out_path = Path(out)
    check_out(out_path)
    assets.itables_files()
    index = CellIndex.build(res.cells, runs_path, res.bundles)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        report = _write(res, index, tmp, runs_path, reference or Reference.load(), log)
        (tmp / MARKER).write_text("written by python -m bench site; the whole folder is replaced on the next build\n")
        _swap(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out = out_path
    log(f"wrote {out_path}/: index.html, {report.tables} table pages, {report.cells} cell pages "
        f"({report.with_run_folder} with their run folder, {report.from_bundle} from records.jsonl.gz, "
        f"{report.curves} training curves)")
    return report


def _swap(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---- rendering ----

def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=False, lstrip_blocks=False, undefined=jinja2.StrictUndefined)
    env.globals["fmt"] = fmt
    return env


def _markdown(text: str) -> str:
    """HTML of a Markdown text (Python-Markdown with tables); a list right under a paragraph line is a list, and an
    unindented line right under a list a new paragraph (as GitHub shows the results' READMEs)."""
    if not text.strip():
        return ""
    import markdown

    lines: list[str] = []
    in_list = in_para = False
    for line in text.splitlines():
        top = bool(line.strip()) and not line.startswith((" ", "\t"))
        if _is_item(line):
            if in_para:
                lines.append("")  # a list right under a paragraph line
            in_list, in_para = True, False
        elif top:
            if in_list and not line.startswith("|"):
                lines.append("")  # an unindented line right under a list: a new paragraph
            in_list, in_para = False, not line.startswith(("#", "|", ">"))
        elif not line.strip():
            in_list = in_para = False
        lines.append(line)
    return markdown.markdown("\n".join(lines), extensions=["tables", "fenced_code"])


def _is_item(line: str) -> bool:
    return line.lstrip().startswith(("- ", "* ")) and not line.startswith((" ", "\t"))


@dataclass
class _Site:
    track: str
    n_records: int
    runs_name: str
    nav: list[tuple[str, str, list[tuple[str, str, int]]]]


def _write(res: Results, index: CellIndex, out: Path, runs: Path | None, ref: Reference,
           log: Callable[[str], None]) -> SiteReport:
    env = _env()
    report = SiteReport(out)
    assets.write_assets(out)
    known = known_values(index)
    labels = learn_labels(res.tables, known)
    track = norm(res.cells["track"].iloc[0]) if "track" in res.cells.columns else res.root.name
    track = track or res.root.name
    # data files and figures
    for t in res.tables:
        dst = out / "data" / f"{t.rel}.csv"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(t.csv, dst)
        if t.csv.with_suffix(".md").is_file():
            shutil.copyfile(t.csv.with_suffix(".md"), dst.with_suffix(".md"))
    for p in res.figures + res.curves:
        dst = out / "figures" / p.relative_to(res.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    # navigation: categories in order, each with its table pages
    by_cat: dict[str, list[TableFile]] = {}
    for t in res.tables:
        by_cat.setdefault(t.category, []).append(t)
    nav = []
    for key, name, _ in CATEGORIES:
        if key in by_cat:
            nav.append((key, name, [(f"tables/{t.slug}.html", t.title, len(t.frame)) for t in by_cat[key]]))
    site = _Site(track, len(index), runs.name if runs is not None else "", nav)
    # table pages
    findings_view: TableView | None = None
    findings_page = ""
    tpl = env.get_template("table.html")
    for t in res.tables:
        view = build_view(t, index, labels, known, ref, prefix="../")
        notes = _markdown(t.md.notes)
        html = tpl.render(site=site, root="../", title=t.title, view=view, category=res.category_name(t.category),
                          has_md=t.csv.with_suffix(".md").is_file(), notes_html=notes, tables_js=True,
                          filter_names=FILTER_NAMES)
        _page(out, f"tables/{t.slug}.html", html, report)
        report.tables += 1
        if t.category == "findings" and t.folder == "":
            short = [c for c in SCORECARD_COLUMNS if c in t.frame.columns]
            brief = replace(t, frame=t.frame[short]) if "verdict" in short and len(short) > 3 else t
            findings_view = build_view(brief, index, labels, known, ref, prefix="")
            findings_page = f"tables/{t.slug}.html"
    # cell pages
    ctpl = env.get_template("cell.html")
    curve_jobs: list[tuple[list[dict], Path, str]] = []
    for cell in index:
        _cell_page(ctpl, site, cell, index, labels, res, out, report, curve_jobs)
    from bench.site.plots import render_curves

    render_curves(curve_jobs)
    # index
    figures = [(f"figures/{p.relative_to(res.root)}", p.stem.replace("_", " ")) for p in res.figures]
    curves = [(f"figures/{p.relative_to(res.root)}", p.stem.replace("_", " ")) for p in res.curves]
    html = env.get_template("index.html").render(
        site=site, root="", title="Index", facts=_run_facts(res, index), readme_html=_markdown(res.readme),
        findings=findings_view, findings_page=findings_page, findings_html=_markdown(res.findings_md),
        figures=figures, curves=curves,
        tables_js=findings_view is not None, filter_names=FILTER_NAMES)
    _page(out, "index.html", html, report)
    return report


def _page(out: Path, rel: str, html: str, report: SiteReport) -> None:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    report.pages.append(rel)


def _run_facts(res: Results, index: CellIndex) -> list[tuple[str, str]]:
    """Commit, records, seeds and cost of the results, from cells.csv."""
    c = res.cells
    facts: list[tuple[str, str]] = [("results folder", res.root.name)]
    per_folder = " + ".join(f"{len(h)} ({f + '/' if f else ''}cells.csv)" for f, h in index.folders.items())
    facts.append(("records", str(len(index)) + (f" = {per_folder}" if len(index.folders) > 1 else "")))
    for line in res.readme.splitlines():  # what the leaderboard script says about the run (machine, commit, wall)
        m = re.match(r"- (machine|commit[^:]*|script run at|wall time[^:]*|finished): (.+)$", line.strip())
        if m:
            facts.append((f"{m.group(1)} (README)", m.group(2).replace("`", "")))
    if "cell_id" in c.columns:
        facts.append(("cells (records that differ only in seed are one cell)", str(c["cell_id"].nunique())))
    if "git_sha" in c.columns:
        shas = c["git_sha"].fillna("unknown").astype(str).value_counts()
        top = ", ".join(f"{s[:10]} ({n})" for s, n in shas.head(4).items())
        facts.append(("commits of the records", top + (f" and {len(shas) - 4} more" if len(shas) > 4 else "")))
    if "wall_s" in c.columns:
        wall = [float(x) for x in c["wall_s"] if finite(x)]
        if wall:
            median = sorted(wall)[len(wall) // 2]
            facts.append(("cost", f"{sum(wall) / 3600:.2f} h of cell wall time, median {median:.0f} s per record"))
    if "status" in c.columns:
        counts = c["status"].astype(str).value_counts()
        facts.append(("status", ", ".join(f"{k}: {v}" for k, v in counts.items())))
    if "seed" in c.columns:
        seeds = sorted({norm(s) for s in c["seed"] if norm(s)}, key=lambda s: float(s))
        facts.append(("seeds", ", ".join(seeds)))
    if "finished_at" in c.columns:
        done = sorted(str(x) for x in c["finished_at"] if isinstance(x, str) and x)
        if done:
            facts.append(("records finished", f"{done[0]} .. {done[-1]}"))
    return facts


def _cell_page(tpl: Any, site: _Site, cell: Cell, index: CellIndex, labels: dict, res: Results, out: Path,
               report: SiteReport, curve_jobs: list[tuple[list[dict], Path, str]]) -> None:
    row = cell.row
    title = cell.title(labels)
    facts = [(k, _show(row.get(k))) for k in FACT_FIELDS if k in row and _show(row.get(k)) != "-"]
    seeds = index.seeds(cell)
    s = seed_summary(seeds)
    seed_text = f"{len(seeds)} seeds: " + (
        f"mean {fmt(s.mean)} ± {fmt(s.std)} (sample std), 95% CI ± {fmt(s.ci95)}" if finite(s.mean) and s.n >= 2
        else "not converged on every seed (NC)" if any(x.status == "nc" for x in seeds) else "fewer than two converged")
    neighbours = []
    for axis, near in index.neighbours(cell).items():
        if not near:
            continue
        links = []
        for n in near:
            v = _axis_text(n, axis, labels)
            links.append((f"{n.config_hash}.html", f"{v} ({fmt(n.top1) if n.status == 'ok' else n.status.upper()})"))
        neighbours.append((NEIGHBOUR_NAMES[axis], links))
    command, source = rerun_command(cell)
    command_note = {
        "run folder": "From the record's Hydra overrides (.hydra/overrides.yaml) minus output paths and launcher "
                      "settings, with the torch threads it ran with: it gives the same config_hash, so a runs folder "
                      "that already holds this record skips it.",
        "cells.csv": "From the record's Hydra overrides as cells.csv keeps them, minus output paths and launcher "
                     "settings, with the torch threads it ran with: it gives the same config_hash, so a runs folder "
                     "that already holds this record skips it.",
        "row": "Rebuilt from the record's row of cells.csv (neither its run folder nor its launch overrides are "
               "available): it names the record's axes and overrides, but only the launch overrides are known to "
               "give back its config_hash."}[source]
    info = details(cell)
    missing = ("The run folder of this record is not available (" + (
        f"runs={site.runs_name} does not hold a record with config_hash {cell.config_hash}" if site.runs_name
        else "the site was built without runs=") + (")." if info is not None else
        "): this page shows its row of cells.csv and a re-run command; build with runs=<runs folder> (or aggregate "
        f"anew: python -m bench aggregate writes {BUNDLE_NAME}) for its config, training curve, quantizer ranges "
        "and deployment check."))
    from_text = "" if info is None else (
        f"Config, training curve, quantizer ranges and deployment check: from its run folder (runs={site.runs_name})."
        if info.source != BUNDLE else
        "Config, training curve (at most 200 points), quantizer ranges (min .. max over channels) and deployment "
        f"check: from the results' {BUNDLE_NAME} (written by python -m bench aggregate beside cells.csv).")
    needs = f"Needs the run folder (runs=) or the results' {BUNDLE_NAME}."
    # curve
    curve, curve_alt = _curve(cell, info, title, res, out, report, curve_jobs)
    # quantizers
    qrows = quantizer_rows(info.quantizers) if info is not None else []
    qnote = ("This record quantizes nothing (FP32)." if norm(row.get("kind")) == "fp32" else
             needs if info is None else "No qparams.json in the run folder." if info.source != BUNDLE else
             f"The results' {BUNDLE_NAME} has no quantizer ranges of this record (no qparams.json in its run "
             "folder).")
    deploy = []
    for key, name in (("deploy", "Fake quantization vs integer-only execution (deploy.check)"),
                      ("onnx", "QDQ ONNX in onnxruntime (deploy.onnx)")):
        d = getattr(info, key) if info is not None else None
        if isinstance(d, dict):
            deploy.append((name, [(k, _show(v)) for k, v in d.items() if not isinstance(v, dict | list)]))
    deploy_note = ("This record ran no deployment check (python -m bench check-real / export run one)."
                   if info is not None else needs)
    config = ""
    if info is not None and info.config:
        import yaml

        config = yaml.safe_dump(info.config, sort_keys=False, default_flow_style=False)
    rec = cell.record or {}
    record_json = json.dumps({k: v for k, v in rec.items() if k != "config"}, indent=2) if rec else ""
    qcaption = ("qparams.json" if info is None or info.source != BUNDLE else
                f"{BUNDLE_NAME} (qparams.json summarised)") + \
        ": one row per quantizer; real range = scale × (int range − zero point)"
    html = tpl.render(site=site, root="../", title=title, cell=cell, missing=missing, source=from_text, facts=facts,
                      seeds=seeds, seed_text=seed_text, neighbours=neighbours, command=command,
                      command_note=command_note, curve=curve, curve_alt=curve_alt, qrows=qrows, qnote=qnote,
                      qcaption=qcaption, deploy=deploy, deploy_note=deploy_note, config=config,
                      config_note=needs if info is None else f"No config of this record in {info.where}.",
                      row=[(k, _show(v)) for k, v in row.items()], record_json=record_json, tables_js=False)
    _page(out, cell.page, html, report)
    report.cells += 1
    report.with_run_folder += cell.record is not None
    report.from_bundle += info is not None and info.source == BUNDLE


def _axis_text(cell: Cell, axis: str, labels: dict) -> str:
    r = cell.row
    if axis == "bits":
        return f"W{norm(r.get('w_bits'))}A{norm(r.get('a_bits'))}"
    if axis == "seed":
        return f"seed {norm(r.get('seed'))}"
    v = norm(r.get(axis))
    return labels.get(axis, {}).get(v, v)


def _curve(cell: Cell, info: Details | None, title: str, res: Results, out: Path,
           report: SiteReport, curve_jobs: list[tuple[list[dict], Path, str]]) -> tuple[str, str]:
    """(image path relative to the cell page, its description): the record's own curve from its metrics rows (run
    folder or the results' bundle; drawn later, with the others, from ``curve_jobs``), else the results folder's
    curve of its arch and profile, else ('', why not)."""
    if info is not None and info.curve:
        from bench.site.plots import has_curve

        if has_curve(info.curve):
            curve_jobs.append((info.curve, out / "cells" / f"{cell.config_hash}.png", title))
            report.curves += 1
            where = "metrics.jsonl" if info.source != BUNDLE else \
                f"metrics.jsonl as the results' {BUNDLE_NAME} keeps it, at most 200 points"
            return f"{cell.config_hash}.png", f"Training curve of this record ({where}): {title}"
    r = cell.row
    name = f"{norm(r.get('arch'))}_{norm(r.get('hw'))}_w{norm(r.get('w_bits'))}a{norm(r.get('a_bits'))}.png"
    shared = res.root / "curves" / name
    if shared.is_file():
        return (f"../figures/curves/{name}", f"Training curves of every algorithm on {norm(r.get('arch'))} / "
                f"{norm(r.get('hw'))} from the results folder (curves/{name}): this record's own curve needs its "
                "run folder")
    if info is not None:
        return "", "No training curve: this record has no metrics.jsonl with training steps (PTQ cells do not train)."
    return "", f"No training curve here: it needs the record's run folder (runs=) or the results' {BUNDLE_NAME}."


def _show(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.6g}"
    return str(v)
