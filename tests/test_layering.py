"""Imports point down: every module of the project imports only from the layers below its own (or its own
package), and no group of modules imports each other in a cycle, counting imports inside functions too.

    core  <  config  <  features | training | serving  <  jobs  <  orchestration  <  dags

``features``, ``training`` and ``serving`` are one layer of pure parts that do not know each other.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [("core",), ("config",), ("features", "training", "serving"), ("jobs",), ("orchestration",), ("dags",)]
LAYER_OF = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> List[str]:
    """Every absolute import of the file (module-level and inside functions), as dotted names; for
    ``from a import b`` both ``a`` and ``a.b``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def project_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    files = {module_name(p): p for pkg in LAYER_OF for p in (root / pkg).rglob("*.py")}
    return {mod: {n for n in imports(path) if n in files and n != mod} for mod, path in files.items()}


def upward(graph: Dict[str, Set[str]]) -> List[str]:
    bad = []
    for mod, targets in graph.items():
        here = mod.split(".")[0]
        for t in targets:
            there = t.split(".")[0]
            if there != here and LAYER_OF[there] >= LAYER_OF[here]:
                bad.append(f"{mod} imports {t} ({there} is not below {here})")
    return sorted(bad)


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_from_a_layer_above_or_beside_its_own():
    assert upward(project_graph()) == []


def test_no_modules_import_each_other_in_a_cycle():
    assert cycles(project_graph()) == []


@pytest.fixture
def planted(tmp_path):
    """A tiny tree with one upward import (training -> jobs) and one cycle (jobs.a <-> jobs.b, inside a
    function)."""
    for pkg, files in {"core": {"errors": ""}, "training": {"model": "from jobs.a import x\n"},
                       "jobs": {"a": "from core.errors import E\nfrom jobs.b import y\n",
                                "b": "def f():\n    from jobs.a import x\n"}}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        for name, text in files.items():
            (tmp_path / pkg / f"{name}.py").write_text(text)
    return tmp_path


def test_the_checks_find_a_planted_upward_import_and_a_planted_cycle(planted, monkeypatch):
    monkeypatch.setattr("tests.test_layering.ROOT", planted)
    graph = project_graph(planted)
    assert upward(graph) == ["training.model imports jobs.a (jobs is not below training)"]
    assert cycles(graph) == [["jobs.a", "jobs.b"]]
