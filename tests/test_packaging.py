"""Packaging: the wheel holds the package, its Hydra configs (bench/conf), the shipped FP32 baselines and the
``hydra/launcher=parallel`` plugin, and nothing else; a copy installed from it runs from any directory.

Slow (builds a wheel, makes a venv, runs three cells; about a minute on two cores, no GPU, no network). The wheel is
built with ``pip wheel . --no-deps --no-build-isolation`` from a copy of the working tree (an in-tree build would
write build/ and *.egg-info into the checkout, and setuptools' build/lib keeps files deleted since). It is installed
with ``--no-deps --no-index`` into a fresh venv that sees the dependencies of this interpreter through a ``.pth``
file listing its site-packages as plain paths: Python does not process the ``.pth`` files of a folder added that way,
so the editable install of this checkout (a finder that maps ``bench`` to the repository) stays out. The commands run
in an empty directory with PYTHONPATH and BENCH_* unset, and the test checks that ``bench`` comes from the venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {"academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"}
# what the build copy leaves out: local state, caches and build outputs of the checkout
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                              ".ruff_cache", ".cache", "outputs", "multirun")
SMOKE = ["algo=ptq", "data=synthetic", "arch=tiny", "debug=smoke", "progress=false"]

# run by the installed interpreter: where everything comes from, the shipped files' digests, the launchers' targets
PROBE = r"""
import json, sys
import bench, hydra_plugins.bench_launcher as launcher
from hydra import compose, initialize_config_dir
from bench.baselines import file_sha256, shipped_dir, shipped_manifest
from bench.config import CONF_DIR, register_configs
from bench.results import git_sha

register_configs()
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    targets = {name: compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
               .hydra.launcher._target_ for name in ("local", "parallel", "slurm")}
entries = shipped_manifest()["baselines"]
print(json.dumps({
    "bench": bench.__file__, "launcher": launcher.__file__, "conf": str(CONF_DIR), "shipped": str(shipped_dir()),
    "sys_path": sys.path, "meta_path": [repr(f) for f in sys.meta_path], "git_sha": git_sha(), "targets": targets,
    "shipped_files": len(entries),
    "corrupt": [e["file"] for e in entries if file_sha256(shipped_dir() / e["file"]) != e["sha256"]],
}))
"""


@dataclass
class Installed:
    """The built wheel's file list and a venv with the wheel installed; ``work`` is an empty working directory."""

    src: Path
    wheel_names: list[str]
    python: Path
    bin: Path
    site: Path
    work: Path
    cache: Path
    env: dict[str, str]


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; fail with its stderr when it fails. On timeout its whole process group is killed (the parallel
    launcher's cell processes hold the output pipes)."""
    with subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, cmd))}")
    if p.returncode != 0:
        pytest.fail(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _dependency_dirs() -> list[str]:
    """The site-packages folders this interpreter imports the dependencies (torch, hydra, ...) from."""
    dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir() and Path(d).resolve() != ROOT]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel from a copy of the working tree and install it into a fresh venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist, venv, work, cache = (tmp / n for n in ("src", "dist", "venv", "work", "cache"))
    shutil.copytree(ROOT, src, ignore=SKIP)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCH_"))}
    env["BENCH_CACHE"] = str(cache)

    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist], cwd=src, env=env)
    (wheel,) = dist.glob("bench-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()

    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=work, env=env).stdout.strip())
    (purelib / "_bench_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    # --ignore-installed: the editable bench in the dependencies' site-packages is neither reused nor uninstalled
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel],
         cwd=work, env=env)
    return Installed(src, names, python, venv / "bin", purelib, work, cache, env)


