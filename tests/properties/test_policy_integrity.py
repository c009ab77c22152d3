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
from dupsession.core.session import SessionConfig
from tests.sim.network import PathSpec, Simulation
from tests.support.controllers import Window
from tests.support.strategies import (
    GRACE,
    HORIZON,
    PROPERTY,
    assert_side_consistent,
    describe,
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
    config = SessionConfig(grace_period=GRACE)
    sim = Simulation(
        paths,
        seed,
        client_writes,
        exit_writes,
        client_config=config,
        exit_config=config,
        features=Features(schedule=schedule),
    )
    if window is not None:  # small windows make the policies split and re-inject
        for side in (sim.client, sim.exit):
            for path in side.session.paths.values():
                path.cc = Window(window)
    result = sim.run(HORIZON)
    why = f"{describe(result, paths)} schedule={schedule}"
    client, exit_ = result.client, result.exit
    assert exit_.received == client.sent == b"".join(d for _, d in client_writes), why
    assert client.received == exit_.sent == b"".join(d for _, d in exit_writes), why
    for side in (client, exit_):
        assert_side_consistent(side, why)
        assert side.closed is not None and side.closed.code == wire.CloseCode.NORMAL, why
