"""The import graph of the shipped packages, read from their source (never imported).

Every `import` counts, including those inside functions: a lazy import still makes one module
depend on another, and a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dupsession", "relayd")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_names(source: str, importer: str = "", is_package: bool = False) -> set[str]:
    """Every module name `source` imports (for `from X import y`: both X and X.y)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(importer, is_package, node)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def graph(packages: Iterable[str] = PACKAGES, root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (only those that exist)."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        found = imported_names(path.read_text(), name, path.name == "__init__.py")
        edges[name] = {m for m in found if m in files and m != name}
    return edges


def package_edges(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The edges between top-level packages and their first-level parts (dupsession.aio, ...)."""

    def group(module: str) -> str:
        return ".".join(module.split(".")[:2])

    return {
        (group(a), group(b))
        for a, targets in edges.items()
        for b in targets
        if group(a) != group(b)
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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
            visit(node)
    return found


if __name__ == "__main__":  # python3 -m tests.support.imports: the graph for ARCHITECTURE.md
    g = graph()
    for a, b in sorted(package_edges(g)):
        print(f"{a} -> {b}")
    print("cycles:", cycles(g) or "none")
