"""Fixtures for end-to-end tests against a private OpenSSH server (see sshd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.sshd import PrivateSshd, private_sshd

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
