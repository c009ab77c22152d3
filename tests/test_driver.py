"""The real `SessionDriver` on a virtual clock: the driver owns time, so it runs without asyncio.

Two drivers (client and exit) joined by in-memory links with a fixed one-way delay, on a
hand-run loop whose clock only moves when the next timer is due (trio's MockClock idea): what
the glue does is then exact and repeatable.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from dupsession.aio.driver import (
    BULK_FLUSH_DELAY,
    BULK_INPUT,
    FLUSH_AFTER_BYTES,
    INTERACTIVE_BACKLOG,
    QUIET_FLUSH_DELAY,
    SessionDriver,
)
from dupsession.core import events, wire
from dupsession.core.handshake import Accepted
from dupsession.core.negotiate import Compress, Features
from dupsession.core.session import Role, Session, SessionConfig
from relayd.exit import ExitSession
from tests.support.session import T0, handshake_keys
from tests.support.virtualloop import VirtualLoop

DELAY = 0.010  #: one-way delay of the virtual link (s)


@dataclass
class Recorder:
    """An endpoint that keeps what the driver hands it."""

    data: bytearray = field(default_factory=bytearray)
    first_data_at: float | None = None
    eof: bool = False
    closed: events.SessionClosed | None = None
    clock: Callable[[], float] = lambda: 0.0

    def on_data(self, data: bytes) -> None:
        if self.first_data_at is None:
            self.first_data_at = self.clock()
        self.data += data

    def on_eof(self) -> None:
        self.eof = True

    def on_closed(self, event: events.SessionClosed) -> None:
        self.closed = event

    def on_writable(self) -> None:
        pass


@dataclass
class Link:
    """Frames sent into it reach `peer` after DELAY, in order, none lost."""

    loop: VirtualLoop
    peer: SessionDriver | None = None
    path_id: int = 0
    batches: int = 0  #: send_frames calls: one per flush that had frames for this path

    def send_frames(self, frames: list[bytes]) -> None:
        self.batches += 1
        for frame in frames:
            self.loop.call_at(self.loop.now + DELAY, functools.partial(self._arrive, frame))

    def _arrive(self, frame: bytes) -> None:
        assert self.peer is not None
        self.peer.frame_received(frame, self.path_id)


def _pair(
    datagram: bool = True,
    poked: list[SessionDriver] | None = None,
    features: Features | None = None,
) -> tuple[VirtualLoop, SessionDriver, Link, SessionDriver, Recorder]:
    """`poked`: the exit's shared list of prompted drivers (relayd's)."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    ends = []
    for role in (Role.CLIENT, Role.EXIT):
        recorder = Recorder(clock=loop.time)
        session = Session(role, sid, keys, T0, features=features)
        shared = poked if role is Role.EXIT else None
        driver = SessionDriver(session, recorder, loop.time, loop, poked=shared)
        ends.append((driver, recorder))
    (client, _), (exit_, exit_seen) = ends
    to_exit, to_client = Link(loop, exit_), Link(loop, client)
    client.attach(0, to_exit, datagram=datagram)
    exit_.attach(0, to_client, datagram=datagram)
    return loop, client, to_exit, exit_, exit_seen


def test_the_real_driver_runs_on_a_virtual_clock() -> None:
    loop, client, _, exit_, exit_seen = _pair()
    payload = bytes(range(256)) * 40
    client.send(payload)
    client.close_stream()
    loop.run_until(lambda: exit_seen.eof, horizon=T0 + 5)
    assert bytes(exit_seen.data) == payload
    # The first DATA left in the first flush at T0 and took exactly one link delay.
    assert exit_seen.first_data_at == T0 + DELAY
    assert exit_.writable() > 0


