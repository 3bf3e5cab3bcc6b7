"""Imports run one way: no module of the package imports, even lazily inside a function, anything that imports it
back, and the layers (bottom → data → models → evaluation → entry points; report beside them) only look down."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

PACKAGE = REPO / "hybrid_retrieval"

#: Modules every layer may use: they import nothing of the package but each other.
BOTTOM = {
    "hybrid_retrieval.errors",
    "hybrid_retrieval.paths",
    "hybrid_retrieval.padding",
    "hybrid_retrieval.offline_model",
    "hybrid_retrieval.plots",
    "hybrid_retrieval.atomic",
    "hybrid_retrieval.cache_entry",
    "hybrid_retrieval.cli",
}
#: Which layers each layer may import (its own always).
ALLOWED = {
    "bottom": set(),
    "data": {"bottom"},
    "models": {"bottom", "data"},
    "evaluation": {"bottom", "data", "models"},
    "report": {"bottom"},
    "entry": {"bottom", "data", "models", "evaluation", "report"},
}


def _modules() -> dict[str, object]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _layer(module: str) -> str:
    if module in BOTTOM:
        return "bottom"
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ALLOWED else "entry"


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports anywhere in its source (top level or inside functions)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("hybrid_retrieval") else None
                if target and target != module:
                    graph[module].add(target)
                    # importing a.b.c runs a/b/__init__ first (an edge, unless the importer lives in a.b itself)
                    parts = target.split(".")
                    parents = (".".join(parts[:i]) for i in range(2, len(parts)))
                    graph[module].update(p for p in parents if p in mods and not module.startswith(p + "."))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_and_an_upward_arrow():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("hybrid_retrieval.data.sampler") == "data" and _layer("hybrid_retrieval.train") == "entry"
    assert _layer("hybrid_retrieval.padding") == "bottom" and _layer("hybrid_retrieval.report.stats") == "report"


def test_the_package_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["hybrid_retrieval.train"]  # the walk found the package and its imports
    assert cycles(graph) == []


def test_layers_only_import_downward():
    upward = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in targets
        if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)]
    ]
    assert upward == []


def test_every_remaining_lazy_import_says_why():
    bare = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "noqa: PLC0415" in line and not re.search(r"noqa: PLC0415 - \S", line):
                bare.append(f"{path.relative_to(REPO)}:{number}")
    assert bare == []
