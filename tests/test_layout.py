"""The import graph of the project's own packages: no circle, and the runtime knows no reviewer.

Every top-level package of the project is read (not only the ones that existed when the
rule was written): an import inside a function counts as much as one at the top, since a
circle hidden in a function is still a circle. Rules:

- no two modules import each other, directly or around a circle;
- the runtime (runs/, but for its pages: views, api, selectors, forms, urls, admin) never
  imports the reviews app or an eval app: it opens a request through runs.kernel.approvals, and
  reads a decision from the action it decided;
- the domains below the reviewers (agents/, policy/, audit/, releases/, and agentdesk/
  but for the shell that wires the apps together) never import the reviews app either;
- nothing outside examples/ imports the example: an agent is named in settings.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_PROJECT = {"tests", "bench", "docs", "templates", "static", "node_modules"}
SKIP_PARTS = {"migrations", "__pycache__"}
RUNTIME_PAGES = {"views", "api", "selectors", "forms", "urls", "admin"}
HUMAN_SIDE = {"reviews", "evals"}
BELOW_REVIEWS = {"agents", "policy", "audit", "releases", "agentdesk"}
# The project shell wires the apps together (urls, asgi, the pages' roles and admin).
SHELL = {"agentdesk.urls", "agentdesk.asgi", "agentdesk.views", "agentdesk.roles"}


def _packages() -> list[Path]:
    return sorted(
        path
        for path in ROOT.iterdir()
        if path.is_dir()
        and (path / "__init__.py").exists()
        and path.name not in NOT_PROJECT
        and not path.name.startswith(".")
    )


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    files = {
        _module(path): path
        for package in _packages()
        for path in package.rglob("*.py")
        if not SKIP_PARTS & set(path.relative_to(ROOT).parts)
    }
    return {
        module: {name for name in _imports(path, module) if name in files and name != module}
        for module, path in files.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_the_graph_reads_every_package(graph: dict[str, set[str]]) -> None:
    tops = {module.split(".")[0] for module in graph}
    assert {"agentdesk", "agents", "audit", "policy", "runs", "reviews", "examples"} <= tops
    assert "runs.kernel.stepping" in graph
    assert "runs.kernel.stepping" in graph["runs.kernel.tool_step"]  # imports are seen


def test_no_module_imports_itself_around_a_circle(graph: dict[str, set[str]]) -> None:
    assert _cycles(graph) == []


def test_the_runtime_never_imports_the_reviewers_side(graph: dict[str, set[str]]) -> None:
    edges = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "runs" and module.split(".")[-1] not in RUNTIME_PAGES
        for target in targets
        if target.split(".")[0] in HUMAN_SIDE
    ]
    assert edges == []


def test_the_domains_below_the_reviewers_never_import_them(graph: dict[str, set[str]]) -> None:
    edges = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] in BELOW_REVIEWS
        and module not in SHELL
        and not module.startswith("agentdesk.management")
        for target in targets
        if target.split(".")[0] in HUMAN_SIDE
    ]
    assert edges == []


def test_only_the_example_imports_the_example(graph: dict[str, set[str]]) -> None:
    edges = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] != "examples"
        for target in targets
        if target.split(".")[0] == "examples"
    ]
    assert edges == []


def test_a_circle_is_found_when_there_is_one() -> None:
    """The detector itself: a made-up graph with one circle and one chain."""
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(made_up) == [["a", "b", "c"]]
