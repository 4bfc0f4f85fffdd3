"""Shared plumbing of the Hydra-based verbs: one-line errors, validation before Hydra writes anything."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from bench.cli.args import fail
from bench.config import CONF_DIR, GROUPS, check_overrides, group_options, register_configs
from bench.errors import BenchError
from bench.validate import check_output_dirs


def first_line(e: BaseException) -> str:
    """A one-line description of an exception from Hydra/OmegaConf (whose messages span lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    head = lines[0] if lines else type(e).__name__
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        head = f"{head}: {str(cause).strip().splitlines()[0]}"
    key = next((ln for ln in lines if ln.startswith("full_key:")), None)
    return f"{head} ({key})" if key and key not in head else head


def compose_config(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose the config as Hydra will (``with_hydra``: with the ``hydra`` node); a bad override is one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()  # idempotent: callers need not have registered the schemas first
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise BenchError(f"invalid override: {first_line(e)}") from None


def compose_and_validate(overrides: list[str]) -> DictConfig:
    """Compose the config as Hydra will, and check the cell (:func:`bench.runner.check_cell`), before any output is
    written."""
    from bench.runner import check_cell

    cfg = compose_config(overrides)
    check_cell(cfg)
    return cfg


def first_of_sweep(override: str) -> str:
    """``key=a,b,c`` -> ``key=a`` (a config of the sweep's first cell); other overrides unchanged."""
    key, sep, value = override.partition("=")
    if sep and "," in value and not value.startswith(("[", "{", "'", '"')) and not key.startswith("hydra"):
        return f"{key}={value.split(',')[0]}"
    return override


LAUNCHERS = ("local", "parallel", "slurm")  # bench/conf/hydra/launcher (+ the plugins' own names, accepted too)
PLUGIN_LAUNCHERS = ("basic", "submitit_local", "submitit_slurm")


def expand_seeds(argv: list[str]) -> list[str]:
    """``seeds=N`` (seeds 0..N-1) or ``seeds=a,b,c``: sweep every cell over those seeds (``seed=...`` and ``-m``)."""
    given = [a for a in argv if a.startswith("seeds=")]
    if not given:
        return argv
    value = given[-1].split("=", 1)[1]
    parts = [p.strip() for p in value.split(",")]
    if not value or not all(p.isdigit() for p in parts):
        raise BenchError(f"seeds={value!r} invalid; accepted: a count N >= 1 (seeds 0..N-1) or a list like seeds=0,1,2")
    seeds = list(range(int(parts[0]))) if len(parts) == 1 else [int(p) for p in parts]
    if not seeds:
        raise BenchError(f"seeds={value!r} invalid; accepted: a count N >= 1 (seeds 0..N-1) or a list like seeds=0,1,2")
    if any(a.startswith(("seed=", "+seed=", "++seed=")) for a in argv):
        raise BenchError("seeds= and seed= given together; use one (seeds=N runs seed=0..N-1)")
    rest = [a for a in argv if not a.startswith("seeds=")]
    multirun = any(a in ("-m", "--multirun") for a in rest)
    return [*([] if multirun else ["-m"]), *rest, f"seed={','.join(map(str, seeds))}"]


def check_launcher(overrides: list[str]) -> None:
    """``hydra/launcher=<name>`` must name a launcher config, and the parallel launcher's counts be positive integers
    (Hydra's own messages span many lines)."""
    for ov in overrides:
        key, _, value = ov.partition("=")
        if key == "hydra/launcher" and value not in LAUNCHERS + PLUGIN_LAUNCHERS:
            raise BenchError(f"unknown hydra/launcher {value!r}; accepted: {', '.join(LAUNCHERS)}")
        if key in ("hydra.launcher.n_jobs", "hydra.launcher.threads_per_job") and not (
            value.isdigit() and int(value) >= 1 or (key.endswith("threads_per_job") and value == "null")
        ):
            raise BenchError(f"{key}={value} invalid; accepted: an integer >= 1")


def sweep_params(overrides: list[str]) -> dict[str, str]:
    """The sweep an ``experiment=`` file names (``hydra.sweeper.params``); empty for a single cell."""
    from omegaconf import OmegaConf

    cfg = compose_config(overrides, with_hydra=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    return {str(k): str(v) for k, v in (params or {}).items()}


def help_text(verb: str, summary: str, examples: list[str]) -> str:
    """Help of a Hydra verb: summary, config groups and their options, examples."""
    usage = f"usage: python -m bench {verb} [-m] [group=option ...] [key=value ...]"
    lines = [usage, "", summary, "", "config groups:"]
    for g in GROUPS:
        opts = group_options(g)
        lines.append(f"  {g:<10} {', '.join(opts) if opts else '(none yet)'}")
    lines += ["", "examples:"] + [f"  {e}" for e in examples]
    lines += [
        "",
        "Any config value can be overridden as key=value (e.g. baseline.epochs=3, data.root=/path).",
        "Show the composed config: --cfg job. Hydra's own help: --hydra-help. Axes in detail: python -m bench list.",
    ]
    return "\n".join(lines)


def launch(verb: str, argv: list[str], task: Callable[[DictConfig], None], extra: list[str] | None = None) -> int:
    """Validate ``argv`` (one-line errors, nothing written), then hand it to a Hydra main running ``task``."""
    import hydra

    register_configs()
    try:
        argv = expand_seeds(argv)
        overrides = [a for a in argv if not a.startswith("-")]
        check_overrides(overrides)
        check_launcher(overrides)
        # single runs are composed and checked up front so that bad input writes nothing; multirun jobs
        # are checked one by one (a failing cell is recorded as failed and the sweep goes on)
        if not any(a in ("-m", "--multirun") or a.startswith("--") for a in argv):
            params = sweep_params(overrides + (extra or []))
            if params:  # an experiment that names a sweep: run it as one
                print(f"a sweep over {', '.join(params)}: running it as a multirun (-m)")
                argv = ["-m", *argv]
            else:
                compose_and_validate(overrides + (extra or []))
        else:  # a sweep: its cells are checked one by one, but where it writes must work for all of them
            check_output_dirs(compose_config([first_of_sweep(o) for o in overrides + (extra or [])]))
    except BenchError as e:
        return fail(str(e))
    sys.argv = [f"bench {verb}", *argv, *(extra or [])]
    main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else fail(e.code)
    return 0


def remove_if_empty_run_dir(path: str | Path, runs_dir: str | Path) -> None:
    """Remove a run dir that holds nothing but Hydra's own files (a cell that failed before any work), and the
    parent folders up to ``runs_dir`` that this left empty: bad input leaves nothing behind."""
    p = Path(path).resolve()
    if not p.is_dir():
        return
    leftovers = [c for c in p.iterdir() if c.name != ".hydra" and not c.name.endswith(".log")]
    if leftovers:
        return
    shutil.rmtree(p, ignore_errors=True)
    runs = Path(runs_dir).resolve()
    for parent in p.parents:
        if parent != runs and runs not in parent.parents:
            break
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break