def test_one_flush_per_loop_iteration() -> None:
    loop, client, to_exit, _, exit_seen = _pair()
    loop.run_soon()  # the attach probes go out
    before = to_exit.batches
    for chunk in (b"a", b"b", b"c"):
        client.send(chunk)  # three inputs in one loop iteration
    assert to_exit.batches == before  # the flush is scheduled, not run yet
    loop.run_soon()
    assert to_exit.batches == before + 1  # one transmit carried all three
    loop.run_until(lambda: bytes(exit_seen.data) == b"abc", horizon=T0 + 1)


def test_an_interactive_session_flushes_when_its_input_callback_ends() -> None:
    """relayd serves every session in one loop: a flush left to the loop's next turn waits
    behind every timer due by then (another session's paced bursts). `prompt` (the end of an
    input callback) flushes an interactive session now, its inputs of that callback in one
    transmit; a session with a transfer's backlog keeps its flush in the next turn."""
    loop, client, to_exit, _, exit_seen = _pair()
    loop.run_soon()  # the attach probes go out
    before = to_exit.batches
    client.send(b"a")
    client.send(b"b")  # two inputs of one callback
    assert to_exit.batches == before
    client.prompt()
    assert to_exit.batches == before + 1  # now, both in one transmit
    loop.run_soon()
    assert to_exit.batches == before + 1  # the turn's flush found nothing left to do
    client.prompt()
    assert to_exit.batches == before + 1  # no flush pending: nothing to do
    loop.run_until(lambda: bytes(exit_seen.data) == b"ab", horizon=T0 + 1)

    client.send(bytes(INTERACTIVE_BACKLOG + 1))  # a transfer's backlog
    sent = to_exit.batches
    client.prompt()
    assert to_exit.batches == sent  # not interactive: flushed in the next turn, as before
    loop.run_soon()
    assert to_exit.batches == sent + 1


def _count_transmits(driver: SessionDriver) -> Callable[[], int]:
    """Count `driver`'s transmits (an empty flush sends nothing a Link could count)."""
    calls: list[float] = []
    transmit = driver.session.transmit

    def counted(now: float) -> dict[int, list[bytes]]:
        calls.append(now)
        return transmit(now)

    driver.session.transmit = counted  # type: ignore[method-assign]
    return lambda: len(calls)


def test_a_prompted_flush_leaves_no_flush_for_the_turn() -> None:
    """relayd prompts at the end of every input callback, and each of a turn's inputs had
    queued a flush of its own for the turn: the 3 copies of a keystroke and of its echo
    cost relayd 3.4 whole transmits per echo that found nothing to do (loopback, 2 UDP +
    1 TCP). The turn's queued flush runs once, and only while a flush is pending."""
    loop, client, _, _, _ = _pair()
    loop.run_soon()  # the attach probes go out
    transmits = _count_transmits(client)
    for chunk in (b"a", b"b", b"c"):
        client.send(chunk)  # three input callbacks in one turn, each prompted
        client.prompt()
    assert transmits() == 3
    loop.run_soon()
    assert transmits() == 3  # prompt took them all: the turn's flush does not transmit
    client.send(b"d")  # poked again after the last prompt: the turn flushes it, once
    loop.run_soon()
    assert transmits() == 4


