"""The asyncio glue around one sans-IO `Session`: transmit, one timer, events out.

Everything the core asks for happens here and nowhere else (aioquic's `QuicConnectionProtocol`
shape): endpoints call the driver, never the session. Each input method is one core call plus
the flush: `poke()` schedules one `flush()` for the end of this loop iteration, so a burst of
frames read in one go costs one transmit and one timer re-arm; a close flushes at once, so its
CLOSE frames leave before anyone tears the paths down; and a glue serving many sessions in one
loop (relayd) calls `prompt()` at the end of an input callback, so an interactive session's
stream output (`Session.has_stream_output`: events, bytes to frame, resends, decoded input, a
reopened window) does not wait behind the next turn's timers; the rest (most ACKs, a losing
copy's bookkeeping) waits for the turn's one flush. The driver owns the clock (`clock`,
monotonic seconds) and may be given a loop other than asyncio's (`loop`: tests/test_driver.py runs
it on a virtual clock), so no endpoint reads time for the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from dupsession.core import events
from dupsession.core.session import Session, SessionState
from dupsession.core.snapshot import SessionSnapshot

log = logging.getLogger(__name__)

#: Frame bytes fed in by `frames_received` after which the driver flushes at once instead of
#: at the end of the loop turn: libuv reads a busy socket up to 32 times per turn (8 MB of a
#: TCP path), and until the flush the peer gets no ACK (its window stays shut) and our
#: consumer no data. Per 256 KiB, the ACK and the write go out while the peer can still use
#: them (measured together with Sender.PENDING_LIMIT, c0fcc47; docs/BENCHMARKS.md "Loopback
#: bulk: the two ends took turns"; one variant run alone is within that section's noise).
FLUSH_AFTER_BYTES = 256 * 1024
#: A session with at most this many bytes of its stream unacknowledged (`Session.backlog`) is
#: interactive: a shell's echoes and keystrokes, not a transfer. `prompt` flushes it at the
#: end of the input callback that poked it, not in the loop's next turn, where it waited
#: behind every timer due by then: in relayd, another session's paced bursts (TURN_BURSTS per
#: path per transmit, 2-19 ms on the busy netlab), and an echo waited for that twice at the
#: exit (keystroke in, echo out): poke -> flush p99 18-24 ms there, 4-6.5 ms with `prompt`
#: (docs/BENCHMARKS.md, "Typing beside a download: interactive sessions first").
INTERACTIVE_BACKLOG = 16 * 1024
#: ...and it received at most INTERACTIVE_BACKLOG bytes of frames in its current window of
#: this long (s): the receiving end of an upload has nothing of its own unacked, but prompted
#: it flushed once per read instead of once per turn (loopback 2 UDP + 1 TCP upload: 12-15 %
#: more CPU per MB).
INTERACTIVE_WINDOW = 0.1


#: A session that received more than this many bytes of frames in its current
#: INTERACTIVE_WINDOW is taking a transfer in: its flush after a datagram path's read waits
#: BULK_FLUSH_DELAY (s) instead of running at the end of the loop turn, so the reads of that
#: time share one transmit, one ACK decision and one write to the consumer. Datagrams trickle
#: in paced (the netlab's download: 1.9 per wake-up, a flush per wake-up, 40 % of the client's
#: CPU in them); a stream path's reads come in 256 KiB already (FLUSH_AFTER_BYTES).
BULK_INPUT = 64 * 1024
BULK_FLUSH_DELAY = 0.001
#: An interactive session whose input brought nothing for the stream (`Session.
#: has_stream_output`: the copies of a keystroke that lost the race to its first copy, the
#: copies of an ACK) flushes this long (s) after the turn that read it, not at its end: the
#: copies come in turns of their own (one per path's read) and each turn's flush found nothing
#: to send (loopback typing, 4 paths: 2.6 such flushes per keystroke at relayd, ~0.9 at the
#: client, ~100 us each). What it may hold back a millisecond: an ACK due by count, a path's
#: reopened room; anything urgent that comes meanwhile flushes at once (`prompt`, the turn).
QUIET_FLUSH_DELAY = 0.001
#: Added to the rest of a timer that fired early (s): uvloop rounds a delay to the nearest
#: millisecond, so the rest plus half a millisecond never rounds below it.
_EARLY_PAD = 0.0005


class FrameSink(Protocol):
    """One path's way out: sends whole frames; reliability is not promised."""

    def send_frames(self, frames: list[bytes]) -> None: ...


