"""The project's import graph: no circle anywhere, and the runtime free of the reviews app.

Read statically from the source (every import counts, one inside a function too: a circle
hidden in a function is still a circle), the way the issue's import graph check reads it:

- no strongly connected component of more than one module;
- no module of the runtime (runs/, except its pages, which may show the humans' side)
  imports reviews/ or evals/; agentdesk/'s domain modules neither (only the shell that
  wires the apps together: urls, asgi, the project's views and roles).

Imports of examples/ from runs/ (runs/forms.py, runs/views.py) are the runtime-knows-no-
example work's (issue 14, item 4); once it lands, add "examples" to FORBIDDEN here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agentdesk", "runs", "reviews", "evals", "examples")
SKIP = ("migrations", "tests")
FORBIDDEN = ("reviews", "evals")
# The runtime's pages may read the humans' side; the kernel and the gateway may not.
RUNS_PAGES = ("views", "api", "selectors", "forms", "urls", "admin", "consumers", "routing")
# The project shell that wires the apps together.
AGENTDESK_SHELL = ("asgi", "urls", "views", "roles")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if any(part in SKIP for part in relative.parts):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def _forbidden(importer: str, imported: str) -> bool:
    package, leaf = importer.split(".")[0], importer.split(".")[-1]
    if imported.split(".")[0] not in FORBIDDEN:
        return False
    if package == "runs":
        return leaf not in RUNS_PAGES
    if package == "agentdesk":
        return leaf not in AGENTDESK_SHELL and not importer.startswith("agentdesk.management.")
    return False


def test_no_module_of_the_project_is_part_of_an_import_circle() -> None:
    assert _circles(_graph()) == []


def test_the_runtime_never_imports_the_reviews_app() -> None:
    graph = _graph()
    edges = sorted(f"{m} -> {n}" for m, targets in graph.items() for n in targets)
    assert [edge for edge in edges if _forbidden(*edge.split(" -> "))] == []


def test_the_check_sees_a_circle_and_a_forbidden_import() -> None:
    """The checks above can fail: a circle and a kernel import of reviews are caught."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _forbidden("runs.tool_step", "reviews.services")
    assert _forbidden("agentdesk.policy", "reviews.models")
    assert not _forbidden("runs.views", "reviews.models")
    assert not _forbidden("reviews.services", "runs.transitions")