def test_a_copy_that_lost_the_race_is_not_prompted() -> None:
    """A keystroke comes in once per path and only its first copy moves the stream: that one
    is flushed at the end of its callback; a later copy's flush (ACK bookkeeping, the timer)
    waits QUIET_FLUSH_DELAY, and the copies read meanwhile share it. An input after such a
    copy that does move the stream (the echo) is prompted at once: the shared list has the
    driver back."""
    poked: list[SessionDriver] = []
    loop, client, _, exit_, exit_seen = _pair(poked=poked)
    loop.run_until(lambda: loop.now >= T0 + 3 * DELAY, horizon=T0 + 1)  # the attach probes
    loop.run_soon()
    poked.clear()
    client.session.send(b"k")
    (frame,) = [f for f in client.session.transmit(loop.now)[0] if f[1] == wire.FrameType.DATA]
    transmits = _count_transmits(exit_)

    def callback_ends() -> None:  # relayd's ExitServer.prompt
        drivers = poked[:]
        poked.clear()
        for driver in drivers:
            driver.prompt()

    exit_.frame_received(frame, 0)
    callback_ends()
    assert bytes(exit_seen.data) == b"k" and transmits() == 1  # the first copy: at once
    exit_.frame_received(frame, 0)
    callback_ends()
    assert transmits() == 1  # a copy: nothing for the stream yet
    loop.run_soon()
    assert transmits() == 1  # nor at the turn's end: it waits QUIET_FLUSH_DELAY...
    exit_.frame_received(frame, 0)  # ...for the next copy, read in a turn of its own
    callback_ends()
    loop.run_soon()
    assert transmits() == 1
    loop.now += QUIET_FLUSH_DELAY
    loop.run_due()
    assert transmits() == 2  # one flush for both copies
    exit_.frame_received(frame, 0)
    callback_ends()
    exit_.send(b"e")  # the echo, in the same turn as a copy that was not prompted
    callback_ends()
    assert transmits() == 3


def test_the_stream_waits_for_no_quiet_flush() -> None:
    """Without relayd's prompt (the client): a copy's flush waits QUIET_FLUSH_DELAY, and new
    data read while it waits goes to the consumer at the end of its own turn, not then."""
    loop, client, _, exit_, exit_seen = _pair()
    loop.run_until(lambda: loop.now >= T0 + 3 * DELAY, horizon=T0 + 1)  # the attach probes
    loop.run_soon()
    transmits = _count_transmits(exit_)
    data = []
    for chunk in (b"k", b"l"):
        client.session.send(chunk)
        out = client.session.transmit(loop.now)[0]
        data += [f for f in out if f[1] == wire.FrameType.DATA]
    exit_.frame_received(data[0], 0)
    loop.run_soon()
    assert bytes(exit_seen.data) == b"k" and transmits() == 1
    exit_.frame_received(data[0], 0)  # its copy: the flush waits
    loop.run_soon()
    assert transmits() == 1 and exit_._flush_pending
    exit_.frame_received(data[1], 0)  # the next keystroke, meanwhile: at the turn's end
    loop.run_soon()
    assert bytes(exit_seen.data) == b"kl" and transmits() == 2
    loop.now += QUIET_FLUSH_DELAY
    loop.run_due()
    assert transmits() == 2  # that flush took the copy's too


def test_an_upload_read_is_not_prompted() -> None:
    """The receiving end of an upload has nothing of its own unacked, but a read of more than
    INTERACTIVE_BACKLOG of frames is a transfer's: its flush stays in the next turn."""
    loop, client, _, exit_, exit_seen = _pair(datagram=False)
    loop.run_soon()
    client.session.send(bytes(INTERACTIVE_BACKLOG * 2))
    frames = client.session.transmit(loop.now)[0]
    exit_.frames_received(frames, 0)
    exit_.prompt()
    assert not exit_seen.data  # still waiting for the turn's flush
    loop.run_soon()
    assert len(exit_seen.data) == INTERACTIVE_BACKLOG * 2


