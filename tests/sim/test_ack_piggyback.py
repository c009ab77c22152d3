"""An owed ACK goes out with the next DATA a session sends (`Session.transmit`), not alone on
its delay timer after it, when the last one left at least a delay ago
(`AckPending.rides_along`): the same ACK on the same paths, sooner, and never more often than
the timer sends them. Such a transmit leaves no ACK owed, every datagram path carrying its
DATA carries an ACK ahead of it, and typing still gets every echo.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from dupsession.core.session import Session
from tests.sim.echo import EchoSimulation, typing_with_burst
from tests.sim.network import LinkSpec, PathSpec

Record = tuple[str, float, dict[int, list[bytes]], bool, bool, dict[int, bool]]


def run(sim: EchoSimulation, until: float) -> list[Record]:
    """Every transmit of both sides: (side, time, frames per path, whether an owed ACK could
    ride along before it, an ACK still owed after it, which paths are datagram paths and not
    quiet)."""
    records: list[Record] = []
    transmit = Session.transmit

    def recorded(self: Session, now: float) -> dict[int, list[bytes]]:
        acks = self.acks
        rides = acks.since is not None and now - acks.sent_at >= acks.delay
        out = transmit(self, now)
        loud = {p.path_id: p.datagram and not p.quiet for p in self.paths.values()}
        records.append((str(self.role), now, out, rides, acks.since is not None, loud))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Session, "transmit", recorded)
        sim.run(until)
    return records


def _kinds(frames: list[bytes]) -> list[int]:
    return [frame[1] for frame in frames]


links = st.builds(
    LinkSpec,
    delay=st.sampled_from([0.001, 0.005, 0.02]),
    loss=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
    datagram=st.booleans(),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(
        st.builds(lambda up: PathSpec(up, LinkSpec(delay=0.003, datagram=up.datagram)), links),
        min_size=1,
        max_size=4,
    ),
    policy=st.sampled_from([Policy.AUTO, Policy.STRIPE, Policy.REDUNDANT]),
    typing=st.tuples(
        st.integers(1, 15),  # keystrokes
        st.sampled_from([0.002, 0.02, 0.05]),  # s between them
        st.sampled_from([0, 5000]),  # a burst's bytes in the middle
        st.integers(0, 2**16),  # the seed
    ),
)
def test_a_transmit_with_data_carries_the_owed_ack(
    specs: list[PathSpec], policy: Policy, typing: tuple[int, float, int, int]
) -> None:
    keystrokes, interval, burst, seed = typing
    features = Features(schedule=Schedule(policy))
    sim = typing_with_burst(specs, seed, keystrokes, interval, burst, features=features)
    records = run(sim, 0.4 + keystrokes * interval + 3.0)
    rode = 0
    for side, now, out, rides, owed, loud in records:
        if not rides or not any(wire.FrameType.DATA in _kinds(f) for f in out.values()):
            continue
        rode += 1
        assert not owed, f"{side} at {now}: an ACK still owed after sending DATA"
        for pid, frames in out.items():
            kinds = _kinds(frames)
            if wire.FrameType.DATA in kinds and loud.get(pid):
                assert kinds[0] != wire.FrameType.DATA, f"{side} at {now}: path {pid} {kinds}"
    if not burst and not any(spec.up.loss or spec.down.loss for spec in specs):
        assert len(sim.rtts) == keystrokes  # (a burst's zeros read as records too)
        if interval >= 0.02:  # every echo after the first keystroke's finds an ACK owed
            assert rode >= 1


def test_the_echo_carries_the_keystrokes_ack_and_no_ack_follows_alone() -> None:
    """One UDP path, 2 ms each way, a keystroke every 50 ms: the exit's transmit of each echo
    starts with the keystroke's ACK, and the exit sends no ACK on its own for the keystroke
    4 ms later (before: every echo went bare and an ACK followed it on its delay timer)."""
    spec = [PathSpec(LinkSpec(delay=0.002), LinkSpec(delay=0.002))]
    sim = EchoSimulation(spec, 1, 10, 0.05, start=0.2)
    records = run(sim, 1.0)
    assert len(sim.rtts) == 10
    exit_sends = [(now, _kinds(out.get(0, []))) for side, now, out, *_ in records if side == "exit"]
    echoes = [(now, kinds) for now, kinds in exit_sends if wire.FrameType.DATA in kinds]
    assert len(echoes) == 10
    for now, kinds in echoes:
        assert kinds[0] == wire.FrameType.ACK, (now, kinds)
        # nothing ACK-only within the delay after the echo: the ACK went with it
        alone: list[Any] = [
            (t, k) for t, k in exit_sends if now < t <= now + 0.006 and k == [wire.FrameType.ACK]
        ]
        assert not alone, (now, alone)
