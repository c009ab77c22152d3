"""The session core: one duplicated, ordered byte stream over many paths. Sans-IO.

The I/O glue drives it the aioquic way, always passing `now` (seconds, monotonic):

    session.receive_frame(frame, now, path_id)   # every frame from any path
    session.receive_frames(frames, now, path_id) # or one read's frames from a known path
    session.send(data) / session.close_stream()  # bytes from the local source
    for path_id, frames in session.transmit(now).items(): ...   # send these
    while (event := session.next_event()) is not None: ...      # StreamData, ...
    timer = session.get_timer(); at that time: session.handle_timer(now)

House rules:
- A frame that fails its tag is counted and dropped; it never changes state or gets an answer.
- Acks go on every path; which DATA goes on which path is the scheduler's (`scheduler`).
- Resends follow the best live path's RTT, not the worst (`recovery`); a path that comes back
  to life is rewound to the oldest unacked frame, so a resume costs one round trip.
- With no live path the session waits `grace_period`, then closes with `CloseCode.TIMEOUT`.

The session itself only dispatches frames to its parts and runs the lifecycle: the sender and
receiver (`sender`, `receiver`), ACKs (`acks`), recovery (`recovery`), one congestion
controller per path (`congestion`) and the scheduler. Its timer is the earliest of theirs.
`Session` is assembled from the parts that share its state (`session_base`): the DATA
receive path (`receive_data`), delivery to our consumer (`delivery`) and the close lifecycle
(`closing`); this module keeps dispatch, paths, transmit, timers and the snapshot.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from functools import cached_property

from dupsession.core import wire
from dupsession.core.acks import make_ack, on_path_ack
from dupsession.core.closing import Closing
from dupsession.core.congestion import ModelRate
from dupsession.core.controller import CongestionController
from dupsession.core.errors import LocalProtocolError
from dupsession.core.events import Event, PathDown
from dupsession.core.paths import Path, PathState
from dupsession.core.probe_turns import ProbeTurns
from dupsession.core.receive_data import ReceiveData
from dupsession.core.session_base import Role, SessionConfig, SessionState
from dupsession.core.snapshot import (
    InboundStats,
    OutboundStats,
    PathSnapshot,
    SessionSnapshot,
)
from dupsession.core.stream_window import StreamWindow

__all__ = ["Role", "Session", "SessionConfig", "SessionState"]


#: A path that sent this many DATA frames since its last ACK sends one (a timestamp the peer
#: echoes), at most every quarter RTT: the sender of a transfer needs RTT samples often
#: (min RTT, queueing delay), and otherwise would send ACKs only once per probe interval.
RTT_PROBE_FRAMES = 4
RTT_PROBE_MIN_GAP = 0.002
#: A stream path with no news of its own still takes a due ACK once its last ACK is this many
#: of its smoothed RTTs old: its RTT samples decide whether bulk may use it (schedule_paths;
#: every due ACK there kept tests/sim/test_one_flow_per_link.py's goodput; on bccc538's base a
#: quarter RTT fell just under it, 0.899 of 0.9). Since 06c97c9 a quarter and a half pass that
#: test too (review J8): the eighth is a choice kept, not a proven need.
STREAM_ACK_GAP_RTTS = 0.125


def _stream_path_has_news(
    path: Path, now: float, frames: list[bytes] | None, window_update: bool
) -> bool:
    """Whether a due ACK goes on this stream path (every datagram path takes one): it took
    DATA since its last ACK, carries ours now (`frames`), the window reopened, or its last ACK
    is STREAM_ACK_GAP_RTTS old. A stream path loses nothing, so its copy of an ACK the
    datagram paths carry repeats their news, and each copy costs the peer a read and a whole
    ACK's processing (relayd's netlab download at 5 % loss: ACK input ~40 % of its CPU, half
    of it the TCP paths' copies; bccc538)."""
    return bool(
        window_update
        or frames
        or path.data_recv != path.data_recv_at_ack
        or now - path.ack_sent_at >= path.rtt.srtt * STREAM_ACK_GAP_RTTS
    )