def test_a_stopped_driver_leaves_the_shared_poked_list() -> None:
    """relayd's drivers note a pending flush in one shared list that only the end of an input
    callback drains; a poke from elsewhere (a timer's flush, a target's pause or resume) stays
    until the next read of any socket. A driver relayd stops when it forgets a finished
    session leaves the list at once, and with it its session (review G6)."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    poked: list[SessionDriver] = []
    session = Session(Role.EXIT, sid, keys, T0)
    driver = SessionDriver(session, Recorder(clock=loop.time), loop.time, loop, poked=poked)
    other = SessionDriver(session, Recorder(clock=loop.time), loop.time, loop, poked=poked)
    driver.poke()
    other.poke()
    assert poked == [driver, other]
    driver.stop()
    assert poked == [other]  # another session's pending prompt stays
    driver.stop()  # twice: nothing more to remove
    assert poked == [other]


def test_a_stopped_driver_is_gone_from_the_list_and_never_runs_again() -> None:
    """A poke, the loop's flush, and another poke outside any input callback put a driver in
    relayd's list twice; `stop` takes every entry. After `stop`, a late poke (a path's
    `connection_lost`, a target's resume) neither queues a flush nor arms the core's timer
    (review H4)."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    poked: list[SessionDriver] = []
    session = Session(Role.EXIT, sid, keys, T0)
    session.add_path(0, True, T0)
    driver = SessionDriver(session, Recorder(clock=loop.time), loop.time, loop, poked=poked)
    driver.poke()
    loop.run_soon()
    loop.now += QUIET_FLUSH_DELAY
    loop.run_due()  # the loop's flush (of an input with nothing for the stream: deferred)
    assert not driver._flush_pending
    driver.poke()
    assert poked == [driver, driver]
    driver.stop()
    assert poked == []
    driver.poke()
    loop.run_soon()
    assert poked == []
    assert driver._timer is None
    assert driver._timer_at is None


def test_a_big_batch_of_frames_is_flushed_at_once() -> None:
    """libuv reads a busy socket up to 32 times per wake-up (8 MB of a TCP path): past
    FLUSH_AFTER_BYTES of frames, `frames_received` flushes now (the data goes out to the
    endpoint, the ACK to the peer) instead of at the end of the loop turn."""
    loop, client, _, exit_, exit_seen = _pair(datagram=False)  # 16 KiB frames, a 32-frame start
    loop.run_soon()
    payload = bytes(range(256)) * 1100  # 275 KiB: more than FLUSH_AFTER_BYTES of frames
    client.session.send(payload)  # frames taken by hand below, not through the link
    frames = client.session.transmit(loop.now)[0]
    assert sum(map(len, frames)) >= FLUSH_AFTER_BYTES
    exit_.frames_received(frames[:10], 0)
    assert not exit_seen.data  # under the bound: the flush waits for the end of the turn
    exit_.frames_received(frames[10:], 0)
    assert bytes(exit_seen.data) == payload  # past it: delivered at once


def test_a_transfers_reads_share_one_flush_per_bulk_delay() -> None:
    """A session taking a transfer in (more than BULK_INPUT of frames in its current window)
    flushes BULK_FLUSH_DELAY after a read, not at the end of that loop turn: the datagrams
    of a paced download trickle in one or two per wake-up, and a flush (transmit, ACK
    decision, write to the consumer) per wake-up was 40 % of the netlab client's CPU. Below
    BULK_INPUT (a shell's echoes) every turn still flushes at its end."""
    loop, client, _, exit_, exit_seen = _pair()
    loop.run_soon()
    # 60 frames, 72 KiB: what the controller sends without an ACK
    payload = (bytes(range(256)) * 300)[: 60 * client.session.max_payload()]
    client.session.send(payload)
    frames: list[bytes] = []
    sender = client.session.sender
    for _ in range(100):  # by hand, past the controller's pacing, no ACKs coming
        out = client.session.transmit(loop.now).get(0, [])
        frames += [f for f in out if f[1] == wire.FrameType.DATA]
        if len(frames) >= sender.next_seq and not sender.has_pending():
            break
        loop.now += 0.005
    reads = [frames[i : i + 2] for i in range(0, len(frames), 2)]
    fed = 0
    while reads:
        read = reads.pop(0)
        exit_.frames_received(read, 0)
        fed += sum(map(len, read))
        loop.run_soon()  # the end of the turn
        if exit_._flush_pending:
            break  # this read's flush waits
    assert fed > BULK_INPUT >= fed - sum(map(len, read))  # the first read past BULK_INPUT
    assert 0 < len(exit_seen.data) < len(payload)  # every read before it flushed at once
    for read in reads:
        exit_.frames_received(read, 0)
        loop.run_soon()
    assert exit_._flush_pending and len(exit_seen.data) < len(payload)
    loop.now += BULK_FLUSH_DELAY
    loop.run_due()
    assert bytes(exit_seen.data) == payload  # one flush took them all


