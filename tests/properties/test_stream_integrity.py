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

import math
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.events import SessionClosed, StreamData, StreamEnded
from dupsession.core.session import SessionConfig, SessionState
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, SideResult, SimResult, simulate

# Passing runs take seconds; the generous limit leaves a failure time to shrink.
pytestmark = pytest.mark.timeout(900)

PROPERTY = settings(
    derandomize=True,
    deadline=None,
    max_examples=600,
    # no explain phase: it traces every line of a simulation, far too slow to be useful here
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Virtual seconds a run may take before "it never finished" is a failure.
HORIZON = 3600.0
#: Grace period for the integrity runs: longer than any outage drawn below.
GRACE = 40.0

Interval = tuple[float, float]


def intervals(max_start: float, max_length: float, max_count: int) -> st.SearchStrategy:
    one = st.tuples(
        st.floats(0, max_start, allow_nan=False), st.floats(0.05, max_length, allow_nan=False)
    ).map(lambda sl: (sl[0], sl[0] + sl[1]))
    return st.lists(one, max_size=max_count)


def link(datagram: bool, extra_outages: tuple[Interval, ...]) -> st.SearchStrategy[LinkSpec]:
    return st.builds(
        LinkSpec,
        delay=st.floats(0.0005, 0.2),
        jitter=st.floats(0, 0.05),
        loss=st.floats(0, 0.6),
        reorder=st.floats(0, 0.3),
        duplicate=st.floats(0, 0.3),
        corrupt=st.floats(0, 0.1),
        outages=intervals(6.0, 4.0, 2).map(lambda o: tuple(o) + extra_outages),
        datagram=st.just(datagram),
        bottleneck=st.one_of(
            st.none(),
            st.builds(Bottleneck, rate=st.floats(20_000, 2_000_000), queue=st.floats(0.005, 0.3)),
        ),
    )


@st.composite
def networks(draw: st.DrawFn, permanent_outage_at: float | None = None) -> list[PathSpec]:
    """1-4 paths; sometimes all down together for up to 10 s (or, if asked, forever)."""
    count = draw(st.integers(1, 4))
    common: tuple[Interval, ...] = ()
    if permanent_outage_at is not None:
        common = ((permanent_outage_at, math.inf),)
    elif draw(st.booleans()):
        start = draw(st.floats(0, 5))
        common = ((start, start + draw(st.floats(0.1, 10.0))),)
    paths = []
    for _ in range(count):
        datagram = draw(st.booleans()) or draw(st.booleans())  # datagram paths 3 times in 4
        paths.append(PathSpec(draw(link(datagram, common)), draw(link(datagram, common))))
    return paths


def blob(size_and_seed: tuple[int, int]) -> bytes:
    size, seed = size_and_seed
    return random.Random(seed).randbytes(size)


#: One write: a few literal bytes, or a larger seeded block (cheap to draw and to shrink).
chunk = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.integers(0, 40_000), st.integers(0, 2**16)).map(blob),
)
#: A stream: writes, each not before its own time (s), in order.
streams = st.lists(st.tuples(st.floats(0, 4), chunk), max_size=6)

configs = st.builds(
    SessionConfig,
    window_bytes=st.sampled_from([1500, 6000, 65_536, 8 * 1024 * 1024]),
    window_frames=st.sampled_from([16, 300, 8192]),
    grace_period=st.just(GRACE),
    large_frames=st.booleans(),
)
pauses = intervals(5.0, 3.0, 2)


def describe(result: SimResult, paths: list[PathSpec]) -> str:
    return f"{result.describe()} paths={paths}"


def assert_side_consistent(side: SideResult, why: str) -> None:
    """Events tell the same story as the bytes: data, then one StreamEnded, then one close."""
    data = b"".join(e.data for e in side.events if isinstance(e, StreamData))
    assert data == side.received, why
    closes = [i for i, e in enumerate(side.events) if isinstance(e, SessionClosed)]
    assert closes == [len(side.events) - 1], why


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
