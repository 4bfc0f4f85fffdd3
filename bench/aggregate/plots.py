"""Figures (matplotlib, Agg backend, PNG): Fig. 5 heatmap, Fig. 6 robustness bars, training curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.aggregate import legacy  # noqa: E402
from bench.aggregate.axes import Axes  # noqa: E402
from bench.aggregate.tables import ordered, slots  # noqa: E402
from bench.results import write_atomic  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _value_columns(df: pd.DataFrame, key: str) -> list[str]:
    return [c for c in df.columns if c != key and not c.endswith("_n") and c != "mean"]


def fig5_heatmap(std_table: pd.DataFrame, path: str | Path, title: str = "", axes: Axes | None = None) -> Path | None:
    """Heatmap arch x profile of the spread across algorithms (``tables.algo_std``), numbers annotated; ``axes``:
    display names (default: the legacy ones)."""
    if std_table.empty:
        return None
    axes = axes or Axes()
    cols = _value_columns(std_table, "arch")
    data = std_table[cols].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2, 0.6 * len(std_table) + 1.5))
    cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#eeeeee")  # missing slots: grey, not "no spread"
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), [axes.label("hw", c) for c in cols])
    ax.set_yticks(range(len(std_table)), [axes.label("arch", a) for a in std_table["arch"]])
    top = np.nanmax(data) if np.isfinite(data).any() else 1.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            text = "-" if not math.isfinite(v) else (f"{v:.2f}" if v < 10 else f"{v:.1f}")
            light = math.isfinite(v) and v > 0.6 * top
            ax.text(j, i, text, ha="center", va="center", color="white" if light else "black", fontsize=9)
    fig.colorbar(im, ax=ax, label="std of top-1 across algorithms")
    ax.set_title(title or "Variance of test accuracy across algorithms")
    return _save(fig, Path(path))


def algo_color(algo: str) -> tuple:
    """One fixed colour per algorithm, the same in every panel and figure: the palette slot of its legacy table
    position (the figures of old records keep their colours), a hash of the name for an algorithm added since."""
    i = legacy.index("algo", algo)
    slot = i if i is not None else len(legacy.ORDERS["algo"]) + sum(map(ord, algo))
    return matplotlib.colormaps["tab20"](slot % 20)


def _bars(ax: plt.Axes, table: pd.DataFrame, groups: list[str], label: str, axes: Axes, group_axis: str) -> None:
    algos = list(table["algo"])
    width = 0.8 / max(len(algos), 1)
    x = np.arange(len(groups))
    for k, (_, row) in enumerate(table.iterrows()):
        vals = [float(row[g]) if g in row and pd.notna(row[g]) else 0.0 for g in groups]
        ax.bar(x + (k - (len(algos) - 1) / 2) * width, vals, width, label=axes.label("algo", row["algo"]),
               color=algo_color(row["algo"]))
    ax.set_xticks(x, [axes.label(group_axis, g) for g in groups], rotation=20)
    ax.set_ylabel("mean top-1 %")
    ax.set_title(label)
    finite = table[groups].astype(float).to_numpy() if groups else np.array([])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size:  # zoom on the range that differs; NC (0) bars stay visible as empty slots
        ax.set_ylim(max(0.0, finite.min() - 5), min(100.0, finite.max() + 2))


def fig6_robustness(hw_rob: pd.DataFrame, arch_rob: pd.DataFrame, path: str | Path, title: str = "",
                    axes: Axes | None = None) -> Path | None:
    """Two bar panels: mean accuracy per algorithm by arch (left, over hardware profiles) and by profile (right)."""
    if hw_rob.empty and arch_rob.empty:
        return None
    axes = axes or Axes()
    fig, panels = plt.subplots(1, 2, figsize=(13, 4.5))
    if not hw_rob.empty:
        _bars(panels[0], hw_rob, ordered(_value_columns(hw_rob, "algo"), "arch", axes),
              "by architecture (mean over HW)", axes, "arch")
    if not arch_rob.empty:
        _bars(panels[1], arch_rob, ordered(_value_columns(arch_rob, "algo"), "hw", axes),
              "by profile (mean over archs)", axes, "hw")
    legend: dict[str, object] = {}  # union of both panels' algorithms, one entry each
    for ax in panels:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=max(len(legend), 1),
               bbox_to_anchor=(0.5, 1.02))
    fig.suptitle(title or "Mean accuracy of algorithms", y=1.08)
    return _save(fig, Path(path))


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (unreadable lines skipped; a missing file gives [])."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def curve(rows: list[dict], by_epoch: bool) -> tuple[list[float], list[float]]:
    """(x, y) of one run: test_top1 per epoch, or the running train_top1 per global step."""
    qat = [r for r in rows if r.get("phase", "qat") == "qat"] or rows
    if by_epoch:
        pts = [(r["epoch"], r["test_top1"]) for r in qat if "test_top1" in r and "epoch" in r]
        return [float(p[0]) for p in pts], [float(p[1]) for p in pts]
    train = [r for r in qat if "train_top1" in r and "step" in r and "test_top1" not in r]
    per_epoch = max((int(r["step"]) for r in train), default=0)
    xs = [(int(r.get("epoch", 1)) - 1) * per_epoch + int(r["step"]) for r in train]
    return [float(x) for x in xs], [float(r["train_top1"]) for r in train]


def n_epochs(rows: list[dict]) -> int:
    """How many per-epoch test evaluations a run logged."""
    return sum(1 for r in rows if "test_top1" in r)


def training_curves(cells: pd.DataFrame, out_dir: str | Path, bits: str, axes: Axes | None = None) -> list[Path]:
    """One PNG per (arch, profile): a line per algorithm from its cell's first seed's ``metrics.jsonl``.

    test_top1 vs epoch when every run has >= 2 epochs, else the running train_top1 vs step. Cells without
    metrics are skipped, and so is a plot with no line.
    """
    out = Path(out_dir)
    axes = axes or Axes.of(cells)
    written = []
    chosen = slots(cells, ["arch", "algo"], "hw", prefer_calib=True)
    for (arch, hw), g in chosen.groupby(["arch", "hw"]):
        runs = []
        for _, r in g.iterrows():
            rows = read_metrics(r["metrics"]) if isinstance(r["metrics"], str) else []
            if rows:
                runs.append((r["algo"], rows))
        if not runs:
            continue
        by_epoch = all(n_epochs(rows) >= 2 for _, rows in runs)
        fig, ax = plt.subplots(figsize=(6.5, 4))
        drawn = 0
        # table order; algorithms nobody describes keep the cells' order (a stable sort)
        for algo, rows in sorted(runs, key=lambda t: axes.position("algo", t[0])):
            xs, ys = curve(rows, by_epoch)
            if xs:
                ax.plot(xs, ys, marker="o" if by_epoch else None, label=axes.label("algo", algo),
                        color=algo_color(algo))
                drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.set_ylabel("test top-1 %" if by_epoch else "train top-1 % (running)")
        ax.set_title(f"{axes.label('arch', arch)} on {axes.label('hw', hw)}, {bits.upper()}")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "curves" / f"{arch}_{hw}_{bits}.png"))
    return written