def _files(root: Path, pattern: str) -> set[str]:
    """Paths (relative to ``root``, POSIX) of the files matching ``pattern``, caches left out."""
    return {p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_holds_the_package_configs_baselines_and_plugin_only(installed: Installed) -> None:
    names = set(installed.wheel_names)
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    conf = _files(installed.src, "bench/conf/**/*.yaml")
    assert {"bench/conf/config.yaml", "bench/conf/hydra/launcher/local.yaml", "bench/conf/hydra/launcher/slurm.yaml",
            "bench/conf/experiment/table7_hw.yaml"} <= conf
    assert {f"bench/conf/hw/{p}.yaml" for p in PROFILES} <= conf
    shipped = _files(installed.src, "bench/shipped/*/*.pt") | {"bench/shipped/manifest.json"}
    assert len(shipped) > 1
    site = _files(installed.src, "bench/site/templates/*.html") | _files(installed.src, "bench/site/static/*")
    assert {"bench/site/templates/table.html", "bench/site/static/site.js"} <= site  # bench site's page templates
    code = _files(installed.src, "bench/**/*.py") | _files(installed.src, "hydra_plugins/**/*.py")
    assert "hydra_plugins/bench_launcher/parallel_launcher.py" in code
    code |= _files(installed.src, "bench/**/*.cpp")  # the fused LSQ kernels' source, built on first use
    assert "bench/quant/lsq_kernels.cpp" in code
    # exactly these (and the site's templates and static files): no tests, scripts, benchmarks, results; no
    # hydra_plugins/__init__.py (a namespace package shared with the other Hydra plugins, hydra-submitit-launcher's)
    extra, missing = names - dist_info - code - conf - shipped - site, (code | conf | shipped | site) - names
    assert not extra and not missing, f"in the wheel but not expected: {sorted(extra)}; missing: {sorted(missing)}"
    assert "hydra_plugins/__init__.py" not in names


def test_installed_copy_is_the_one_that_runs(installed: Installed) -> None:
    probe = json.loads(_run([installed.python, "-c", PROBE], cwd=installed.work, env=installed.env).stdout)
    site_dir = installed.site.resolve()
    for key in ("bench", "launcher", "conf", "shipped"):
        path = Path(probe[key]).resolve()
        assert path.is_relative_to(site_dir), f"{key} from {path}, not from the installed copy in {site_dir}"
        assert not path.is_relative_to(ROOT)
    assert str(ROOT) not in {str(Path(p).resolve()) for p in probe["sys_path"] if p}
    assert not [f for f in probe["meta_path"] if "editable" in f.lower()], probe["meta_path"]
    assert probe["git_sha"] == "unknown"  # not a git checkout of this project
    assert probe["shipped_files"] >= 1 and probe["corrupt"] == []
    targets = probe["targets"]
    assert targets["local"].endswith("BasicLauncher") and targets["parallel"].endswith("ParallelLauncher")
    assert targets["slurm"].endswith("SlurmLauncher")


def test_installed_bench_lists_the_hardware_profiles(installed: Installed) -> None:
    out = _run([installed.bin / "bench", "list", "hw"], cwd=installed.work, env=installed.env).stdout
    listed = set(re.findall(r"^\s+(\w+)\s", out, re.M))
    assert PROFILES <= listed, out
    assert listed == {p.stem for p in (installed.src / "bench/conf/hw").glob("*.yaml")}, out


def _records(runs: Path) -> list[dict]:
    """The result records written under ``runs``."""
    return [json.loads(p.read_text()) for p in sorted(runs.rglob("result.json"))]


def test_installed_bench_runs_a_smoke_cell(installed: Installed) -> None:
    runs = installed.work.parent / "runs_single"
    _run([installed.python, "-m", "bench", "run", *SMOKE, f"runs_dir={runs}", f"cache_dir={installed.cache}"],
         cwd=installed.work, env=installed.env)
    (rec,) = _records(runs)
    assert rec["status"] == "ok" and (rec["algo"], rec["arch"], rec["data"]) == ("ptq", "tiny", "synthetic")
    assert rec["git_sha"] == "unknown"


def test_installed_parallel_launcher_runs_a_sweep(installed: Installed) -> None:
    runs = installed.work.parent / "runs_sweep"
    _run([installed.python, "-m", "bench", "run", "-m", *SMOKE, "hydra/launcher=parallel", "seed=0,1",
          f"runs_dir={runs}", f"cache_dir={installed.cache}"], cwd=installed.work, env=installed.env)
    recs = _records(runs)
    assert sorted(r["seed"] for r in recs) == [0, 1]
    assert all(r["status"] == "ok" for r in recs)
    assert not any(installed.work.iterdir())  # nothing written into the working directory


def test_installed_bench_builds_a_site(installed: Installed) -> None:
    # the site's templates and static files come from the installed package, not from a checkout
    runs, results, site = (installed.work.parent / n for n in ("runs_site", "results_site", "site_out"))
    _run([installed.python, "-m", "bench", "run", *SMOKE, f"runs_dir={runs}", f"cache_dir={installed.cache}"],
         cwd=installed.work, env=installed.env)
    _run([installed.python, "-m", "bench", "aggregate", f"runs={runs}", f"out={results}", "plots=false"],
         cwd=installed.work, env=installed.env)
    out = _run([installed.python, "-m", "bench", "site", f"results={results}", f"out={site}"], cwd=installed.work,
               env=installed.env).stdout
    assert re.search(r", 1 cell pages", out), out  # the one record
    assert (site / "index.html").is_file() and (site / "assets" / "site.js").is_file()
    assert any((site / "cells").glob("*.html"))
