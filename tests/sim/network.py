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

Each side is the real glue: a `SessionDriver` (dupsession/aio/driver.py) on a virtual event
loop (`SideLoop`), its paths' sinks feeding the links, the application its endpoint. A step is
one loop iteration: one input (a frame arriving, the application waking, the consumer pausing)
through the driver's method, the application's due writes (`driver.send` while `writable()`
allows; half-close once all are in), then the driver's flush (transmit, events, timer re-arm);
or the driver's timer firing. The simulator also checks the core's memory bounds after every
step and detects timer livelocks (a timer that is due again and again without time moving: a
busy loop in the real glue).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dupsession.aio.driver import SessionDriver
from dupsession.core import wire
from dupsession.core.events import Event, SessionClosed, StreamData, StreamEnded
from dupsession.core.negotiate import Features
from dupsession.core.session import Role, Session, SessionConfig, SessionState
from dupsession.testing.link import LinkSettings
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


@dataclass(frozen=True, slots=True)
class Join:
    """A path joins the session late (`PathSpec.joins_at`): a retried open, a config reload."""

    path_id: int


Action = Arrival | Wake | Pause | Join


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
    arrivals: list[float] = field(default_factory=list)  #: ...and when it reached the port
    carried: int = 0  #: bytes of every frame admitted (resends included): the port's use

    def admit(self, size: int, now: float, drop: bool) -> float | None:
        """When the frame leaves the port, or None when it is dropped (queue full)."""
        start = max(now, self.busy_until)
        wait = start - now
        if drop and wait > self.queue:
            self.dropped += 1
            return None
        self.busy_until = start + size / self.rate
        self.carried += size
        self.max_wait = max(self.max_wait, wait)
        self.waits.append(wait)
        self.arrivals.append(now)
        return self.busy_until

    def standing_waits(self, since: int = 0) -> list[float]:
        """From the `since`th admitted frame on, the wait of each burst's first frame (frames
        arriving at one instant are a burst): the queue standing before the burst, without
        the burst's own, which a pacing release of n frames adds to all but its first. On links
        without jitter only: with it no two frames arrive together, and this is every wait."""
        pairs = zip(self.arrivals[since:], self.waits[since:], strict=True)
        last = self.arrivals[since - 1] if since else None
        standing = []
        for at, wait in pairs:
            if at != last:
                standing.append(wait)
            last = at
        return standing


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction of one path (the testing vocabulary's `LinkSettings` converts to it:
    `from_settings`)."""

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

    @classmethod
    def from_settings(
        cls, settings: LinkSettings, datagram: bool = True, queue: float = 0.2
    ) -> LinkSpec:
        """The testing vocabulary's link (`dupsession.testing.link`) in the simulator: its
        jitter is +/- (here extra delay in [0, jitter]), its rate bits/s (here a `Bottleneck`
        of its own, bytes/s, waiting at most `settings.queue` or `queue` s), `down` an outage
        that never ends. Burst loss is the netlab's alone."""
        if settings.burst is not None:
            raise ValueError("the simulator has no burst loss (the netlab has)")
        jitter = min(settings.jitter, settings.delay)  # never below 0, as the others clamp
        bottleneck = None
        if settings.rate is not None:
            wait = queue if settings.queue is None else settings.queue
            bottleneck = Bottleneck(settings.rate / 8, queue=wait)
        outages = tuple(settings.outages) + (((0.0, math.inf),) if settings.down else ())
        return cls(
            delay=settings.delay - jitter,
            jitter=2 * jitter,
            loss=settings.loss,
            outages=outages,
            datagram=datagram,
            bottleneck=bottleneck,
        )


@dataclass(frozen=True, slots=True)
class PathSpec:
    up: LinkSpec  #: client -> exit
    down: LinkSpec  #: exit -> client
    #: The access link both ends name for it (`Path.link`): paths with the same one share it.
    link: str | None = None
    #: When both ends attach it (s after the start): 0 at the start, later for a path that
    #: joins a running session (a retried open, a config reload).
    joins_at: float = 0.0

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


class _Timer:
    """A timer the driver armed: a heap entry that cancelling empties."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None


class SideLoop:
    """The event loop one side's `SessionDriver` runs on (the driver's `Scheduler`).

    `call_soon` holds the flush until the simulator ends the step (one loop iteration per
    input), `call_at` puts the driver's one timer on the simulation's heap, `time` is the
    virtual clock.
    """

    __slots__ = ("rank", "side", "sim", "soon")

    def __init__(self, sim: Simulation, side: Side, rank: int) -> None:
        self.sim, self.side, self.rank = sim, side, rank
        self.soon: list[Callable[[], object]] = []

    def time(self) -> float:
        return self.sim.now

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.soon.append(callback)

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(callback)
        self.sim._push(when, self.side, timer, self.rank)
        return timer

    def run_soon(self) -> None:
        """The rest of this loop iteration: the flushes the step's inputs scheduled."""
        soon = self.soon
        while soon:
            soon.pop(0)()


