"""The import graph of recon's modules: no cycles, stages that never import each other, and only the CLI and the
evaluation harness above the pipeline. Read from the source (every import, those inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import recon

ROOT = Path(recon.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("recon", *path.relative_to(ROOT).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the recon modules it imports (``from recon.x import y`` counts as recon.x.y when that is a module)."""
    mods = modules()

    def owner(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "recon":
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else str(node.module)
                         for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "recon"]
            graph[mod].update(owner(n) for n in names if owner(n) != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_stages_never_import_each_other():
    graph = import_graph()
    stages = {m for m in graph if m.startswith("recon.stages.") and m != "recon.stages"}
    assert stages
    for stage in sorted(stages):
        assert not graph[stage] & stages, f"{stage} imports {sorted(graph[stage] & stages)}"


def test_only_the_cli_and_the_evaluation_harness_run_the_pipeline():
    graph = import_graph()
    callers = {m for m, deps in graph.items() if "recon.pipeline" in deps}
    assert callers <= {"recon.cli", "recon.eval.runner"}, sorted(callers)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
