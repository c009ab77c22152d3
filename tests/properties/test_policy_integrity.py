"""Every scheduling policy, with any tiers, delivers each direction's stream exactly once, in
order, whatever the network does (the same networks as test_stream_integrity, paths of
different delay, loss and outages, now with the policy and each path's tier drawn too)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule, Tier
from tests.sim.network import PathSpec, SimResult, Simulation
from tests.support.controllers import Window
from tests.support.strategies import (
    HORIZON,
    PROPERTY,
    assert_side_consistent,
    blob,
    describe,
    integrity_simulation,
    late_joins,
    networks,
    streams,
)

pytestmark = pytest.mark.timeout(900)


@st.composite
def schedules(draw: st.DrawFn, count: int) -> Schedule:
    tiers = draw(st.lists(st.sampled_from(list(Tier)), min_size=count, max_size=count))
    return Schedule(
        draw(st.sampled_from(list(Policy))),
        draw(st.integers(1, 3)),
        tuple((i, t) for i, t in enumerate(tiers) if t is not Tier.PRIMARY),
    )


def delivered(
    sim: Simulation,
    paths: list[PathSpec],
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    label: str,
) -> SimResult:
    """Run `sim` and check that each direction got its stream exactly and both closed well."""
    result = sim.run(HORIZON)
    why = f"{describe(result, paths)} {label}"
    client, exit_ = result.client, result.exit
    assert exit_.received == client.sent == b"".join(d for _, d in client_writes), why
    assert client.received == exit_.sent == b"".join(d for _, d in exit_writes), why
    for side in (client, exit_):
        assert_side_consistent(side, why)
        assert side.closed is not None and side.closed.code == wire.CloseCode.NORMAL, why
    return result


@settings(PROPERTY, max_examples=150)
@given(
    data=st.data(),
    paths=networks(),
    client_writes=streams,
    exit_writes=streams,
    window=st.sampled_from([None, 8, 64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_policy_delivers_the_sent_stream(
    data: st.DataObject,
    paths: list[PathSpec],
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    window: int | None,
    seed: int,
) -> None:
    schedule = data.draw(schedules(len(paths)))
    sim = integrity_simulation(paths, seed, client_writes, exit_writes, Features(schedule=schedule))
    if window is not None:  # small windows make the policies split and re-inject
        for side in (sim.client, sim.exit):
            for path in side.session.paths.values():
                path.cc = Window(window)
    delivered(sim, paths, client_writes, exit_writes, f"schedule={schedule}")


@settings(PROPERTY, max_examples=120)
@given(
    paths=late_joins(),
    first=st.tuples(st.integers(600_000, 2_000_000), st.integers(0, 2**16)).map(blob),
    client_writes=streams,
    exit_writes=streams,
    policy=st.sampled_from([Policy.AUTO, Policy.STRIPE]),
    seed=st.integers(0, 2**32 - 1),
)
def test_paths_joining_late_on_a_shared_link_deliver_the_sent_stream(
    paths: list[PathSpec],
    first: bytes,
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    policy: Policy,
    seed: int,
) -> None:
    """A stream path from the start, datagram or stream paths joining later on its access
    link (`Path.link`): benching starts mid-transfer, with 16 KiB frames cut while the stream
    path was alone still unacknowledged (review D1 wedged such a session for good)."""
    # more than the stream path's first window, cut in 16 KiB frames before any join
    client_writes = [(0.0, first), *client_writes]
    features = Features(schedule=Schedule(policy))
    sim = integrity_simulation(paths, seed, client_writes, exit_writes, features)
    delivered(sim, paths, client_writes, exit_writes, f"policy={policy}")
