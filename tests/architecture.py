"""xfbench's import graph, read from the source (every import, module-level or inside a function; typing-only ones
under ``if TYPE_CHECKING:`` left out, since they never run), and the rules it must follow: no cycle, and every arrow
from a room to a room the layering allows (docs/architecture.md draws it).

Used by tests/test_architecture.py, on the package and on a copy of it with a planted cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

# A room is the longest prefix below that names a module; the facade is the package's own __init__.
ROOMS = {
    "xfbench.errors": "base", "xfbench.machine": "base", "xfbench.progress": "base", "xfbench._version": "base",
    "xfbench.tasks": "tasks",
    "xfbench.backends": "backends",
    "xfbench.compare.results": "results",
    "xfbench.compare.stats": "stats",
    "xfbench.compare.platforms": "platforms",
    "xfbench.compare.engine": "engine",
    "xfbench.compare": "orchestration",
    "xfbench.reports": "reports",
    "xfbench.cli": "cli",
    "xfbench.__main__": "cli",
    "xfbench": "facade",
}
# room -> the rooms it may import (besides itself)
ALLOWED = {
    "base": set(),
    "tasks": {"base"},
    "backends": {"base", "tasks"},
    "results": {"base"},
    "stats": {"base", "tasks", "results"},
    "platforms": {"base", "tasks", "results"},
    "engine": {"base", "tasks", "backends", "stats", "platforms"},
    "orchestration": {"base", "tasks", "backends", "results", "stats", "platforms", "engine"},
    "reports": {"base", "backends", "results", "stats"},
    "cli": {"base", "tasks", "backends", "results", "stats", "platforms", "engine", "orchestration", "reports",
            "facade"},
    "facade": {"base", "tasks", "backends", "results", "stats", "platforms", "engine", "orchestration", "reports"},
}


def room(module: str) -> str:
    for prefix in sorted(ROOMS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return ROOMS[prefix]
    raise KeyError(module)


def modules(root: Path, package: str = "xfbench") -> dict[str, Path]:
    """Every module of the package under ``root`` (the folder holding the package), by dotted name."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph(root: Path, package: str = "xfbench") -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import name`` counts the submodule ``pkg.name`` when
    there is one, else ``pkg`` itself)."""
    known = modules(root, package)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for target in targets:
                while target and target not in known:  # ``import a.b.c`` of a package: its deepest known module
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] == package:
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
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

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def arrows_up(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a room to a room it may not import, as ``a (room) -> b (room)``."""
    wrong = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            here, there = room(source), room(target)
            if here != there and there not in ALLOWED[here]:
                wrong.append(f"{source} ({here}) -> {target} ({there})")
    return wrong