class LinkSink:
    """A path's way out for the driver (its `FrameSink`): frames go into the path's link."""

    __slots__ = ("path_id", "side", "sim")

    def __init__(self, sim: Simulation, side: Side, path_id: int) -> None:
        self.sim, self.side, self.path_id = sim, side, path_id

    def send_frames(self, frames: list[bytes]) -> None:
        sim, side, path_id = self.sim, self.side, self.path_id
        link = sim.links[side.name, path_id]  # looked up now: tests may wrap a link's send
        limit = wire.MAX_DATAGRAM_FRAME if link.spec.datagram else wire.MAX_STREAM_FRAME
        peer, now = sim.peer(side), sim.now
        for frame in frames:
            if len(frame) > limit:
                raise sim.fail(f"{side.name} sent a {len(frame)}-byte frame on {path_id}")
            for at, data in link.send(frame, now):
                sim._push(at, peer, Arrival(path_id, data))


class Side:
    """One side: the real `SessionDriver` around its session, and the application above it
    (the driver's endpoint: it gets the session's events and writes when there is room)."""

    def __init__(
        self,
        sim: Simulation,
        name: str,
        session: Session,
        writes: deque[tuple[float, bytes]],
        half_close: bool,
        pauses: Sequence[tuple[float, float]],
        rank: int,
    ) -> None:
        self.sim = sim
        self.name = name
        self.loop = SideLoop(sim, self, rank)
        self.driver = SessionDriver(session, self, clock=self.loop.time, loop=self.loop)
        self.driver.on_path_event = self._record
        #: (not before, bytes) writes still to make, in order.
        self.writes = writes
        #: Half-close once every write is in.
        self.half_close = half_close
        #: [start, end) intervals (s after START) during which the consumer is full and the
        #: side calls `pause_receiving(True)`; events are still taken (the glue buffers them).
        self.pauses = pauses
        self.paused_end: int | None = None  #: advertised window end frozen by the current pause
        self.sent = bytearray()
        self.received = bytearray()
        self.events: list[Event] = []
        self.stream_closed = False
        self.closed_at: float | None = None
        self.max_unacked = 0
        self.max_held = 0
        self.max_held_frames = 0
        self.last_timer: float | None = None
        self.spins = 0

    @property
    def session(self) -> Session:
        return self.driver.session

    @session.setter
    def session(self, session: Session) -> None:  # a test may put in a rigged core
        self.driver.session = session

    @property
    def closed(self) -> SessionClosed | None:
        return self.driver.session.closed_event

    def feed(self) -> None:
        """The application writes what is due, as far as `writable()` lets it (backpressure),
        and half-closes once everything is written."""
        driver = self.driver
        if driver.state is SessionState.CLOSED:
            return
        writes, now = self.writes, self.sim.now
        while writes and writes[0][0] <= now:
            room = driver.writable()
            if room <= 0:
                break
            at, data = writes.popleft()
            if len(data) > room:
                writes.appendleft((at, data[room:]))
                data = data[:room]
            driver.send(data)
            self.sent += data
        if not writes and self.half_close and not self.stream_closed:
            driver.close_stream()
            self.stream_closed = True

    # -- the driver's endpoint ---------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        ended = any(isinstance(e, StreamEnded) for e in self.events)
        self._record(StreamData(data))
        if ended:
            raise self.sim.fail(f"{self.name} got data after StreamEnded")
        if not data:
            raise self.sim.fail(f"{self.name} got an empty StreamData")
        self.received += data

    def on_eof(self) -> None:
        ended = any(isinstance(e, StreamEnded) for e in self.events)
        self._record(StreamEnded())
        if ended:
            raise self.sim.fail(f"{self.name} got StreamEnded twice")

    def on_closed(self, event: SessionClosed) -> None:
        self._record(event)
        self.closed_at = self.sim.now - START

    def on_writable(self) -> None:
        self.feed()

    def _record(self, event: Event) -> None:
        if self.events and isinstance(self.events[-1], SessionClosed):
            raise self.sim.fail(f"{self.name} got {event!r} after SessionClosed")
        self.events.append(event)


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
        # (time, rank, order, side, action): a frame arriving on a path or an application
        # step (rank 0), or a side's driver timer (rank 1 client, 2 exit: after the network
        # at the same instant)
        self._heap: list[tuple[float, int, int, Side, Action | _Timer]] = []
        self._order = 0
        self.steps = 0
        session_id, keys = handshake_keys()
        self.client = Side(
            self,
            "client",
            Session(Role.CLIENT, session_id, keys, START, client_config, features),
            _writes(client_writes),
            half_close,
            client_pauses,
            rank=1,
        )
        self.exit = Side(
            self,
            "exit",
            Session(Role.EXIT, session_id, keys, START, exit_config, features),
            _writes(exit_writes),
            half_close,
            exit_pauses,
            rank=2,
        )
        self.links: dict[tuple[str, int], Link] = {}
        for path_id, spec in enumerate(self.specs):
            self.links["client", path_id] = Link(spec.up, self.rng, START)
            self.links["exit", path_id] = Link(spec.down, self.rng, START)
            for side in (self.client, self.exit):
                if spec.joins_at > 0:
                    self._push(START + spec.joins_at, side, Join(path_id))
                else:
                    self._attach(side, path_id)
        self.check_bounds = check_bounds
        for side in (self.client, self.exit):
            for at, _ in side.writes:
                self._push(at, side, Wake())
            for start, end in side.pauses:
                self._push(START + start, side, Pause(True))
                self._push(START + end, side, Pause(False))

    # -- plumbing ------------------------------------------------------------------------------

    def _attach(self, side: Side, path_id: int) -> None:
        spec = self.specs[path_id]
        side.driver.attach(path_id, LinkSink(self, side, path_id), spec.datagram, link=spec.link)

    def peer(self, side: Side) -> Side:
        return self.exit if side is self.client else self.client

    def _push(self, at: float, side: Side, action: Action | _Timer, rank: int = 0) -> None:
        self._order += 1
        heapq.heappush(self._heap, (at, rank, self._order, side, action))

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"seed={self.seed} t={self.now - START:.6f}: {message}")

    def _pump(self, side: Side) -> None:
        """The rest of the loop iteration after an input: the application writes what is due,
        then the driver's flush (transmit, events, timer) runs."""
        side.feed()
        side.driver.poke()
        side.loop.run_soon()

    def _check_bounds(self, side: Side) -> None:
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
        """The first flush on both sides (probes on every path)."""
        for side in (self.client, self.exit):
            self._pump(side)
            if self.check_bounds:
                self._check_bounds(side)

    def next_due(self) -> tuple[float, int] | None:
        """When the next thing happens and its rank (0 the network, 1 and 2 a side's timer),
        None when nothing ever will."""
        heap = self._heap
        while heap:
            at, rank, _, _, action = heap[0]
            if type(action) is not _Timer or action.callback is not None:
                return at, rank
            heapq.heappop(heap)  # a timer the driver re-armed or cancelled
        return None

    def step(self) -> None:
        """Run what `next_due` announced: one arrival, application step or timer, then the
        rest of the driver's loop iteration."""
        self.steps += 1
        at, _, _, side, action = heapq.heappop(self._heap)
        if type(action) is _Timer:
            self._spin_check(side, at)
            self.now = max(self.now, at)
            side.last_timer = self.now
            assert action.callback is not None
            action.callback()  # the driver's: handle_timer, then its flush
            side.loop.run_soon()
        else:
            self.now = max(self.now, at)
            if type(action) is Arrival:
                side.driver.frame_received(action.frame, action.path_id)
            elif type(action) is Join:
                self._attach(side, action.path_id)
            elif type(action) is Pause:
                side.driver.pause_receiving(action.paused)
                side.paused_end = side.session.receiver.advertised_end if action.paused else None
            self._pump(side)
        if self.check_bounds:
            self._check_bounds(side)

    def _spin_check(self, side: Side, at: float) -> None:
        """A timer due again at the instant it just ran: nudge the clock (as real time would
        move on), and fail when it happens over and over (a busy loop in the real glue)."""
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
            self.step()
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


