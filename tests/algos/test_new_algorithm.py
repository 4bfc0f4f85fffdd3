"""Adding an algorithm is one module plus one YAML: a toy QAT algorithm dropped into a copy of the package is picked
up by the registry (``@register_algo``, no import list), composes as ``algo=toyqat``, is listed, and is run by the
generic QAT tests (which iterate the registries) with no other edit. Copies the package and runs pytest in a
subprocess: marked slow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

TOY_MODULE = '''"""``algo=toyqat``: a toy QAT algorithm (LSQ's quantizers and gradients under another name)."""

from bench.algos.base import register_algo
from bench.algos.lsq import LSQ


@register_algo(label="Toy", order=990)
class ToyQAT(LSQ):
    name = "toyqat"
    description = "a toy: LSQ under another name"
'''

TOY_YAML = """# a toy QAT algorithm: LSQ under another name
name: toyqat
init: paper
params:
  qparam_weight_decay: 0.0
  kernel: paper
"""


def test_a_toy_qat_algorithm_is_run_by_the_generic_tests(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for part in ("bench", "tests", "results", "pyproject.toml"):  # results/reference: read by profile tests
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tree / part)
    # the whole change: two new files
    (tree / "bench" / "algos" / "toyqat.py").write_text(TOY_MODULE)
    (tree / "bench" / "conf" / "algo" / "toyqat.yaml").write_text(TOY_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCH_"))}
    env |= {"PYTHONPATH": str(tree), "BENCH_CACHE": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
                              timeout=1200)

    listed = run("-m", "bench", "list", "algo")
    assert listed.returncode == 0 and "toyqat" in listed.stdout and "a toy: LSQ under another name" in listed.stdout
    where = run("-c", "import bench; print(bench.__file__)")
    assert where.stdout.strip().startswith(str(tree)), where.stdout  # the copy, not the checkout
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/algos/test_qat.py", "-k", "toyqat", "-rA")
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    passed = [line for line in tests.stdout.splitlines() if line.startswith("PASSED") and "toyqat" in line]
    # every profile (it is LSQ: it runs on all six) in the end-to-end test, and the per-algorithm tests
    e2e = [line for line in passed if "test_every_algorithm_on_every_deployable_profile" in line]
    assert len(e2e) == 6, passed
    assert len(passed) >= 9, passed
