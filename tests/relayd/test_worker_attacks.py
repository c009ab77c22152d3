"""The exit's attack tests (tests/e2e/test_attacks.py) again with session workers on: every
relayd they start runs `--session-processes 4`, so each attacked session lives in a worker and
each attack goes through the dispatcher's hand-over (replays, raced ACKs, reflection, RESETs
after a restart, the replay journal, table limits, SIGHUP).

The tests are the same functions (imported, not copied); only `start_relay` is wrapped. Left
out: the memory bounds of a never-reading client (they read the RSS of relayd's PID, which is
the dispatcher's, not the worker's: they would pass without measuring anything), the client of
a crashed exit (with workers its session ends at once by the worker's CLOSE, not by a RESET
from the restarted exit: tests/relayd/test_workers.py has that case) and the tests that start
relayd without `start_relay`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_attacks as attacks
from tests.e2e.test_attacks import echo, tap_session
from tests.relayd.test_workers import ready_relays, served_by_a_worker, spare_ready
from tests.support.relay import Relay, start_relay

pytestmark = pytest.mark.timeout(60)

WORKERS = ("--session-processes", "4")


def _with_workers(workdir: Path, allow: Sequence[str], **kwargs: Any) -> Relay:
    kwargs["extra_args"] = [*WORKERS, *kwargs.get("extra_args", ())]
    relay = start_relay(workdir, allow, **kwargs)
    spare_ready(relay)
    return relay


@pytest.fixture(autouse=True)
def _workers_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attacks, "start_relay", _with_workers)


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    yield from ready_relays(tmp_path, WORKERS, served_by_a_worker)


__all__ = ["echo", "tap_session"]  # fixtures the imported tests use

test_replayed_acks_and_data_from_another_address_get_nothing = (
    attacks.test_replayed_acks_and_data_from_another_address_get_nothing
)
test_raced_fresh_ack_is_challenged_never_followed = (
    attacks.test_raced_fresh_ack_is_challenged_never_followed
)
test_replayed_hello_over_udp_and_tcp_never_takes_a_live_path = (
    attacks.test_replayed_hello_over_udp_and_tcp_never_takes_a_live_path
)
test_replayed_ack_on_a_new_tcp_connection_binds_nothing = (
    attacks.test_replayed_ack_on_a_new_tcp_connection_binds_nothing
)
test_key_holder_cannot_reflect_to_a_third_address = (
    attacks.test_key_holder_cannot_reflect_to_a_third_address
)
test_replayed_hello_after_restart_opens_nothing = (
    attacks.test_replayed_hello_after_restart_opens_nothing
)
test_table_exhaustion_from_one_source_spares_the_others = (
    attacks.test_table_exhaustion_from_one_source_spares_the_others
)
test_a_gone_tcp_client_is_freed_early = attacks.test_a_gone_tcp_client_is_freed_early
test_sighup_reloads_config_and_keeps_sessions = (
    attacks.test_sighup_reloads_config_and_keeps_sessions
)
