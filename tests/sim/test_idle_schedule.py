"""`Stripe`'s shortcut for a transmit with nothing to hand out (`Stripe._idle`) runs exactly as
the full schedule: the same sessions, run once with it and once without, send the same bytes
at the same times and hold the same state after every transmit (each side's whole session:
sender, receiver, recovery, scheduler, every path and its controller).
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.sim.network as network
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from dupsession.core.session import Session
from dupsession.core.stripe import Stripe
from tests.sim.echo import EchoSimulation
from tests.sim.network import LinkSpec, PathSpec, Simulation
from tests.support.session import handshake_keys

#: The scheduler's per-transmit scratch: rebuilt by every full schedule before it is read.
SCRATCH = {"owd"}


def _slots(obj: object) -> Iterator[str]:
    for cls in type(obj).__mro__:
        yield from getattr(cls, "__slots__", ())


def state(obj: Any, seen: dict[int, int] | None = None) -> Any:
    """A comparable picture of `obj` and everything it holds (an object met again: its index)."""
    seen = {} if seen is None else seen
    if obj is None or isinstance(obj, bool | int | float | str | bytes | enum.Enum):
        return obj
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, list | tuple | deque):
        return (type(obj).__name__, [state(x, seen) for x in obj])
    if isinstance(obj, set | frozenset):
        return ("set", sorted(repr(state(x, seen)) for x in obj))
    if isinstance(obj, dict):
        return ("dict", [(state(k, seen), state(v, seen)) for k, v in obj.items()])
    if callable(obj) and not hasattr(obj, "__dict__") and not list(_slots(obj)):
        return ("callable", getattr(obj, "__qualname__", type(obj).__name__))
    if id(obj) in seen:
        return ("ref", seen[id(obj)])
    seen[id(obj)] = len(seen)
    names = list(getattr(obj, "__dict__", {})) + [n for n in _slots(obj) if hasattr(obj, n)]
    return (
        type(obj).__name__,
        [(n, state(getattr(obj, n), seen)) for n in sorted(set(names)) if n not in SCRATCH],
    )


#: Both runs under the same keys: byte-identical frames.
KEYS = handshake_keys()


def trace(make: Callable[[], Simulation], until: float, idle: bool) -> list[tuple[Any, ...]]:
    """Every transmit of both sides: (side, time, frames per path, digest of its session)."""
    records: list[tuple[Any, ...]] = []
    transmit = Session.transmit

    def recorded(self: Session, now: float) -> dict[int, list[bytes]]:
        out = transmit(self, now)
        digest = hashlib.sha256(repr(state(vars(self))).encode()).hexdigest()
        records.append((str(self.role), now, {k: list(v) for k, v in out.items()}, digest))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network, "handshake_keys", lambda: KEYS)
        mp.setattr(Stripe, "skip_idle", idle)
        mp.setattr(Session, "transmit", recorded)
        make().run(until)
    return records


links = st.builds(
    LinkSpec,
    delay=st.sampled_from([0.001, 0.005, 0.02, 0.06]),
    jitter=st.sampled_from([0.0, 0.003]),
    loss=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
    datagram=st.booleans(),
)
paths = st.lists(
    st.builds(
        lambda up, down_delay, link: PathSpec(
            up, LinkSpec(delay=down_delay, datagram=up.datagram), link=link
        ),
        links,
        st.sampled_from([0.001, 0.005, 0.02]),
        st.sampled_from([None, "wifi", "lte"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=paths,
    policy=st.sampled_from([Policy.AUTO, Policy.STRIPE]),
    keystrokes=st.integers(1, 20),
    interval=st.sampled_from([0.003, 0.02, 0.05]),
    burst=st.sampled_from([0, 3000, 12_000]),
    seed=st.integers(0, 2**16),
)
def test_idle_shortcut_sends_and_leaves_what_the_full_schedule_does(
    specs: list[PathSpec],
    policy: Policy,
    keystrokes: int,
    interval: float,
    burst: int,
    seed: int,
) -> None:
    features = Features(schedule=Schedule(policy))

    def make() -> Simulation:
        sim = EchoSimulation(specs, seed, keystrokes, interval, start=0.2, features=features)
        if burst:  # a transfer in the middle of the typing
            at = network.START + 0.3
            sim.client.writes = deque(sorted([*sim.client.writes, (at, bytes(burst))]))
            sim._push(network.START + 0.3, sim.client, network.Wake())
        return sim

    until = 0.4 + keystrokes * interval
    full = trace(make, until, idle=False)
    short = trace(make, until, idle=True)
    assert len(full) == len(short)
    for at, (a, b) in enumerate(zip(full, short, strict=True)):
        assert a == b, f"transmit {at} differs: {a[:2]}"


def test_an_echoed_keystroke_takes_the_shortcut_on_most_transmits() -> None:
    """The shortcut is the common case it is for: an interactive session's transmits after
    a keystroke (the copies of it and of its ACK on 2 UDP + 2 TCP paths): 47 % of them here."""
    spec = [
        PathSpec(LinkSpec(delay=0.002, datagram=d), LinkSpec(delay=0.002, datagram=d))
        for d in (True, True, False, False)
    ]
    taken: list[bool] = []
    idle = Stripe._idle

    def counted(self: Stripe, *args: Any) -> bool:
        taken.append(idle(self, *args))
        return taken[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Stripe, "_idle", counted)
        sim = EchoSimulation(
            spec, 1, 40, 0.05, start=0.2, features=Features(schedule=Schedule(Policy.AUTO))
        )
        sim.run(3.0)
    assert len(sim.rtts) == 40
    assert sum(taken) >= 0.4 * len(taken), (sum(taken), len(taken))
