"""A deterministic virtual network that drives two real sans-IO sessions over N paths.

Everything is decided by one `random.Random(seed)` and a virtual clock (float seconds), so a
failure reproduces exactly from its seed; every assertion message carries the seed.

Model (trio's `_fake_net.py` in spirit, per direction and per path):
- A *datagram* link (UDP) loses, duplicates, reorders, corrupts (one flipped bit in a copy)
  and delays each frame on its own; a frame sent into an outage, or still in flight when one
  starts, is lost.
- A *stream* link (TCP, SSH channel) is reliable and in order: it never loses, duplicates or
  corrupts (TCP's own job). An outage *stalls* it like a dead route does: bytes sent into or
  in flight across an outage arrive one delay after the outage ends. An outage that never ends
  (`end=math.inf`) swallows them.
- A link may have a rate: a `Bottleneck` (a router's output port: bytes per second and a
  queue bounded in time, tail drop) that frames wait in before their delay. Links given the
  same `Bottleneck` share it, across paths and across simulations run together
  (`run_together`): that is how two sessions compete for one uplink. Stream links queue
  without bound (TCP's send buffer holds what the network cannot take).

The driver is what the asyncio glue does: after every input it feeds application bytes while
`writable()` allows (backpressure), half-closes once everything is written, calls
`transmit(now)`, drains `next_event()`, and re-arms on `get_timer()`. It also checks the core's
memory bounds after every step and detects timer livelocks (a timer that is due again and
again without time moving: a busy loop in the real glue).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dupsession.core import wire
from dupsession.core.events import Event, SessionClosed, StreamData, StreamEnded
from dupsession.core.negotiate import Features
from dupsession.core.session import Role, Session, SessionConfig, SessionState
from tests.support.session import handshake_keys

#: Virtual time the simulation starts at (s). Not 0: an ACK timestamp of 0 means "none yet".
START = 100.0
#: Wall clock handed to the handshake (s since the epoch); any fixed value works.
UNIX_NOW = 1_800_000_000.0
PSK = bytes(range(32))
TARGET = "127.0.0.1:22"
#: A timer due this many times in a row at the same instant is a livelock (a busy loop).
LIVELOCK_SPINS = 200
#: Nudge (s) given to a timer that is due again at the instant it just ran: the real clock
#: moves on between calls, so float rounding in a deadline must not wedge the simulator.
SPIN_STEP = 1e-6


@dataclass(frozen=True, slots=True)
class Arrival:
    path_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Wake:
    """A scheduled write is due."""


@dataclass(frozen=True, slots=True)
class Pause:
    paused: bool


Action = Arrival | Wake | Pause


class LivelockError(AssertionError):
    """The core asked to be woken at an instant it had just been woken at, over and over."""


@dataclass(slots=True, eq=False)
class Bottleneck:
    """A router's output port: serialises frames at `rate` and drops what would wait longer
    than `queue` seconds (tail drop). Mutable, shared by every link given it."""

    rate: float  #: bytes per second
    queue: float = 0.2  #: the longest wait (s) before a frame is dropped (datagram links)
    busy_until: float = float("-inf")
    dropped: int = 0
    max_wait: float = 0.0  #: the longest wait any frame had (s): the queueing delay reached
    waits: list[float] = field(default_factory=list)  #: every frame's wait, in order

    def admit(self, size: int, now: float, drop: bool) -> float | None:
        """When the frame leaves the port, or None when it is dropped (queue full)."""
        start = max(now, self.busy_until)
        wait = start - now
        if drop and wait > self.queue:
            self.dropped += 1
            return None
        self.busy_until = start + size / self.rate
        self.max_wait = max(self.max_wait, wait)
        self.waits.append(wait)
        return self.busy_until


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction of one path."""

    #: Base one-way delay (s).
    delay: float = 0.02
    #: Extra delay per frame, uniform in [0, jitter] (s).
    jitter: float = 0.0
    #: Probability a frame is lost (datagram links only).
    loss: float = 0.0
    #: Probability a frame is held back an extra [0, 2 * delay + 10 ms], so later ones pass it
    #: (datagram links only).
    reorder: float = 0.0
    #: Probability a frame is delivered twice (datagram links only).
    duplicate: float = 0.0
    #: Probability a copy arrives with one random bit flipped (datagram links only).
    corrupt: float = 0.0
    #: Dead intervals [start, end), in seconds after the simulation starts.
    outages: Sequence[tuple[float, float]] = ()
    #: True: UDP-like. False: a reliable in-order stream that stalls during outages.
    datagram: bool = True
    #: The port frames queue in before their delay; None: infinitely fast.
    bottleneck: Bottleneck | None = None


