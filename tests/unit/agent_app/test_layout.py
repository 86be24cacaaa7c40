"""The app's modules import one way: no import cycle, lazy (function-level) imports included.

An entrypoint (``python -m agent_app.api`` / ``agent_app.worker``) sits on top; nothing in
the package imports it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import agent_app
from agent_app.contract import API_COMMAND, WORKER_COMMAND

PACKAGE = Path(agent_app.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every agent_app module and the agent_app modules it imports, anywhere in its body."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    assert cycle(imports()) is None, " -> ".join(cycle(imports()) or [])


def test_nothing_imports_the_entrypoints() -> None:
    entrypoints = {API_COMMAND[-1], WORKER_COMMAND[-1]}
    assert entrypoints == {"agent_app.api", "agent_app.worker"}
    importers = {name: deps & entrypoints for name, deps in imports().items() if deps & entrypoints}
    assert importers == {}
