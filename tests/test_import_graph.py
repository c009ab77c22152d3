"""Package boundaries hold: no import cycles, relayd builds on dupsession and never the reverse.

The graph is read from the source (tests/support/imports.py), imports inside functions
included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast

from tests.support.imports import PACKAGES, ROOT, cycles, graph, imported_names

EDGES = graph()


def _importers(target_prefix: str) -> dict[str, set[str]]:
    return {
        module: {t for t in targets if t == target_prefix or t.startswith(target_prefix + ".")}
        for module, targets in EDGES.items()
        if any(t == target_prefix or t.startswith(target_prefix + ".") for t in targets)
    }


def test_the_graph_covers_both_packages() -> None:
    assert {"dupsession.core.session", "dupsession.aio.driver", "relayd.server"} <= set(EDGES)
    assert "dupsession.core.session" in EDGES["relayd.server"]


def test_no_import_cycles() -> None:
    assert cycles(EDGES) == []


def test_dupsession_never_imports_relayd() -> None:
    offenders = {m: t for m, t in _importers("relayd").items() if m.startswith("dupsession")}
    assert offenders == {}


def test_core_imports_only_core() -> None:
    offenders = {
        module: {t for t in targets if not t.startswith("dupsession.core")}
        for module, targets in EDGES.items()
        if module.startswith("dupsession.core")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_testing_namespace_stays_out_of_the_product() -> None:
    """The impairment shim ships for the demo and tests; no session path depends on it."""
    users = {m for m in _importers("dupsession.testing") if not m.startswith("dupsession.testing")}
    assert users == {"relayd.demo"}


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_and_relative_imports_count() -> None:
    source = "def f():\n    from . import sibling\n    import dupsession.core.wire\n"
    names = imported_names(source, "dupsession.aio.udp")
    assert {"dupsession.aio.sibling", "dupsession.core.wire"} <= names


def _driver_session_uses(source: str) -> list[int]:
    """Lines that reach through a driver to its session (`driver.session`, `x.driver.session`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "session":
            inner = node.value
            name = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")
            if name == "driver":
                lines.append(node.lineno)
    return lines


def test_endpoints_talk_to_the_session_only_through_the_driver() -> None:
    driver = ROOT / "dupsession" / "aio" / "driver.py"
    offenders = {
        str(path.relative_to(ROOT)): found
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != driver and (found := _driver_session_uses(path.read_text()))
    }
    assert offenders == {}


def test_the_driver_check_sees_reach_through() -> None:
    assert _driver_session_uses("self.client.driver.session.abort()") == [1]
    assert _driver_session_uses("driver.session.state") == [1]
    assert _driver_session_uses("driver.abort(1, 'x')\nsession.state") == []