def test_the_probe_echo_goes_quiet_once_its_echo_is_out() -> None:
    """relayd's probe target (`dupsession probe`, the latency tests) echoes inside the exit.
    The driver calls `on_writable` after every flush while the session takes bytes; the echo
    reopened its window there each time, and each reopening pokes a flush: relayd spun at
    100 % of a core while a probe session was open (3.9 s of CPU in a 4.5 s session), and on
    a 2-core machine the SSH relay's echo paid for it. The virtual loop fails a busy loop."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    seen = Recorder(clock=loop.time)
    client = SessionDriver(Session(Role.CLIENT, sid, keys, T0), seen, loop.time, loop)
    accepted = SimpleNamespace(hello=SimpleNamespace(target=wire.PROBE_TARGET, session_id=sid))

    def exit_driver(endpoint: ExitSession) -> SessionDriver:
        return SessionDriver(Session(Role.EXIT, sid, keys, T0), endpoint, loop.time, loop)

    exit_ = ExitSession(cast(Accepted, accepted), exit_driver, "probe", 0).driver
    client.attach(0, Link(loop, exit_), datagram=False)
    exit_.attach(0, Link(loop, client), datagram=False)
    client.send(b"keystroke")
    loop.run_until(lambda: bytes(seen.data) == b"keystroke", horizon=T0 + 1)
    assert seen.first_data_at == T0 + DELAY + DELAY  # echoed at once
    loop.run_until(lambda: loop.now >= T0 + 1, horizon=T0 + 2)  # idle: timers only


def test_the_probe_echo_freezes_and_reopens_its_window_and_loses_nothing() -> None:
    """The other half of the echo's backpressure: when its send buffer fills, the echo stops
    taking the client's bytes, and it must reopen once ACKs drain it, or every probe session
    that ever filled its buffer wedges for good (review F7: with the reopen deleted the test
    above still passes). 8 MB through windows of 512 KiB / 64 frames; every byte back, in order."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    seen = Recorder(clock=loop.time)
    config = SessionConfig(window_bytes=512 * 1024, window_frames=64)  # small: a freeze bites
    client = SessionDriver(Session(Role.CLIENT, sid, keys, T0, config), seen, loop.time, loop)
    accepted = SimpleNamespace(hello=SimpleNamespace(target=wire.PROBE_TARGET, session_id=sid))
    pauses: list[bool] = []

    def exit_driver(endpoint: ExitSession) -> SessionDriver:
        session = Session(Role.EXIT, sid, keys, T0, config)
        driver = SessionDriver(session, endpoint, loop.time, loop)
        pause = driver.pause_receiving

        def spy(paused: bool) -> None:
            pauses.append(paused)
            pause(paused)

        driver.pause_receiving = spy  # type: ignore[method-assign]
        return driver

    exit_ = ExitSession(cast(Accepted, accepted), exit_driver, "probe", 0).driver
    client.attach(0, Link(loop, exit_), datagram=False)
    exit_.attach(0, Link(loop, client), datagram=False)
    payload = os.urandom(8 * 1024 * 1024)
    sent = 0
    for _ in range(20_000):  # bounded: a wedge ends the loop with bytes missing
        if len(seen.data) >= len(payload):
            break
        if (room := client.writable()) and sent < len(payload):
            chunk = payload[sent : sent + min(room, 256 * 1024)]
            client.send(chunk)
            sent += len(chunk)
        before = (len(seen.data), loop.now)
        more = sent < len(payload)
        loop.run_until(functools.partial(_moved_on, seen, len(payload), more, client), T0 + 15)
        if (len(seen.data), loop.now) == before and not (more and client.writable()):
            break  # nothing moves and no timer is left: wedged
    assert True in pauses, "the echo never froze: the test did not reach backpressure"
    assert bytes(seen.data) == payload[: len(seen.data)]
    assert len(seen.data) == len(payload), (len(seen.data), sent, loop.now - T0, pauses[-5:])


