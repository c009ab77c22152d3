"""Hypothesis strategies for the integrity properties: networks, streams, window settings.

Shared by every property test (tests/properties): the same network model and the same run
settings, so a new property tests what the others do over the same space of networks.
"""

from __future__ import annotations

import math
import random

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from dupsession.core.events import SessionClosed, StreamData
from dupsession.core.negotiate import Features
from dupsession.core.session import SessionConfig
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, SideResult, SimResult, Simulation

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


def link(
    datagram: bool, extra_outages: tuple[Interval, ...], outages: bool = True
) -> st.SearchStrategy[LinkSpec]:
    drawn = intervals(6.0, 4.0, 2) if outages else st.just([])
    return st.builds(
        LinkSpec,
        delay=st.floats(0.0005, 0.2),
        jitter=st.floats(0, 0.05),
        loss=st.floats(0, 0.6),
        reorder=st.floats(0, 0.3),
        duplicate=st.floats(0, 0.3),
        corrupt=st.floats(0, 0.1),
        outages=drawn.map(lambda o: tuple(o) + extra_outages),
        datagram=st.just(datagram),
        bottleneck=st.one_of(
            st.none(),
            st.builds(Bottleneck, rate=st.floats(20_000, 2_000_000), queue=st.floats(0.005, 0.3)),
        ),
    )


@st.composite
def networks(draw: st.DrawFn, permanent_outage_at: float | None = None) -> list[PathSpec]:
    """1-4 paths; sometimes all down together for up to 10 s (or, if asked, forever). Each
    path may name an access link (`Path.link`: paths naming the same one share it, which
    benches a stream path beside a datagram path), and every path but the first may join the
    running session late (review D6: a late datagram path once wedged a session)."""
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
        joins_at = 0.0
        if paths and permanent_outage_at is None:
            joins_at = draw(st.one_of(st.just(0.0), st.floats(0.05, 3.0)))
        paths.append(
            PathSpec(
                draw(link(datagram, common)),
                draw(link(datagram, common)),
                link=draw(st.sampled_from([None, "up1", "up2"])),
                joins_at=joins_at,
            )
        )
    return paths


@st.composite
def late_joins(draw: st.DrawFn) -> list[PathSpec]:
    """2-3 paths on one access link: a stream path from the start, the others joining the
    running session late (review D1: 16 KiB frames cut on the stream path before a datagram
    path joined wedged `auto` once). No outages and little loss: the join, not a blackout
    or a path too lossy to count as alive, is what is tested here."""
    # the stream path slow enough that frames cut before the join are still unacknowledged,
    # and not yet sent when its window (32 frames at first) is full
    slow = st.builds(
        LinkSpec,
        delay=st.floats(0.0005, 0.2),
        datagram=st.just(False),
        bottleneck=st.builds(Bottleneck, rate=st.floats(100_000, 400_000)),
    )
    paths = [PathSpec(draw(slow), draw(slow), link="up1")]
    for _ in range(draw(st.integers(1, 2))):
        datagram = draw(st.booleans()) or draw(st.booleans())
        joins_at = draw(st.floats(0.01, 1.0))
        joiner = st.builds(
            LinkSpec,
            delay=st.floats(0.0005, 0.2),
            loss=st.floats(0, 0.1),
            duplicate=st.floats(0, 0.3),
            datagram=st.just(datagram),
        )
        up, down = draw(joiner), draw(joiner)
        paths.append(PathSpec(up, down, link="up1", joins_at=joins_at))
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


def integrity_simulation(
    paths: list[PathSpec],
    seed: int,
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    features: Features,
) -> Simulation:
    """Both sides with `features` and a grace period (`GRACE`) that outlasts any drawn outage,
    so a run that closes early has lost the session, not waited out an outage."""
    config = SessionConfig(grace_period=GRACE)
    return Simulation(
        paths,
        seed,
        client_writes,
        exit_writes,
        client_config=config,
        exit_config=config,
        features=features,
    )


def describe(result: SimResult, paths: list[PathSpec]) -> str:
    return f"{result.describe()} paths={paths}"


def assert_side_consistent(side: SideResult, why: str) -> None:
    """Events tell the same story as the bytes: data, then one StreamEnded, then one close."""
    data = b"".join(e.data for e in side.events if isinstance(e, StreamData))
    assert data == side.received, why
    closes = [i for i, e in enumerate(side.events) if isinstance(e, SessionClosed)]
    assert closes == [len(side.events) - 1], why