class Endpoint(Protocol):
    """What a driver hands session events to (the client's stdio, the exit's target).

    An endpoint may also have `on_data_parts(parts)`: the consecutive data of one flush as
    the pieces they came in (a writer's `writelines`, one `writev`), which it gets instead of
    their join when there are several (a bulk transfer's common case: a copy of every byte
    fewer)."""

    def on_data(self, data: bytes) -> None: ...
    def on_eof(self) -> None: ...
    def on_closed(self, event: events.SessionClosed) -> None: ...
    def on_writable(self) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the driver needs of an event loop: the asyncio loop, or a virtual one in tests."""

    def call_soon(self, callback: Callable[[], object]) -> object: ...
    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable: ...
    def time(self) -> float: ...


class SessionDriver:
    def __init__(
        self,
        session: Session,
        endpoint: Endpoint,
        clock: Callable[[], float] = time.monotonic,
        loop: Scheduler | None = None,
        poked: list[SessionDriver] | None = None,
    ) -> None:
        self.session = session  #: the core; endpoints use the methods below instead
        self.endpoint = endpoint
        self._on_data_parts: Callable[[list[bytes]], None] | None = getattr(
            endpoint, "on_data_parts", None
        )
        self.sinks: dict[int, FrameSink] = {}
        self.now = clock
        self._loop: Scheduler = asyncio.get_running_loop() if loop is None else loop
        #: The loop keeps our clock (a virtual one): a deadline goes to it as it is, so a
        #: simulated timer fires at exactly the core's instant, a past one before what is due now.
        self._loop_keeps_clock = clock == self._loop.time
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        #: A flush at the end of this loop turn is queued (call_soon): one per turn, however
        #: many flushes `prompt` ran meanwhile (see `poke`).
        self._turn_flush_queued = False
        #: `prompt` left the pending flush to the turn: the input brought nothing urgent.
        self._declined = False
        #: The pending flush waits QUIET_FLUSH_DELAY: the turn's input was not urgent.
        self._quiet_pending = False
        self._quiet_queued = False  #: its call is queued (it runs then only if still pending)
        self._unflushed = 0  #: frame bytes received since the last flush
        self._input_since = float("-inf")  #: start of the current INTERACTIVE_WINDOW
        self._input_bytes = 0  #: frame bytes received in it
        #: Where `poke` notes a newly pending flush for the glue's `prompt` (relayd: every
        #: session's driver shares one list, drained at the end of each input callback).
        self._poked = poked
        self._stopped = False  #: `stop` ran: nothing of ours runs again (see `stop`)
        self.on_path_event: Callable[[events.Event], None] | None = None
        self.closed = asyncio.Event()

    # -- what endpoints ask of the session ---------------------------------------------------

    @property
    def session_id(self) -> bytes:
        return self.session.session_id

    @property
    def state(self) -> SessionState:
        return self.session.state

    def path_kinds(self) -> dict[int, bool]:
        """The session's paths: id -> whether it is a datagram path."""
        return {pid: path.datagram for pid, path in self.session.paths.items()}

    def path_echo(self, path_id: int) -> int:
        """The echo timestamp of the latest fresh ACK on `path_id` (path validation)."""
        return self.session.paths[path_id].peer_echo_us

    def challenge_frame(self, path_id: int, token: int) -> bytes | None:
        """A frame asking the peer to prove it is at a new address (sent to that address
        alone, not through the path's sink)."""
        return self.session.challenge_frame(path_id, token, self.now())

    def writable(self) -> int:
        """Bytes the session takes now; 0 means pause the source until `on_writable`."""
        return self.session.writable()

    def snapshot(self) -> SessionSnapshot:
        """The session's figures now, for status, metrics and the control socket."""
        return self.session.snapshot(self.now())

    def set_path_writable(self, path_id: int, writable: bool) -> None:
        """A stream path's socket buffer filled up or drained."""
        self.session.set_path_writable(path_id, writable)
        self.poke()

    def pause_receiving(self, paused: bool) -> None:
        """Our consumer is congested (or drained): freeze (or reopen) the advertised window."""
        self.session.pause_receiving(paused)
        self.poke()

    def remove_path(self, path_id: int) -> None:
        self.session.remove_path(path_id)
        self.poke()

    def abort(self, code: int, reason: str) -> None:
        """Close the session now; the CLOSE frames leave before this returns."""
        self.session.abort(code, reason, self.now())
        self.flush()

    def repeat_close(self) -> None:
        """Send the CLOSE again (a lost one would leave the peer waiting)."""
        self.session.repeat_close()
        self.flush()

    def attach(
        self,
        path_id: int,
        sink: FrameSink,
        datagram: bool,
        handshake_rtt: float | None = None,
        link: str | None = None,
    ) -> None:
        """Give the session a path (new, or a reconnected one replacing its old sink); `link`
        names the access link it leaves by (the core's `Path.link`)."""
        self.sinks[path_id] = sink
        self.session.add_path(path_id, datagram, self.now(), handshake_rtt, link)
        self.poke()

    def detach(self, path_id: int, sink: FrameSink) -> None:
        if self.sinks.get(path_id) is sink:
            del self.sinks[path_id]

    def frame_received(self, frame: bytes, path_id: int | None) -> int | None:
        """Feed one frame; returns the authenticated path id named inside it, if any."""
        now = self.now()
        named = self.session.receive_frame(frame, now, path_id)
        self._count_input(len(frame), now)
        self.poke()
        return named

    def _count_input(self, size: int, now: float) -> None:
        if now - self._input_since > INTERACTIVE_WINDOW:
            self._input_since, self._input_bytes = now, 0
        self._input_bytes += size

    def frames_received(self, frames: list[bytes], path_id: int) -> None:
        """Feed the frames of one read from a path whose sender is known (a bound stream, a
        path's own socket): one clock read and one flush for the batch. Nothing inside them
        can re-bind the path, so the ids they name are not returned. Past `FLUSH_AFTER_BYTES`
        since the last flush it flushes now, not at the end of the turn."""
        now = self.now()
        self.session.receive_frames(frames, now, path_id)
        read = sum(map(len, frames))
        self._count_input(read, now)
        size = self._unflushed + read
        if size >= FLUSH_AFTER_BYTES:
            self.flush()
        else:
            self._unflushed = size
            # A transfer's datagrams: one flush per BULK_FLUSH_DELAY, not one per wake-up.
            bulk = (
                self._input_bytes > BULK_INPUT
                and (path := self.session.paths.get(path_id)) is not None
                and path.datagram
            )
            self.poke(BULK_FLUSH_DELAY if bulk else 0.0)

    def send(self, data: bytes) -> None:
        self.session.send(data)
        self.poke()

    def close_stream(self) -> None:
        self.session.close_stream()
        self.poke()

    def poke(self, delay: float = 0.0) -> None:
        """Flush at the end of this loop turn, or `delay` s from now (a transfer's reads).

        A queued flush runs only if one is still pending then (`_queued_flush`): in relayd
        every input callback of a turn pokes and `prompt` flushes each at once, and each poke
        queued a full flush of its own behind them that found nothing to do: with a keystroke's
        and its echo's 3 copies (loopback, 2 UDP + 1 TCP) 3.4 per echo at relayd, ~85 us each
        (docs/BENCHMARKS.md, "Loopback echo, 3 paths: relayd's flushes per input")."""
        if self._flush_pending:
            if self._declined and self._poked is not None:
                # `prompt` let the pending flush wait and relayd's list dropped us: this new
                # input (the echo after a copy that lost the race) must reach the next prompt.
                self._declined = False
                self._poked.append(self)
            if self._quiet_pending and not self._turn_flush_queued:
                # the pending flush waits QUIET_FLUSH_DELAY: this input may be urgent, and
                # the turn's end asks (`_turn_flush`)
                self._turn_flush_queued = True
                self._loop.call_soon(self._turn_flush)
            return
        if not self._stopped:
            self._flush_pending = True
            if delay:
                self._loop.call_at(self._loop.time() + delay, self._queued_flush)
            elif not self._turn_flush_queued:
                self._turn_flush_queued = True
                self._loop.call_soon(self._turn_flush)
            if self._poked is not None:
                self._poked.append(self)

    def _turn_flush(self) -> None:
        self._turn_flush_queued = False
        if (
            self._flush_pending
            and self._interactive()
            and not self.session.has_stream_output()
            and not self._stopped
        ):
            # Nothing for the stream (a copy that lost the race, an ACK's copy): the flush
            # (its ACK bookkeeping, the timer) waits QUIET_FLUSH_DELAY, and the copies and
            # ACKs read meanwhile, in turns of their own, share it.
            self._quiet_pending = True
            if not self._quiet_queued:
                self._quiet_queued = True
                self._loop.call_at(self._loop.time() + QUIET_FLUSH_DELAY, self._quiet_flush)
            return
        self._queued_flush()

    def _quiet_flush(self) -> None:
        self._quiet_queued = False
        self._queued_flush()

    def _queued_flush(self) -> None:
        # Every input pokes, so with nothing pending a flush since (`prompt`'s, a timer's,
        # a big read's) took what this one was queued for.
        if self._flush_pending:
            self.flush()

    def prompt(self) -> None:
        """The input callback that poked us ends: flush now if a flush is pending and the
        session is interactive (`INTERACTIVE_BACKLOG`, of our stream unacknowledged and of
        frames received within `INTERACTIVE_WINDOW`: an upload's reads keep one flush per
        turn); a transfer's flush keeps its place in
        the loop's next turn. Several inputs within one callback still cost one flush. (The
        turn's queued flush then runs only if something poked after this one: `poke`.)

        Only stream bytes are urgent (`Session.has_stream_output`): the copies of a keystroke
        that lost the race to its first copy, and most ACKs, leave the flush (their ACK
        bookkeeping, the timer) to the turn, once for all of them: on loopback, 2 UDP + 1 TCP,
        such flushes were 2.7 of relayd's 3.5 prompted flushes per echo, ~100 us each."""
        if self._flush_pending and self._interactive():
            if self.session.has_stream_output():
                self.flush()
            else:
                self._declined = True

    def _interactive(self) -> bool:
        """Little of our stream unacknowledged and little input in the current window (not an
        upload's reads either): `INTERACTIVE_BACKLOG`."""
        return (
            self._input_bytes <= INTERACTIVE_BACKLOG
            and self.session.backlog() <= INTERACTIVE_BACKLOG
        )

    def flush(self) -> None:
        if self._stopped:  # a flush queued before `stop`, or a path's late event after it
            return
        self._flush_pending = self._declined = self._quiet_pending = False
        self._unflushed = 0
        session = self.session
        now = self.now()
        for path_id, frames in session.transmit(now).items():
            sink = self.sinks.get(path_id)
            if sink is not None:
                try:
                    sink.send_frames(frames)
                except OSError as exc:  # an uplink vanished: the path is just silent
                    log.debug("path %d send failed: %s", path_id, exc)
        self._dispatch_events()
        if session.writable():
            self.endpoint.on_writable()
        self._arm_timer(session.get_timer())

    def _dispatch_events(self) -> None:
        endpoint = self.endpoint
        next_event = self.session.next_event
        data: list[bytes] = []  # consecutive StreamData: one write for the whole batch
        while (event := next_event()) is not None:
            if type(event) is events.StreamData:
                data.append(event.data)
                continue
            if data:
                self._hand_data(data)
                data = []
            if isinstance(event, events.StreamEnded):
                endpoint.on_eof()
            elif isinstance(event, events.SessionClosed):
                # Send the CLOSE frames the core queued before anyone tears the paths down.
                for path_id, frames in self.session.transmit(self.now()).items():
                    sink = self.sinks.get(path_id)
                    if sink is not None:
                        with contextlib.suppress(OSError):
                            sink.send_frames(frames)
                endpoint.on_closed(event)
                self.closed.set()
            if self.on_path_event is not None and isinstance(
                event, events.PathUp | events.PathDown
            ):
                self.on_path_event(event)
        if data:
            self._hand_data(data)

    def _hand_data(self, data: list[bytes]) -> None:
        if len(data) == 1:
            self.endpoint.on_data(data[0])
        elif self._on_data_parts is not None:
            self._on_data_parts(data)
        else:
            self.endpoint.on_data(b"".join(data))

    def _arm_timer(self, when: float | None) -> None:
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            if not self._loop_keeps_clock:
                # monotonic() and loop.time() share a clock on Linux; convert anyway to be safe.
                when = self._loop.time() + max(0.0, when - self.now())
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        at, self._timer_at = self._timer_at, None
        now = self.now()
        if at is not None and now < at and not self._loop_keeps_clock and self._interactive():
            # Early: uvloop keeps timers in whole milliseconds of a loop clock read at the
            # turn's start, so a deadline fires up to ~1 ms before it is due, and the core, asked
            # then, has nothing due: a flush that sends nothing (~100 us), and the timer again.
            # Wait out the rest instead, rounded up to the loop's millisecond (loopback typing:
            # 0.2-0.9 such flushes per keystroke at relayd; "CPU per small frame"). Only an
            # interactive session's (its ACK and probe timers): a transfer's pacing wake-up
            # takes what is due within its slack early, as before.
            self._timer_at = at
            self._timer = self._loop.call_at(
                self._loop.time() + _EARLY_PAD + (at - now), self._on_timer
            )
            return
        self.session.handle_timer(now)
        self.flush()

    def stop(self) -> None:
        """Stop for good: no timer, no flush, no poke from now on. A path's `connection_lost`
        or a target's resume can still reach a stopped driver, and a flush would arm the
        core's timer again and keep the session running for nobody (review H4)."""
        self._stopped = True
        self._flush_pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        # relayd drains its shared list only at the end of an input callback, and pokes come
        # from elsewhere too (a timer's flush, a target's pause or resume): a stopped driver
        # (a session relayd forgot) leaves it now, every time it is in it, not kept with its
        # session until some read. (A poke after a flush outside an input callback appends
        # it again while the list still holds the first.)
        if self._poked is not None:
            self._poked[:] = [driver for driver in self._poked if driver is not self]