def _moved_on(seen: Recorder, total: int, more: bool, client: SessionDriver) -> bool:
    return len(seen.data) >= total or (more and client.writable() > 0)


def test_an_exit_takes_at_most_window_bytes_while_its_target_connects() -> None:
    """Review H1: until `connect_target` connects (up to TARGET_CONNECT_TIMEOUT), the client's
    bytes wait in the exit's `_early`; its window only slid on, so they grew at line rate. The
    session is paused from its creation: `_early` stays within `window_bytes` (plus a frame)."""
    loop = VirtualLoop(T0)
    sid, keys = handshake_keys()
    config = SessionConfig(window_bytes=512 * 1024, window_frames=1024)
    client = SessionDriver(Session(Role.CLIENT, sid, keys, T0), Recorder(), loop.time, loop)
    accepted = SimpleNamespace(hello=SimpleNamespace(target="198.18.0.1:22", session_id=sid))

    def exit_driver(endpoint: ExitSession) -> SessionDriver:
        return SessionDriver(Session(Role.EXIT, sid, keys, T0, config), endpoint, loop.time, loop)

    exit_session = ExitSession(cast(Accepted, accepted), exit_driver, "198.18.0.1", 22)
    client.attach(0, Link(loop, exit_session.driver), datagram=False)
    exit_session.driver.attach(0, Link(loop, client), datagram=False)
    payload, sent = bytes(4 * 1024 * 1024), 0
    for _ in range(200):
        if (room := client.writable()) and sent < len(payload):
            client.send(payload[sent : sent + room])
            sent += min(room, len(payload) - sent)
        until = loop.now + 0.05
        loop.run_until(lambda: loop.now >= until, horizon=T0 + 100)  # noqa: B023
    early = sum(map(len, exit_session._early))
    assert sent > 2 * config.window_bytes  # the client had more to give
    assert 0 < early <= config.window_bytes + wire.MAX_STREAM_PAYLOAD


def _settled(
    features: Features | None = None,
) -> tuple[VirtualLoop, SessionDriver, SessionDriver, Recorder]:
    """A pair past its attach probes (RTT samples in), nothing pending on either side."""
    loop, client, _, exit_, exit_seen = _pair(features=features)
    loop.run_until(lambda: loop.now >= T0 + 3 * DELAY, horizon=T0 + 1)
    loop.run_soon()
    return loop, client, exit_, exit_seen


def _data(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[1] == wire.FrameType.DATA]


def test_an_ack_that_finds_a_frame_lost_is_prompted() -> None:
    """An ACK in which RACK finds a keystroke lost queues its resend (`Recovery.waiting`):
    the resend leaves at the end of the ACK's callback, not behind the turn's timers."""
    loop, client, exit_, _ = _settled()
    client.session.send(b"a")
    lost_at = loop.now
    assert len(_data(client.session.transmit(lost_at)[0])) == 1  # never arrives
    loop.run_until(lambda: loop.now >= lost_at + DELAY, horizon=T0 + 2)  # 10 ms later
    client.session.send(b"b")
    (second,) = _data(client.session.transmit(loop.now)[0])
    exit_.session.receive_frame(second, loop.now + DELAY, 0)  # a hole below it
    ack_at = exit_.session.get_timer()
    assert ack_at is not None
    acks = exit_.session.transmit(ack_at)[0]
    loop.call_at(ack_at + DELAY, lambda: None)  # its arrival (before the tail probe)
    loop.run_until(lambda: loop.now >= ack_at + DELAY, horizon=T0 + 2)
    assert client.session.sender.lost_detected == 0
    transmits = _count_transmits(client)
    for ack in acks:
        client.frame_received(ack, 0)
    client.prompt()
    assert client.session.sender.lost_detected == 1
    assert transmits() == 1  # at once
    assert not client.session.recovery.waiting()  # the resend went out in it