@dataclass(frozen=True, slots=True)
class PathSpec:
    up: LinkSpec  #: client -> exit
    down: LinkSpec  #: exit -> client

    @property
    def datagram(self) -> bool:
        return self.up.datagram and self.down.datagram


@dataclass(slots=True)
class LinkStats:
    sent: int = 0
    lost: int = 0  #: random loss
    queue_dropped: int = 0  #: tail drop at a full bottleneck queue
    blackholed: int = 0  #: sent into, or in flight across, an outage (datagram) / never ends
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    delivered: int = 0


class Link:
    """One direction of one path: turns a send at `now` into zero or more arrivals."""

    def __init__(self, spec: LinkSpec, rng: random.Random, start: float) -> None:
        self.spec = spec
        self.rng = rng
        self.outages = [(start + s, start + e) for s, e in spec.outages]
        self.stats = LinkStats()
        self._last_arrival = float("-inf")

    def _overlapping(self, begin: float, end: float) -> tuple[float, float] | None:
        for s, e in self.outages:
            if (s < end and begin < e) or s <= begin < e:
                return s, e
        return None

    def send(self, frame: bytes, now: float) -> list[tuple[float, bytes]]:
        spec, rng, stats = self.spec, self.rng, self.stats
        stats.sent += 1
        if not spec.datagram:
            return self._send_stream(frame, now)
        if rng.random() < spec.loss:
            stats.lost += 1
            return []
        if spec.bottleneck is not None:
            departure = spec.bottleneck.admit(len(frame), now, drop=True)
            if departure is None:
                stats.queue_dropped += 1
                return []
            now = departure
        copies = 1
        if rng.random() < spec.duplicate:
            copies = 2
            stats.duplicated += 1
        out = []
        for _ in range(copies):
            arrival = now + spec.delay + rng.uniform(0, spec.jitter)
            if rng.random() < spec.reorder:
                arrival += rng.uniform(0, 2 * spec.delay + 0.01)
                stats.reordered += 1
            data = frame
            if rng.random() < spec.corrupt:
                data = flip_bit(frame, rng.randrange(len(frame) * 8))
                stats.corrupted += 1
            if self._overlapping(now, arrival) is not None:
                stats.blackholed += 1
                continue
            out.append((arrival, data))
        stats.delivered += len(out)
        return out

    def _send_stream(self, frame: bytes, now: float) -> list[tuple[float, bytes]]:
        spec = self.spec
        depart = now
        if spec.bottleneck is not None:
            depart = spec.bottleneck.admit(len(frame), now, drop=False) or now
        arrival = depart + spec.delay + self.rng.uniform(0, spec.jitter)
        while (outage := self._overlapping(depart, arrival)) is not None:
            if math.isinf(outage[1]):
                self.stats.blackholed += 1
                return []
            depart = outage[1]  # the route is back: TCP retransmits what it held
            arrival = depart + spec.delay + self.rng.uniform(0, spec.jitter)
        arrival = max(arrival, self._last_arrival)  # in order, never overtaking
        self._last_arrival = arrival
        self.stats.delivered += 1
        return [(arrival, frame)]