def _side_result(side: Side, now: float) -> SideResult:
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
        due, sim = min(dues, key=lambda d: d[0])
        if due[0] > deadline:
            break
        sim.step()
    return [sim.result() for sim in sims]


@dataclass(frozen=True)
class SharedRun:
    """Second half of uploads sharing one bottleneck (`share_bottleneck`): per session goodput
    (payload bytes), the queue's waits and its tail drops over that half."""

    got: list[int]
    waits: list[float]
    dropped: int

    @property
    def jain(self) -> float:
        """Jain's fairness index of the goodputs: 1 for equal shares, 1/n for one taker."""
        return sum(self.got) ** 2 / (len(self.got) * sum(g * g for g in self.got))


def share_bottleneck(
    rate: float, total: float, delays: Sequence[float], starts: Sequence[float] = ()
) -> SharedRun:
    """One upload per delay (one datagram path each, seeds 1, 2, ...) through one uplink of
    `rate` bytes/s with a 200 ms tail-drop queue, for `total` seconds; measured over the
    second half, once startup has settled. Upload i starts `starts[i]` s in (default 0)."""
    up = Bottleneck(rate, queue=0.2)
    sims = []
    for seed, delay in enumerate(delays, 1):
        spec = PathSpec(LinkSpec(delay=delay, bottleneck=up), LinkSpec(delay=delay))
        start = starts[seed - 1] if starts else 0.0
        sims.append(Simulation([spec], seed, [(start, bytes(int(rate * total)))], []))
    run_together(sims, until=total / 2)
    before = [len(s.exit.received) for s in sims]
    start, dropped = len(up.waits), up.dropped
    run_together(sims, until=total)
    got = [len(s.exit.received) - b for s, b in zip(sims, before, strict=True)]
    return SharedRun(got, up.waits[start:], up.dropped - dropped)


def symmetric(link: LinkSpec, count: int = 1) -> list[PathSpec]:
    """`count` paths, each with `link` in both directions."""
    return [PathSpec(link, link) for _ in range(count)]