def test_a_reopened_receive_window_is_prompted() -> None:
    """The exit's consumer (the target) drains: the window the peer may have filled goes out
    in an ACK at once (`acks.window_update`), at the end of that callback."""
    loop, client, exit_, exit_seen = _settled()
    exit_.pause_receiving(True)
    loop.run_soon()
    client.session.send(b"k")
    (frame,) = _data(client.session.transmit(loop.now)[0])
    exit_.frame_received(frame, 0)
    loop.run_soon()  # its ACK, with the frozen window
    assert bytes(exit_seen.data) == b"k"
    transmits = _count_transmits(exit_)
    exit_.pause_receiving(False)
    assert exit_.session.acks.window_update
    exit_.prompt()
    assert transmits() == 1


def test_decoded_input_left_over_is_prompted() -> None:
    """A compressed stream is decoded DRAIN_BUDGET at a time (`Inflow.more`: input left
    to decode); an input that brings nothing else (a copy of a frame) still hands the rest
    on at the end of its callback."""
    loop, client, exit_, exit_seen = _settled(Features(compress=Compress.ON))
    client.session.send(b"keystrokes " * 100_000)  # 1.1 MB, a few KB compressed
    frames = _data(client.session.transmit(loop.now)[0])
    exit_.frames_received(frames, 0)
    loop.run_soon()  # the turn's flush: DRAIN_BUDGET more decoded and handed on
    handed = len(exit_seen.data)
    assert 0 < handed < 1_100_000  # the rest waits to be decoded
    transmits = _count_transmits(exit_)
    exit_.frame_received(frames[0], 0)  # a copy: nothing new for the stream
    exit_.prompt()
    assert transmits() == 1
    assert len(exit_seen.data) > handed


class _EarlyLoop(VirtualLoop):
    """Timers as uvloop keeps them: the delay rounded to the millisecond, from a loop clock
    read at the turn's start (here 0.3 ms stale), so a timer fires up to 0.8 ms early."""

    def call_at(self, when: float, callback: Callable[[], object]) -> Any:
        delay = round((when - self.now) * 1000) / 1000
        return super().call_at(max(self.now, self.now + delay - 0.0003), callback)


def test_an_interactive_timer_that_fires_early_waits_out_the_rest() -> None:
    """The core's timer runs no earlier than the deadline it asked for: a loop that fires
    timers early (uvloop, by up to a millisecond) gets the rest re-armed, not a flush that finds
    nothing due (0.2-0.9 of them per keystroke at relayd, ~100 us each)."""
    loop = _EarlyLoop(T0)
    sid, keys = handshake_keys()
    drivers = []
    for role in (Role.CLIENT, Role.EXIT):
        session = Session(role, sid, keys, T0)
        # a clock of its own (not loop.time): the driver converts deadlines, as with asyncio
        drivers.append(SessionDriver(session, Recorder(), lambda: loop.now, loop))
    client, exit_ = drivers
    client.attach(0, Link(loop, exit_), datagram=True)
    exit_.attach(0, Link(loop, client), datagram=True)
    fired: list[tuple[float, float]] = []  # (now, the deadline asked for)
    for driver in drivers:
        handle = driver.session.handle_timer

        def timed(
            now: float, handle: Callable[[float], None] = handle, d: SessionDriver = driver
        ) -> None:
            fired.append((now, cast(float, d.session.get_timer())))
            handle(now)

        driver.session.handle_timer = timed  # type: ignore[method-assign]
    for i in range(5):
        loop.call_at(T0 + 0.05 * i, functools.partial(client.send, b"k"))
    loop.run_until(lambda: loop.now >= T0 + 0.4, horizon=T0 + 10)
    assert len(fired) >= 5  # ACK delays and probes
    early = [(now, at) for now, at in fired if now < at]
    assert not early, early