def flip_bit(frame: bytes, bit: int) -> bytes:
    data = bytearray(frame)
    data[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(data)


@dataclass(slots=True)
class Endpoint:
    """One side: its session plus the application above it."""

    name: str
    session: Session
    #: (not before, bytes) writes still to make, in order.
    writes: deque[tuple[float, bytes]]
    #: Half-close once every write is in.
    half_close: bool
    #: [start, end) intervals (s after START) during which the consumer is full and the side
    #: calls `pause_receiving(True)`; events are still drained (the glue buffers them).
    pauses: Sequence[tuple[float, float]] = ()
    paused_end: int | None = None  #: advertised window end frozen by the current pause
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    events: list[Event] = field(default_factory=list)
    stream_closed: bool = False
    closed_at: float | None = None
    max_unacked: int = 0
    max_held: int = 0
    max_held_frames: int = 0
    last_timer: float | None = None
    spins: int = 0

    @property
    def closed(self) -> SessionClosed | None:
        return self.session.closed_event


@dataclass(slots=True)
class SideResult:
    sent: bytes
    received: bytes
    events: list[Event]
    closed: SessionClosed | None
    closed_at: float | None
    state: SessionState
    snapshot: dict[str, Any]
    max_unacked: int
    max_held: int
    max_held_frames: int


@dataclass(slots=True)
class SimResult:
    seed: int
    end: float  #: virtual time the run stopped (s after START)
    steps: int
    client: SideResult
    exit: SideResult
    links: dict[str, LinkStats]

    def describe(self) -> str:
        c, e = self.client, self.exit
        return (
            f"seed={self.seed} end={self.end:.3f}s steps={self.steps} "
            f"client(sent={len(c.sent)} recv={len(c.received)} closed={c.closed}) "
            f"exit(sent={len(e.sent)} recv={len(e.received)} closed={e.closed})"
        )


class Simulation:
    """Two sessions, N paths, one seeded RNG, one virtual clock."""

    def __init__(
        self,
        paths: Sequence[PathSpec],
        seed: int,
        client_writes: Sequence[bytes | tuple[float, bytes]] = (),
        exit_writes: Sequence[bytes | tuple[float, bytes]] = (),
        *,
        client_config: SessionConfig | None = None,
        exit_config: SessionConfig | None = None,
        half_close: bool = True,
        client_pauses: Sequence[tuple[float, float]] = (),
        exit_pauses: Sequence[tuple[float, float]] = (),
        check_bounds: bool = True,
        features: Features | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = START
        self.specs = list(paths)
        session_id, keys = handshake_keys()
        self.client = Endpoint(
            "client",
            Session(Role.CLIENT, session_id, keys, START, client_config, features),
            _writes(client_writes),
            half_close,
            client_pauses,
        )
        self.exit = Endpoint(
            "exit",
            Session(Role.EXIT, session_id, keys, START, exit_config, features),
            _writes(exit_writes),
            half_close,
            exit_pauses,
        )
        self.links: dict[tuple[str, int], Link] = {}
        for path_id, spec in enumerate(self.specs):
            self.client.session.add_path(path_id, spec.datagram, START)
            self.exit.session.add_path(path_id, spec.datagram, START)
            self.links["client", path_id] = Link(spec.up, self.rng, START)
            self.links["exit", path_id] = Link(spec.down, self.rng, START)
        self.check_bounds = check_bounds
        # (time, order, side, action): a frame arriving on a path, or an application step
        self._heap: list[tuple[float, int, Endpoint, Action]] = []
        self._order = 0
        self.steps = 0
        for side in (self.client, self.exit):
            for at, _ in side.writes:
                self._push(at, side, Wake())
            for start, end in side.pauses:
                self._push(START + start, side, Pause(True))
                self._push(START + end, side, Pause(False))

    # -- plumbing ------------------------------------------------------------------------------

    def peer(self, side: Endpoint) -> Endpoint:
        return self.exit if side is self.client else self.client

    def _push(self, at: float, side: Endpoint, action: Action) -> None:
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, side, action))

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"seed={self.seed} t={self.now - START:.6f}: {message}")

    def _pump(self, side: Endpoint) -> None:  # noqa: C901 (the glue's one pass, in its order)
        """What the glue does after any input: feed, transmit, drain events, check bounds."""
        session, now = side.session, self.now
        if session.state is not SessionState.CLOSED:
            while side.writes and side.writes[0][0] <= now:
                room = session.writable()
                if room <= 0:
                    break
                at, data = side.writes.popleft()
                if len(data) > room:
                    side.writes.appendleft((at, data[room:]))
                    data = data[:room]
                session.send(data)
                side.sent += data
            if not side.writes and side.half_close and not side.stream_closed:
                session.close_stream()
                side.stream_closed = True
        peer = self.peer(side)
        for path_id, frames in session.transmit(now).items():
            link = self.links.get((side.name, path_id))
            if link is None:
                raise self.fail(f"{side.name} transmitted on unknown path {path_id}")
            limit = wire.MAX_DATAGRAM_FRAME if link.spec.datagram else wire.MAX_STREAM_FRAME
            for frame in frames:
                if len(frame) > limit:
                    raise self.fail(f"{side.name} sent a {len(frame)}-byte frame on {path_id}")
                for at, data in link.send(frame, now):
                    self._push(at, peer, Arrival(path_id, data))
        while (event := session.next_event()) is not None:
            self._on_event(side, event)
        if self.check_bounds:
            self._check_bounds(side)

    def _on_event(self, side: Endpoint, event: Event) -> None:
        if side.events and isinstance(side.events[-1], SessionClosed):
            raise self.fail(f"{side.name} got {event!r} after SessionClosed")
        if isinstance(event, StreamData):
            if any(isinstance(e, StreamEnded) for e in side.events):
                raise self.fail(f"{side.name} got data after StreamEnded")
            if not event.data:
                raise self.fail(f"{side.name} got an empty StreamData")
            side.received += event.data
        elif isinstance(event, StreamEnded):
            if any(isinstance(e, StreamEnded) for e in side.events):
                raise self.fail(f"{side.name} got StreamEnded twice")
        elif isinstance(event, SessionClosed):
            side.closed_at = self.now - START
        side.events.append(event)

    def _check_bounds(self, side: Endpoint) -> None:
        session = side.session
        cfg = session.config
        sender, receiver = session.sender, session.receiver
        side.max_unacked = max(side.max_unacked, sender.unacked_bytes)
        side.max_held = max(side.max_held, receiver.held_bytes)
        held_frames = sum(end - start for start, end in receiver.ranges)
        side.max_held_frames = max(side.max_held_frames, held_frames)
        frame = wire.MAX_STREAM_PAYLOAD
        if sender.unacked_bytes > cfg.window_bytes + frame:
            raise self.fail(
                f"{side.name} unacked {sender.unacked_bytes} > window {cfg.window_bytes} + frame"
            )
        if held_frames >= cfg.window_frames:
            raise self.fail(f"{side.name} holds {held_frames} frames >= {cfg.window_frames}")
        # Whatever the receiver holds, the peer's sender still counts as unacknowledged.
        peer_window = self.peer(side).session.config.window_bytes
        if receiver.held_bytes > peer_window:
            raise self.fail(
                f"{side.name} holds {receiver.held_bytes} bytes > peer window {peer_window}"
            )
        if side.paused_end is not None and receiver.advertised_end != side.paused_end:
            raise self.fail(f"{side.name} opened its window while paused")

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        """The first transmit on both sides (probes on every path)."""
        for side in (self.client, self.exit):
            self._pump(side)

    def next_due(self) -> tuple[float, int, Endpoint | None] | None:
        """The next thing to happen: (time, rank, side whose timer it is or None for the
        network); None when nothing ever will."""
        candidates: list[tuple[float, int, Endpoint | None]] = []
        if self._heap:
            candidates.append((self._heap[0][0], 0, None))
        for rank, side in enumerate((self.client, self.exit), 1):
            timer = side.session.get_timer()
            if timer is not None:
                candidates.append((timer, rank, side))
        return min(candidates, key=lambda c: (c[0], c[1])) if candidates else None

    def step(self, due: tuple[float, int, Endpoint | None]) -> None:
        """Run what `next_due` returned: one arrival or one timer, then the glue's pump."""
        at, _, timer_side = due
        self.steps += 1
        if timer_side is None:
            at, _, side, action = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            if isinstance(action, Arrival):
                side.session.receive_frame(action.frame, self.now, action.path_id)
            elif isinstance(action, Pause):
                receiver = side.session.receiver
                side.session.pause_receiving(action.paused)
                side.paused_end = receiver.advertised_end if action.paused else None
            self._pump(side)
            return
        side = timer_side
        if at <= self.now and side.last_timer == self.now:
            side.spins += 1
            if side.spins > LIVELOCK_SPINS:
                raise LivelockError(
                    f"seed={self.seed} t={self.now - START:.6f}: {side.name} timer due at "
                    f"{at - START:.6f} keeps firing without progress"
                )
            self.now += SPIN_STEP
        elif at > self.now:
            side.spins = 0
        self.now = max(self.now, at)
        side.last_timer = self.now
        side.session.handle_timer(self.now)
        self._pump(side)

    def run(
        self, until: float = 600.0, stop: Callable[[Simulation], bool] | None = None
    ) -> SimResult:
        """Run until both sessions are closed and the network is empty, `until` seconds of
        virtual time pass, or `stop(self)` holds after a step."""
        deadline = START + until
        self.start()
        while True:
            if stop is not None and stop(self):
                break
            due = self.next_due()
            if due is None or due[0] > deadline:
                break
            self.step(due)
        return self.result()

    def result(self) -> SimResult:
        return SimResult(
            seed=self.seed,
            end=self.now - START,
            steps=self.steps,
            client=_side_result(self.client, self.now),
            exit=_side_result(self.exit, self.now),
            links={f"{name}:{pid}": link.stats for (name, pid), link in self.links.items()},
        )


