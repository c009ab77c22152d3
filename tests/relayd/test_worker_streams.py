"""Bytes through a worker's session arrive once and whole: tests/e2e/test_direct.py's
half-close test (3 MB up, its digest back; UDP+TCP, UDP alone, TCP alone) again with
`--session-processes 2`. On a TCP path the dispatcher read the first frame and passed the
connection on with what it had read (relayd/server.py `_hand_over`): a byte lost or read twice
there breaks the digest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import test_direct as direct
from tests.relayd.test_workers import served_by_a_worker
from tests.support.relay import Relay, started_relays

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    yield from started_relays(tmp_path, ("--session-processes", "2"), served_by_a_worker)


test_half_close_reply_after_eof = direct.test_half_close_reply_after_eof
