"""The protocol core stays sans-IO: no sockets, no event loop, no threads, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dupsession.core

FORBIDDEN = {"asyncio", "socket", "time", "select", "selectors", "threading"}
CORE = Path(dupsession.core.__file__).parent


def forbidden_imports(source: str) -> list[str]:
    """Every import in `source` of a forbidden module or of anything inside one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found.extend(n for n in names if n.split(".")[0] in FORBIDDEN)
    return found


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_core_has_modules() -> None:
    names = {p.name for p in core_modules()}
    assert {"wire.py", "handshake.py", "session.py", "sender.py", "receiver.py"} <= names


@pytest.mark.parametrize("module", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_io(module: Path) -> None:
    assert forbidden_imports(module.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os, socket",
        "from time import monotonic",
        "import selectors as sel",
        "from asyncio.events import get_event_loop",
        "def f():\n    import threading",
        "if True:\n    from select import poll",
        "x = __import__('time')",
    ],
)
def test_the_checker_catches_io_imports(source: str) -> None:
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source", ["import os", "from dupsession.core import wire", "import timeit", "import blake3"]
)
def test_the_checker_allows_the_rest(source: str) -> None:
    assert forbidden_imports(source) == []