def _writes(writes: Sequence[bytes | tuple[float, bytes]]) -> deque[tuple[float, bytes]]:
    out: deque[tuple[float, bytes]] = deque()
    for item in writes:
        at, data = (0.0, item) if isinstance(item, bytes) else item
        out.append((START + at, data))
    return out


def _side_result(side: Endpoint, now: float) -> SideResult:
    return SideResult(
        sent=bytes(side.sent),
        received=bytes(side.received),
        events=list(side.events),
        closed=side.closed,
        closed_at=side.closed_at,
        state=side.session.state,
        snapshot=side.session.snapshot(now).as_dict(),
        max_unacked=side.max_unacked,
        max_held=side.max_held,
        max_held_frames=side.max_held_frames,
    )


def simulate(
    paths: Sequence[PathSpec],
    seed: int,
    client_writes: Sequence[bytes | tuple[float, bytes]] = (),
    exit_writes: Sequence[bytes | tuple[float, bytes]] = (),
    until: float = 600.0,
    **kwargs: Any,
) -> SimResult:
    return Simulation(paths, seed, client_writes, exit_writes, **kwargs).run(until)


def run_together(sims: Sequence[Simulation], until: float = 600.0) -> list[SimResult]:
    """Run several simulations on one virtual clock, so links that share a `Bottleneck`
    see every session's frames in time order (two sessions on one uplink)."""
    deadline = START + until
    for sim in sims:
        sim.start()
    while True:
        dues = [(due, sim) for sim in sims if (due := sim.next_due()) is not None]
        if not dues:
            break
        due, sim = min(dues, key=lambda d: (d[0][0], d[0][1]))
        if due[0] > deadline:
            break
        sim.step(due)
    return [sim.result() for sim in sims]


def symmetric(link: LinkSpec, count: int = 1) -> list[PathSpec]:
    """`count` paths, each with `link` in both directions."""
    return [PathSpec(link, link) for _ in range(count)]
