"""Fixtures for end-to-end tests in the network lab (contrib/netlab; see world.py).

Run as root: `python3 -m pytest tests/lab -s` (-s prints the measured figures). Without root,
network namespaces or /dev/net/tun the tests skip, and fail under CI=true. Each test builds its
own lab (~1 s) and tears it down, with every process stopped by PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contrib.netlab import Lab
from tests.lab.world import World, require_lab, scenario

LAB_DIR = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: end-to-end tests in the netlab network lab (root)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here is end to end (`-m "not e2e"` leaves it out) and in the lab."""
    for item in items:
        if LAB_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A fresh lab with the exit, both relays and both sshds running; all stopped after."""
    require_lab()
    with Lab(scenario()) as lab:
        world = World(lab, tmp_path)
        try:
            yield world.start()
        finally:
            world.close()
