"""Whatever the network does, each direction's delivered stream is the sent stream, exactly.

Hypothesis draws the network (1-4 paths, each direction with its own delay, jitter, loss up to
60 %, reordering, duplication, corruption, short outages and sometimes a rate limit with a
bounded queue, sometimes every path down at once within the grace period), the byte streams
both ways (empty, tiny, large, chunked, written over time) and the window settings; the
deterministic simulator runs the two real sessions.
The simulator itself checks the memory bounds after every step: unacked bytes within
`window_bytes`, held frames within `window_frames`, held bytes within the peer's window, and
the advertised window frozen while the consumer is paused.

Runs are derandomized (the same examples every run) and bounded to keep the file under a
minute on two cores; a failure prints the network, the streams and the simulator's seed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.events import StreamEnded
from dupsession.core.session import SessionConfig, SessionState
from tests.sim.network import PathSpec, simulate
from tests.support.strategies import (
    HORIZON,
    PROPERTY,
    Interval,
    assert_side_consistent,
    configs,
    describe,
    networks,
    pauses,
    streams,
)

# Passing runs take seconds; the generous limit leaves a failure time to shrink.
pytestmark = pytest.mark.timeout(900)


@PROPERTY
@given(
    paths=networks(),
    client_writes=streams,
    exit_writes=streams,
    client_config=configs,
    exit_config=configs,
    client_pauses=pauses,
    exit_pauses=pauses,
    seed=st.integers(0, 2**32 - 1),
)
def test_delivered_stream_is_the_sent_stream(
    paths: list[PathSpec],
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    client_config: SessionConfig,
    exit_config: SessionConfig,
    client_pauses: list[Interval],
    exit_pauses: list[Interval],
    seed: int,
) -> None:
    result = simulate(
        paths,
        seed,
        client_writes,
        exit_writes,
        until=HORIZON,
        client_config=client_config,
        exit_config=exit_config,
        client_pauses=client_pauses,
        exit_pauses=exit_pauses,
    )
    why = describe(result, paths)
    client, exit_ = result.client, result.exit
    # everything was written (backpressure never lost a byte) ...
    assert client.sent == b"".join(data for _, data in client_writes), why
    assert exit_.sent == b"".join(data for _, data in exit_writes), why
    # ... and arrived exactly once, in order, in each direction
    assert exit_.received == client.sent, why
    assert client.received == exit_.sent, why
    for side in (client, exit_):
        assert_side_consistent(side, why)
        assert side.events.count(StreamEnded()) == 1, why
        assert side.events.index(StreamEnded()) < len(side.events) - 1, why
        assert side.closed is not None and side.closed.code == wire.CloseCode.NORMAL, why
        assert side.state is SessionState.CLOSED, why
    # memory stayed bounded at every step (the simulator checks each step; this re-states it)
    assert client.max_unacked <= client_config.window_bytes, why
    assert exit_.max_unacked <= exit_config.window_bytes, why
    assert exit_.max_held <= client_config.window_bytes, why
    assert client.max_held <= exit_config.window_bytes, why
    assert exit_.max_held_frames < exit_config.window_frames, why
    assert client.max_held_frames < client_config.window_frames, why


@settings(PROPERTY, max_examples=200)
@given(
    paths=networks(permanent_outage_at=2.0),
    client_writes=streams,
    exit_writes=streams,
    grace=st.floats(0.5, 6.0),
    path_timeout=st.floats(0.3, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_path_down_past_grace_closes_both_with_timeout(
    paths: list[PathSpec],
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    grace: float,
    path_timeout: float,
    seed: int,
) -> None:
    cfg = SessionConfig(grace_period=grace, path_timeout=path_timeout, probe_interval=0.1)
    result = simulate(
        paths,
        seed,
        client_writes,
        exit_writes,
        until=HORIZON,
        client_config=cfg,
        exit_config=cfg,
        half_close=False,  # the sessions could otherwise finish NORMAL before the outage
    )
    why = describe(result, paths)
    timeout = max(path_timeout, 3 * cfg.probe_interval)
    reason = f"no path alive for {grace:.0f} s"
    by_peer = []
    for side, peer in ((result.client, result.exit), (result.exit, result.client)):
        # TIMEOUT on both ends; one end may hear it from the other if a direction still works
        assert side.closed is not None, why
        assert (side.closed.code, side.closed.reason) == (wire.CloseCode.TIMEOUT, reason), why
        by_peer.append(side.closed.by_peer)
        assert_side_consistent(side, why)
        assert peer.sent.startswith(side.received), why  # a prefix: nothing wrong, nothing twice
        # nothing is heard after the outage starts, so the session gives up on time
        assert side.closed_at is not None, why
        assert grace - 1e-6 <= side.closed_at <= 2.0 + timeout + grace + 1e-6, why
    assert by_peer != [True, True], why  # at least one end gave up on its own
