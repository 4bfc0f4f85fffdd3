"""The training curve of one record, from its ``metrics.jsonl`` (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path


def _phases(rows: list[dict]) -> dict[str, list[dict]]:
    """The metrics rows with a step and a train or test value, by phase."""
    phases: dict[str, list[dict]] = {}
    for r in rows:
        if "step" in r and ("train_top1" in r or "train_loss" in r or "test_top1" in r):
            phases.setdefault(str(r.get("phase", "train")), []).append(r)
    return phases


def has_curve(rows: list[dict]) -> bool:
    """Whether :func:`curve_png` draws something for ``rows``."""
    return bool(_phases(rows))


def render_curves(jobs: list[tuple[list[dict], Path, str]], workers: int | None = None) -> None:
    """:func:`curve_png` of every ``(rows, path, title)``, in parallel processes when there are many (drawing is
    matplotlib's single-threaded Python: a results folder has hundreds of curves). Forked workers (they only draw);
    not spawned, which would re-run a caller's script that lacks an ``if __name__ == "__main__"`` guard."""
    from multiprocessing import get_all_start_methods, get_context

    from bench.config import usable_cores

    workers = min(workers or usable_cores(), max(1, len(jobs) // 16))
    if workers <= 1 or "fork" not in get_all_start_methods():
        for rows, path, title in jobs:
            curve_png(rows, path, title)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        list(pool.map(curve_png, *zip(*jobs, strict=True), chunksize=max(1, len(jobs) // (4 * workers))))


def curve_png(rows: list[dict], path: Path, title: str) -> Path | None:
    """Loss and top-1 against the global step, one line per phase (``qat``, ``fp32_baseline``...), test top-1 per
    epoch as markers; None when the metrics have no step with a train or test value."""
    phases = _phases(rows)
    if not phases:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for phase, prs in phases.items():
        steps = max((int(r["step"]) for r in prs), default=0) or 1

        def x(r: dict, steps: int = steps) -> float:
            return (int(r.get("epoch", 1) or 1) - 1) * steps + int(r["step"])

        train = [r for r in prs if "test_top1" not in r]
        tests = [r for r in prs if "test_top1" in r]
        if any("train_loss" in r for r in train):
            pts = [(x(r), float(r["train_loss"])) for r in train if "train_loss" in r]
            ax_loss.plot(*zip(*pts, strict=True), label=f"{phase} train")
        if any("train_top1" in r for r in train):
            pts = [(x(r), float(r["train_top1"])) for r in train if "train_top1" in r]
            ax_acc.plot(*zip(*pts, strict=True), label=f"{phase} train (running)")
        if tests:
            ax_acc.plot([x(r) for r in tests], [float(r["test_top1"]) for r in tests], "o", label=f"{phase} test")
            if any("test_loss" in r for r in tests):
                pts = [(x(r), float(r["test_loss"])) for r in tests if "test_loss" in r]
                ax_loss.plot(*zip(*pts, strict=True), "o", label=f"{phase} test")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("top-1 %")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    # fixed margins, not tight_layout(): that draws the figure once more to measure it (a third of a site build's
    # time went there, with 700+ curves)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.15, top=0.86, wspace=0.22)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=90)
    finally:
        plt.close(fig)
    return path
