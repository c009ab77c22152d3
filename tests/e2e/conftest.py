"""Fixtures for end-to-end tests against a private OpenSSH server (see sshd.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.bulk import BULK_SIZE, write_random_file
from tests.support.proxycmd import ProxyProbe
from tests.support.relay import Relay, started_relays
from tests.support.shims import ShimThread
from tests.support.sshd import PrivateSshd, private_sshd
from tests.support.tmux import TmuxPane

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/e2e as `e2e`, so `-m "not e2e"` gives a fast run."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def sshd() -> Iterator[PrivateSshd]:
    """One private sshd shared by the whole run: starting one costs ~0.1 s, not nothing.

    A test that must stop or restart its server uses `private_sshd()` directly instead.
    """
    with private_sshd() as server:
        yield server


# -- dupsession/relayd end-to-end fixtures ----------------------------------------------------


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dupsession must not pick up a config file from the user running the tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """Start relayd processes with `relays(allow=[...], key=..., extra_args=...)`.

    Each is stopped by PID with SIGTERM at teardown, and must then exit 0 with a clean log
    (a test that stops one itself has already checked that).
    """
    yield from started_relays(tmp_path)


@pytest.fixture
def shims() -> Iterator[ShimThread]:
    """A background loop for impairment shims; every shim is closed at teardown."""
    with ShimThread() as thread:
        yield thread


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[Callable[..., ProxyProbe]]:
    """`probes(args)` -> an observed dupsession ProxyCommand; leftovers stopped by PID."""
    made: list[ProxyProbe] = []

    def make(args: Sequence[str]) -> ProxyProbe:
        probe = ProxyProbe(tmp_path / "probes", args, name=f"proxy{len(made)}")
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.cleanup()


@pytest.fixture(scope="session")
def bulk_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of BULK_SIZE random bytes and its sha256 hex digest."""
    path = tmp_path_factory.mktemp("bulk") / "random.bin"
    return path, write_random_file(path, BULK_SIZE)


@pytest.fixture
def pane_factory(tmp_path: Path) -> Iterator[Any]:
    """Start commands in tmux panes with `pane_factory(argv, env, size)`; closed at teardown."""
    panes: list[TmuxPane] = []

    def make(
        argv: Sequence[str], env: dict[str, str], size: tuple[int, int] = (220, 50)
    ) -> TmuxPane:
        pane = TmuxPane(tmp_path, argv, env, size)
        panes.append(pane)
        return pane

    yield make
    for pane in panes:
        pane.close()
