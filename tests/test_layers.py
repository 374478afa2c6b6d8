"""The package's import graph: no cycles (function-local imports counted) and the layers'
direction of DESIGN.md (data, models, training know nothing of Ray; the row types and
annotations of the data layer import nothing else of it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "study"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (inside functions
    too), with `from a import b` counted as both a and a.b."""
    mod, is_pkg = _module(path), path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = node.module or ""
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            out.add(stem)
            out.update(f"{stem}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets = set()
        for name in _imports(path):
            parts = name.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a module
                cand = ".".join(parts[:i])
                if cand in files:
                    if cand != mod:
                        targets.add(cand)
                    break
        if path.name == "__init__.py":  # a package importing its own modules is its face
            targets = {t for t in targets if not t.startswith(mod + ".")}
        graph[mod] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walker_counts_local_imports_and_finds_cycles():
    # runner imports the training units' execution inside functions
    assert "study.sweep.execute" in _graph()["study.sweep.runner"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_study():
    assert _cycles(_graph()) == []


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


@pytest.mark.parametrize("leaf", ["study.data.records", "study.data.annotations"])
def test_row_types_import_nothing_else_of_the_data_layer(leaf):
    assert not {m for m in _reaches(_graph(), leaf) if m.startswith("study.data")}


@pytest.mark.parametrize("layer", ["study.data", "study.models", "study.training"])
def test_lower_layers_never_import_ray_or_the_sweep(layer):
    for path in (PACKAGE / layer.split(".")[1]).rglob("*.py"):
        names = _imports(path)
        assert not {n for n in names if n == "ray" or n.startswith("ray.")}, path
        assert not {n for n in names if n.startswith("study.sweep")}, path


def test_the_analysis_layer_reads_the_store_only():
    """analysis/ makes a report on a laptop from a copy of the store: no torch, no Ray, no
    training or sweep layer (the store, the schema and the errors are all it needs of study),
    and no import cycle among its modules (function-local imports counted)."""
    forbidden = ("torch", "ray", "study.training", "study.sweep", "study.models")
    files = {
        _module(p): p for p in (ROOT / "analysis").rglob("*.py") if "__pycache__" not in p.parts
    }
    graph = {}
    for mod, path in files.items():
        names = _imports(path)
        bad = {n for n in names for f in forbidden if n == f or n.startswith(f + ".")}
        assert not bad, (path, bad)
        graph[mod] = {
            t for t in files if t != mod and t in names and not (mod == "analysis" and t != mod)
        }
    assert _cycles(graph) == []