# Frame-layout constants bound once: `receive_frame` runs for every copy.
_MIN_FRAME = wire.PREFIX.size + wire.TAG_SIZE
_DATA_MIN = wire.DATA_HEADER.size + wire.TAG_SIZE
_U32 = 0xFFFFFFFF
_HALF_U32 = 1 << 31
_HELLO = int(wire.FrameType.HELLO)
_DATA = int(wire.FrameType.DATA)
_RESET = int(wire.FrameType.RESET)
_SEQ_AT = struct.Struct("!Q").unpack_from
_SEQ_OFFSET = wire.PREFIX.size
_CLOSED = SessionState.CLOSED


class Session(ReceiveData, Closing):
    # -- paths ---------------------------------------------------------------------------------

    def add_path(
        self,
        path_id: int,
        datagram: bool,
        now: float,
        handshake_rtt: float | None = None,
        link: str | None = None,
    ) -> Path:
        """Register a path, or re-register a reconnected one. It carries data at once and is
        probed every interval.

        `handshake_rtt` is the HELLO-to-WELCOME time the client measured on this path: it seeds
        the RTT so the first frames are not on the no-sample timer (max_rto / 2 = 1 s). The exit
        takes its own seed from the first frame heard after the path joined (see `_heard`).
        `link` names the access link the path leaves by (`Path.link`).
        """
        path = self.paths.get(path_id)
        if path is None:
            path = Path(path_id, datagram, cursor=self.sender.acked_below, added_at=now)
            path.cc = self._controller(datagram)
            path.tier = self.features.schedule.tier_of(path_id)
            if handshake_rtt is not None:
                path.rtt.add_provisional(handshake_rtt)
            self.paths[path_id] = path
        else:
            # A reconnected path: probe at once so the peer binds the new connection to it.
            if datagram != path.datagram:
                path.cc = self._controller(datagram)
            path.datagram = datagram
            path.last_sent = float("-inf")
            path.writable = True
            if not datagram:  # a new connection: whatever the old one held may be lost
                path.cursor = self.sender.acked_below
                # ...so it no longer fills the window: kept until the first echo on the new
                # connection showed it lost, it held the path back for a round trip (C9)
                path.cc.write_off()
        path.link = link
        return path

    def _controller(self, datagram: bool) -> CongestionController:
        return ModelRate(self._probe_turns) if datagram else StreamWindow()

    @cached_property
    def _probe_turns(self) -> ProbeTurns:
        """Shared by the session's datagram paths: they probe in turns (core/probe_turns.py)."""
        return ProbeTurns()

    def remove_path(self, path_id: int) -> None:
        self.paths.pop(path_id, None)

    def set_path_writable(self, path_id: int, writable: bool) -> None:
        """Stream-path backpressure from the glue (socket buffer above its high-water mark)."""
        path = self.paths.get(path_id)
        if path is not None:
            path.writable = writable

    # -- the local byte stream -------------------------------------------------------------------

    def writable(self) -> int:
        """Bytes `send` takes now; 0 means pause the source (bounded memory, backpressure)."""
        return self.sender.writable() if self.state is not SessionState.CLOSED else 0

    def backlog(self) -> int:
        """Bytes of our stream not acknowledged yet (unacked or not framed): a shell's echoes
        keep it near 0, a download near the window."""
        return self.sender.backlog()

    def has_stream_output(self) -> bool:
        """Whether a transmit now moves the stream: events for our consumer (its data, its
        end, a path's change, the close), bytes of ours to frame, resends queued, decoded
        input left to hand on, a reopened window to announce. The glue flushes these at once
        (`SessionDriver.prompt`); an input that brings none of them (the copy of a frame that
        came first on another path, most ACKs) leaves its flush to the loop turn."""
        inflow = self._inflow
        return bool(
            self._events
            or self.sender.has_pending()
            or self.recovery.waiting()
            or self.acks.window_update
            or (inflow is not None and inflow.more)
        )

    def send(self, data: bytes) -> None:
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError("session is closed")
        self.bytes_out += len(data)
        push, encrypt = self.sender.push, self._encrypt
        if self._deflate is not None:  # before framing and encryption: copies stay identical
            for part in self._deflate.encode_parts(data):
                push(part if encrypt is None else encrypt(part))
            return
        # before framing: frames are cut from ciphertext, so every copy is the same bytes
        push(data if encrypt is None else encrypt(data))

    def close_stream(self) -> None:
        """Half-close: a FIN follows the last byte; the peer's direction stays open."""
        if self.state is not SessionState.CLOSED:
            self.sender.close()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- frames in ----------------------------------------------------------------------------

    def receive_frame(self, frame: bytes, now: float, path_id: int | None = None) -> int | None:
        """Process one frame from the network.

        `path_id` is the path it came on when the glue knows it (a socket of its own); ACK and
        CLOSE frames name their path inside the tag, and that id is returned so the glue can
        move the path's reply address to the frame's source (roaming). Invalid frames are
        counted and dropped; nothing is ever raised at the network.
        """
        if len(frame) < _MIN_FRAME or frame[1] == _HELLO:
            self.bad_frames += 1
            return None
        ftype = frame[1]
        if ftype == _RESET:
            self._receive_reset(frame, now)
            return None
        if self.state is SessionState.CLOSED:
            self._answer_after_close(frame, now, path_id)
            return None
        if ftype == _DATA:
            self._receive_data(frame, now, path_id)
            return None
        try:
            body = wire.verify(self._rx_key, frame)
            if ftype == wire.FrameType.ACK:
                ack = wire.decode_ack(body)
            elif ftype == wire.FrameType.CLOSE:
                self._receive_close(*wire.decode_close(body), now)
                return frame[3]
            else:
                raise wire.FrameError(f"unexpected frame type {ftype}")
        except wire.FrameError:
            self.bad_frames += 1
            if path_id is not None and path_id in self.paths:
                self.paths[path_id].bad_frames += 1
            return None
        if not self._receive_ack(ack, len(frame), now):
            return None
        return ack.path_id

    def receive_frames(self, frames: list[bytes], now: float, path_id: int) -> None:
        """`receive_frame` for the frames of one read from a known path, in their order.

        A bulk transfer's common case, the stream's next frames in order, is taken as one run
        (`_receive_run`); any other frame ends the run and goes through `receive_frame`.
        """
        at, count = 0, len(frames)
        receiver, receive_frame = self.receiver, self.receive_frame
        receive_data = self._receive_data
        while at < count:
            frame = frames[at]
            if len(frame) >= _DATA_MIN and _SEQ_AT(frame, _SEQ_OFFSET)[0] == receiver.cumulative:
                at = self._receive_run(frames, at, now, path_id)
                if at >= count:
                    break
                frame = frames[at]
            # not the stream's next frame (a copy that came first on another path, an ACK):
            # one at a time, without setting up a run for it; a DATA frame (a copy, mostly)
            # straight to `receive_frame`'s DATA case
            if len(frame) >= _DATA_MIN and frame[1] == _DATA and self.state is not _CLOSED:
                receive_data(frame, now, path_id)
            else:
                receive_frame(frame, now, path_id)
            at += 1

    def _receive_ack(self, ack: wire.Ack, size: int, now: float) -> bool:
        """Apply an authenticated ACK; False when it is stale (dropped, counted).

        Freshness is the per-path `pseq`: only an ACK newer than every one accepted on its path
        counts (WireGuard's rule), so a captured ACK replayed later, from anywhere, changes
        nothing here and never moves the path's reply address in the glue.
        """
        path = self.paths.get(ack.path_id)
        if path is None:
            return True  # a path id not joined yet: the glue attaches it, then feeds it again
        last = path.peer_pseq
        if last >= 0:
            # `pseq` is 32 bits on the wire: compared in serial-number arithmetic and unwrapped,
            # or after 2**32 ACKs on a path every ACK would look stale (review A10).
            ahead = (ack.pseq - last) & _U32
            if ahead == 0 or ahead >= _HALF_U32:
                self.stale_frames += 1
                return False
            if ack.pseq != last + ahead:
                ack = replace(ack, pseq=last + ahead)
        self._heard(path, now, size)
        sender = self.sender
        reopened = sender.on_peer_window(ack.window_end, ack.cumulative)
        if reopened:  # what the pause dropped is no loss to any path's controller
            for each in self.paths.values():
                each.cc.on_peer_resumed()
        sample, sent_by_echo, echo_recv = on_path_ack(path, ack, now)
        path.cc.on_ack(now, ack.data_recv, sample, path.rtt.srtt, sent_by_echo, echo_recv)
        ambiguous_after = self.recovery.ambiguous_after(now, self.paths.values())
        if sender.on_ack(ack.cumulative, ack.ranges, ambiguous_after):
            self.recovery.last_progress = sender.progress_at = now
        if reopened:  # the peer's consumer resumed: what its pause dropped goes now
            self.recovery.on_window_reopened(now, sender, self.paths.values())
        # RACK runs while anything is held above a hole, whether or not this ACK freed a
        # frame: an ACK lists only the lowest 32 runs, so a long loss burst can leave many
        # ACKs that free nothing, and a frame lost twice must not wait for its probe timeout.
        if sender.largest_acked >= sender.acked_below or self.recovery.loss_time is not None:
            self.recovery.on_ack(now, sender, self.paths.values())
        self._check_done(now)
        return True

    # -- frames out -----------------------------------------------------------------------------

    def max_payload(self) -> int:
        """Frames must fit every path; 16 KiB ones (64 KiB with JUMBO) only when no path is a
        datagram path.

        Every path, not only the live ones: a frame never changes once made, so a 16 KiB frame
        cut while only stream paths were up could never be resent if they then died and only a
        datagram path were left; the session would wedge, neither delivering nor timing out.
        """
        if not self.config.large_frames or any(p.datagram for p in self.paths.values()):
            return wire.MAX_DATAGRAM_PAYLOAD
        return self._stream_payload

    def rto(self) -> float:
        """Resend timeout from the *best* live path: a slow path never delays recovery."""
        return self.recovery.rto(self.paths.values())

    def transmit(self, now: float) -> dict[int, list[bytes]]:
        """Frames to send now, per path id. Call after every input and on every timer."""
        out: dict[int, list[bytes]] = {}
        if self.state is SessionState.CLOSED:
            self._transmit_close(out)
            return out
        if self._inflow is not None and (self._inflow.more or self.receiver.fin_delivered):
            self._drain(now)  # what the consumer could not take before, or a budget's rest
            if self.state is SessionState.CLOSED:  # type: ignore[comparison-overlap]  # _drain may close
                self._transmit_close(out)
                return out
        if self._peer_close is not None:
            return out  # the peer is gone: only our consumer's drain is left to do
        sender, recovery, paths = self.sender, self.recovery, self.paths
        if sender.has_pending():
            sender.make_frames(self.max_payload(), self._encode_data)
        rto = recovery.rto_value = recovery.rto(paths.values())
        resend = recovery.take_resends(sender)
        scheduler = self.scheduler
        self._transmitted_at = now
        out = scheduler.schedule(now, paths.values(), sender, resend, rto)
        recovery.spread = scheduler.reorder_spread
        recovery.keep_waiting(resend)
        acks = self.acks
        # An owed ACK goes with the DATA we send now rather than alone on its delay timer
        # (QUIC's and TCP's piggyback) when the last one left a delay ago (`rides_along`):
        # the same ACKs on the same paths, a few ms sooner, and the timer's own wake-up and
        # flush, and the peer's separate reads of them, are gone (a keystroke's echo at the
        # exit went bare and its ACK followed 4 ms later on every path: a flush here, up to a
        # read and a flush per path there; docs/BENCHMARKS.md, "CPU per small frame").
        ack_due = acks.due(now) or (acks.rides_along(now) and any(out.values()))
        window_update = acks.window_update
        probe_interval = self.config.probe_interval
        for path in paths.values():
            frames = out.get(path.path_id)
            # A quiet path (a backup at rest) carries ACKs only as probes: a few hundred bytes/s.
            if (
                (
                    ack_due
                    and not path.quiet
                    and (path.datagram or _stream_path_has_news(path, now, frames, window_update))
                )
                or now >= path.last_sent + probe_interval  # (`get_timer`'s sum: a float
                # difference a hair under the interval sent nothing at the wake it asked for)
                or (
                    path.data_sent - path.data_sent_at_ack >= RTT_PROBE_FRAMES
                    and now - path.ack_sent_at >= max(path.rtt.srtt / 4, RTT_PROBE_MIN_GAP)
                )
            ):
                path.data_sent_at_ack, path.ack_sent_at = path.data_sent, now
                path.data_recv_at_ack = path.data_recv
                behind = len(frames) if frames else 0  # all DATA so far
                ack = self._make_ack(path, now, behind=behind)
                if frames is None:
                    frames = out[path.path_id] = [ack]
                else:  # first: its timestamp must not wait behind our own burst
                    frames.insert(0, ack)
            path.batch_twins = 0
            if frames:
                path.last_sent = now
                path.bytes_sent += sum(map(len, frames))
        if ack_due:
            acks.sent(now)
        return out

    def challenge_frame(self, path_id: int, token: int, now: float) -> bytes | None:
        """An ACK for `path_id` whose `ts` is `token`, flagged CHALLENGE: the peer answers at
        once on that path, echoing it, which proves it receives at the address the glue sent
        this to (path validation). `token` must be unpredictable and above any clock value,
        so its echo never passes for an RTT sample."""
        path = self.paths.get(path_id)
        if path is None or self.state is SessionState.CLOSED:
            return None
        return self._make_ack(path, now, challenge=token)

    def _make_ack(
        self, path: Path, now: float, behind: int = 0, challenge: int | None = None
    ) -> bytes:
        """`acks.make_ack` with this session's stream, keys and agreed features."""
        return make_ack(
            path,
            now,
            self.receiver,
            self._tx_key,
            self.session_id,
            challenge=challenge,
            behind=behind,
            echo_recv=self.features.echo_recv,
        )

    # -- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must run next (None: only on input)."""
        if self.state is SessionState.CLOSED:
            return None
        inflow = self._inflow
        drain_due = inflow is not None and inflow.more and not inflow.paused
        if self._peer_close is not None:  # nothing but the drain is left (`transmit`)
            return self._held_close_timer(drain_due)
        cfg = self.config
        times: list[float] = []
        ack_at = self.acks.deadline()
        if ack_at is not None:
            times.append(ack_at)
        if any(p.state is PathState.UP for p in self.paths.values()):
            deadline = self.recovery.deadline(self.sender, self.paths.values())
            if deadline is not None:
                times.append(deadline)
            wake = self.scheduler.wake_at()
            if wake is not None:
                times.append(wake)
        timeout = self._path_timeout()
        resends_waiting = self.recovery.waiting()
        for path in self.paths.values():
            times.append(path.last_sent + cfg.probe_interval)
            if path.state is PathState.UP and path.last_recv is not None:
                times.append(path.last_recv + timeout)
            wake = self._pacing_wake(path, resends_waiting)
            if wake is not None:
                times.append(wake)
        if self._all_down_since is not None:
            times.append(self._all_down_since + cfg.grace_period)
        if drain_due:
            times.append(self._drain_at)  # decodable input waits: the next transmit drains it
        return min(times) if times else None

    def _pacing_wake(self, path: Path, resends_waiting: bool) -> float | None:
        """When the path's controller lets it send what waits for it, if anything does."""
        if path.state is PathState.DOWN or not path.writable:
            return None  # `transmit` skips a down or full path: its budget never refills
        # asked only when something waits: `wake_at` is pure, and the common answer is that
        # nothing does (an idle session's every timer: ~1/4 of get_timer's cost on 4 paths)
        if self.scheduler.waiting(path, self.sender):
            return path.cc.wake_at(path.rtt.srtt)
        if resends_waiting:
            wake = path.cc.wake_at(path.rtt.srtt)
            if wake is not None and wake > self._transmitted_at:
                # Lost frames wait for a budget: wake when it grows, never for a path whose
                # budget was there at the last transmit and took none of them (a tier or
                # policy keeps it out): that would be a busy loop.
                return wake
        return None

    def _path_timeout(self) -> float:
        return max(self.config.path_timeout, 3 * self.config.probe_interval)

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._peer_close is not None:
            self._held_close_expired(now)
            return
        timeout = self._path_timeout()
        for path in self.paths.values():
            if (
                path.state is PathState.UP
                and path.last_recv is not None
                and now >= path.last_recv + timeout  # (`get_timer`'s sum, as above)
            ):
                path.state = PathState.DOWN
                self._events.append(PathDown(path.path_id))
        if not any(p.state is PathState.UP for p in self.paths.values()):
            if self._all_down_since is None:
                self._all_down_since = now
            if self.paths and any(p.last_recv is not None for p in self.paths.values()):
                self.state = SessionState.RESUMING
            if now >= self._all_down_since + self.config.grace_period:  # (likewise)
                self._finish(
                    wire.CloseCode.TIMEOUT,
                    f"no path alive for {self.config.grace_period:.0f} s",
                    by_peer=False,
                    now=now,
                )
                return
        else:
            self.recovery.on_timer(now, self.sender, self.paths.values())

    # -- observation ------------------------------------------------------------------------------

    def snapshot(self, now: float) -> SessionSnapshot:
        """The session at `now`, for status views, metrics and tests (`core/snapshot.py`)."""
        return SessionSnapshot(
            session_id=self.session_id.hex(),
            role=str(self.role),
            state=str(self.state),
            age=now - self.created,
            bytes_out=self.bytes_out,
            bytes_in=self.bytes_in,
            unacked_bytes=self.sender.unacked_bytes,
            retransmissions=self.sender.retransmissions,
            duplicates=self.duplicates,
            bad_frames=self.bad_frames,
            stale_frames=self.stale_frames,
            rto=self.rto(),
            encrypted=self.features.encrypt,
            compress=str(self.features.compress),
            policy=str(self.features.schedule.policy),
            best_k=self.features.schedule.best_k,
            compressed_out=None if self._deflate is None else self._deflate.bytes_out,
            compressing=None if self._deflate is None else self._deflate.compressing,
            paths=tuple(
                PathSnapshot(
                    id=p.path_id,
                    kind="datagram" if p.datagram else "stream",
                    tier=str(p.tier),
                    state=str(p.state),
                    rtt=p.rtt.srtt if p.rtt.samples else None,
                    rtt_min=p.rtt.min_rtt if p.rtt.samples else None,
                    rtt_recent=tuple(p.rtt_history),
                    rtt_buckets=tuple(p.rtt.buckets),
                    rtt_sum=p.rtt.total,
                    rtt_count=p.rtt.samples,
                    bytes_sent=p.bytes_sent,
                    bytes_recv=p.bytes_recv,
                    acks_lost=p.acks_lost,
                    acks_received=p.acks_received,
                    congestion=p.cc.snapshot(),
                    inbound=InboundStats(
                        frames=p.inbound.frames,
                        first=p.inbound.first,
                        lag=p.inbound.lag,
                        loss=p.inbound.loss,
                    ),
                    outbound=OutboundStats(
                        first=p.outbound.first,
                        lag=p.outbound.lag,
                        loss=p.outbound.loss,
                    ),
                    link=p.link,
                )
                for p in self.paths.values()
            ),
        )
