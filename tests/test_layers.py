"""The import graph of ``bench`` follows the layers of DESIGN.md: every import (module level or inside a function)
points down or sideways, there is no import cycle, and no module imports another package's private names."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bench"

# cli -> runner -> algos -> ptq, deploy -> quant -> baselines -> engine, models, data -> aggregate -> config ->
# registry, results -> errors. A module may import its own layer and the layers below.
LAYERS: list[tuple[str, float]] = [
    ("bench.__main__", 9), ("bench.cli", 9),
    ("bench.runner", 8), ("bench.validate", 8),
    ("bench.restore", 8),  # writes records back as the runner writes them (and describes them with its describe())
    ("bench.algos", 7),
    ("bench.ptq", 6), ("bench.deploy", 6),
    ("bench.quant", 5),
    ("bench.baselines", 4.5),
    ("bench.engine", 4), ("bench.models", 4), ("bench.data", 4),
    ("bench.site", 3.5),  # reads results folders and records, as the aggregator does (whose helpers it uses)
    ("bench.audit", 3.5),  # reads a results folder and the records its re-runs write (runs cells in subprocesses)
    ("bench.aggregate", 3),
    ("bench.config", 2),
    ("bench.registry", 1), ("bench.results", 1),
    ("bench.errors", 0), ("bench", 0),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    # the module a dotted import name lands in (``bench.quant.insert.prepare`` -> ``bench.quant.insert``)
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name) for every ``bench`` import anywhere in the module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.split(".")[0] == "bench"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "bench":
                out += [(mod, a.name) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for mod, attr in _imports(name, path):
            target = _resolve(f"{mod}.{attr}") if f"{mod}.{attr}" in MODULES else _resolve(mod)
            if target and target != name:
                edges[name].add(target)
        if path.name == "__init__.py" and "pkgutil" in path.read_text():  # a package importing all its modules
            edges[name] |= {m for m in MODULES if m.rpartition(".")[0] == name}
    return edges


def layer(name: str) -> float:
    """The layer of module ``name`` (the longest matching prefix of LAYERS)."""
    best = max((p for p, _ in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components; a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert all(layer(m) is not None for m in MODULES)
    assert {"bench.runner", "bench.quant.insert", "bench.aggregate.tables"} <= set(MODULES)


def test_no_import_points_up():
    up = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets if layer(b) > layer(a))
    assert up == [], "imports against the layers of DESIGN.md:\n" + "\n".join(up)


def test_no_import_cycle():
    edges = _graph()
    assert _cycles(edges) == []
    packages: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            pa, pb = ".".join(a.split(".")[:2]), ".".join(b.split(".")[:2])
            if pa != pb:
                packages[pa].add(pb)
    assert _cycles(packages) == []


def test_no_private_name_crosses_a_package():
    crossing = []
    for name, path in MODULES.items():
        for mod, attr in _imports(name, path):
            if attr.startswith("_") and mod.split(".")[:2] != name.split(".")[:2]:
                crossing.append(f"{name} imports {mod}.{attr}")
    assert crossing == []


def test_the_check_sees_upward_and_lazy_imports(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text("from bench.quant.spec import QuantSpec\n\ndef f():\n    from bench.runner import run\n"
                   "    from ..cli import run as r\n")
    found = {(_resolve(f"{m}.{a}") if f"{m}.{a}" in MODULES else _resolve(m)) for m, a in
             _imports("bench.quant.probe", src)}
    assert found == {"bench.quant.spec", "bench.runner", "bench.cli.run"}
    assert sorted(t for t in found if layer(t) > layer("bench.quant.probe")) == ["bench.cli.run", "bench.runner"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
