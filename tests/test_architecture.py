"""The shape of the code that a newcomer relies on: no import cycles, a worker that loads no HTTP
API, web page or bot code, modules small enough to read, and units of work opened only where a
use case, the worker loop or the composition root owns them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mlservice"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports, counting every import statement:
    top-level, under ``TYPE_CHECKING`` and inside functions (each is one a reader follows)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(filter(None, (resolve(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found = target if target in modules else resolve(base)
                    if found:
                        deps.add(found)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_nothing_imports_the_app_but_entry_points() -> None:
    importers = sorted(m for m, deps in import_graph().items() if "mlservice.app" in deps)
    assert importers == ["mlservice.cli"]


def test_a_worker_loads_no_http_api_web_or_bot_code() -> None:
    # What `mlservice worker` imports before it runs: the CLI, the worker, the composition root
    # with every installed predictor, the worker's health responder.
    script = (
        "import json, sys\n"
        "import mlservice.cli, mlservice.worker\n"
        "from mlservice.predictors.registry import discover_predictors\n"
        "discover_predictors()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mlservice'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mlservice.components" in loaded
    assert "mlservice.jobs.executor" in loaded
    foreign = [m for m in loaded if m.split(".")[1:2] in (["web"], ["replicate"], ["bot"])]
    assert foreign == []
    assert "mlservice.app" not in loaded


# Modules still over the limit, each capped at its size when the limit came in: they may shrink
# (then lower or drop the entry), never grow. Every other module stays within MAX_LINES.
OVERSIZED: dict[str, int] = {}


@pytest.mark.parametrize("limit", [MAX_LINES])
def test_modules_stay_small(limit: int) -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    over = {m: n for m, n in sizes.items() if n > OVERSIZED.get(m, limit)}
    assert over == {}, f"modules over {limit} lines: {over}"
    stale = {m: cap for m, cap in OVERSIZED.items() if sizes.get(m, 0) <= limit}
    assert stale == {}, f"within the limit now, drop from OVERSIZED: {stale}"


# Where a unit of work may begin (a session, or a statement of its own on a driver connection):
# the use cases, the composition root, the request's read session that authenticates it (API and
# web pages), the worker's loop and its background tasks, the database file store's own writes
# when it is given no transaction, and the queue caps' periodic read of the queue depths.
UNIT_OF_WORK_OWNERS = {
    "mlservice.components",
    "mlservice.deps",
    "mlservice.web.deps",
    "mlservice.jobs.executor",
    "mlservice.jobs.workers",
    # the executor's progress writer and its look at the jobs it runs
    "mlservice.jobs.live",
    "mlservice.jobs.dispatch",
    "mlservice.jobs.backpressure",
    "mlservice.webhooks.deliverer",
    "mlservice.storage.database",
}


def _opens_unit_of_work(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"session", "driver"}
            and isinstance(node.func.value, ast.Attribute | ast.Name)
            and (node.func.value.attr if isinstance(node.func.value, ast.Attribute) else node.func.value.id)
            in {"db", "database"}
        ):
            return True
    return False


def test_units_of_work_are_opened_only_by_their_owners() -> None:
    openers = {m for m, p in _modules().items() if _opens_unit_of_work(p)}
    strays = sorted(m for m in openers - UNIT_OF_WORK_OWNERS if not m.endswith(".usecases"))
    assert strays == [], f"units of work opened outside use cases and the worker loop: {strays}"
    assert "mlservice.jobs.usecases" in openers
