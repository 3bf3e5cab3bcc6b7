"""Imports run one way: no module of the package imports, even lazily inside a function, anything that imports it
back, and the layers — one folder each (docs/architecture.md) — only look down:

    common → data → models → evaluation → training → tasks → runs → commands (the top-level modules)

``report`` (reads job records) and ``st`` (the sentence-transformers integration) stand beside them. A task folder
(``tasks/text``, ``tasks/image_text``) never imports another task."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

PACKAGE = REPO / "hybrid_retrieval"

ORDER = ["common", "data", "models", "evaluation", "training", "tasks", "runs", "entry"]
#: Which layers each layer may import (its own always): every layer below it in ORDER.
ALLOWED = {layer: set(ORDER[:i]) for i, layer in enumerate(ORDER)}
ALLOWED["report"] = {"common"}
ALLOWED["st"] = {"common", "data", "models", "evaluation"}
ALLOWED["entry"] |= {"report", "st"}


def _modules() -> dict[str, object]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _layer(module: str) -> str:
    """The folder under hybrid_retrieval/ (``entry`` for the top-level command modules and the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ALLOWED else "entry"


def _task(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) >= 4 and parts[1] == "tasks" else None


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
    assert _layer("hybrid_retrieval.common.padding") == "common" and _layer("hybrid_retrieval.report.stats") == "report"
    assert _layer("hybrid_retrieval.tasks.text.model") == "tasks" and _task("hybrid_retrieval.tasks.text.model") == "text"
    assert "tasks" not in ALLOWED["training"] and "training" in ALLOWED["tasks"] and "runs" in ALLOWED["entry"]


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


def test_a_task_never_imports_another_task():
    across = [
        f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if _task(m) and _task(t) and _task(m) != _task(t)
    ]
    assert across == []


def test_no_module_sits_loose_beside_the_commands():
    """The package root holds only the commands a user runs (python -m hybrid_retrieval.<command>)."""
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert loose == ["evaluate", "export", "inspect_data", "search", "train"]


def test_every_remaining_lazy_import_says_why():
    bare = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "noqa: PLC0415" in line and not re.search(r"noqa: PLC0415 - \S", line):
                bare.append(f"{path.relative_to(REPO)}:{number}")
    assert bare == []
