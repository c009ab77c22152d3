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
"""

from __future__ import annotations

import hmac
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from dupsession.core import wire
from dupsession.core.acks import AckPending, make_ack, on_path_ack
from dupsession.core.compress import (
    INFLOW_BACKLOG_LIMIT,
    CompressionError,
    Inflow,
    StreamCompressor,
)
from dupsession.core.congestion import CongestionController, ModelRate, StreamWindow
from dupsession.core.errors import LocalProtocolError
from dupsession.core.events import (
    Event,
    PathDown,
    PathUp,
    SessionClosed,
    StreamData,
    StreamEnded,
)
from dupsession.core.handshake import SessionKeys
from dupsession.core.negotiate import Compress, Features
from dupsession.core.paths import EWMA_GAIN, Path, PathState
from dupsession.core.receiver import ARRIVAL_MEMORY, Payload, Receiver
from dupsession.core.recovery import Recovery
from dupsession.core.scheduler import Scheduler, make_scheduler
from dupsession.core.seal import CLIENT_TO_EXIT, EXIT_TO_CLIENT, ciphers
from dupsession.core.sender import Sender
from dupsession.core.snapshot import (
    InboundStats,
    OutboundStats,
    PathSnapshot,
    SessionSnapshot,
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tunables, each with its unit. Defaults suit interactive sessions on bad networks."""

    #: Unacked bytes the sender may hold; bounds memory and the bandwidth-delay product.
    window_bytes: int = 8 * 1024 * 1024
    #: Frames the receiver accepts beyond its cumulative point.
    window_frames: int = 8192
    #: Every path carries an ACK at least this often (s): keepalive, RTT probe, resume probe.
    probe_interval: float = 0.5
    #: A path silent this long (s) is down; never below 3 probe intervals.
    path_timeout: float = 2.0
    #: With every path down, keep the session this long (s) before giving up.
    grace_period: float = 600.0
    #: Hold an ACK at most this long (s) after unacked DATA arrives...
    ack_delay: float = 0.004
    #: ...or until this many frames arrived since the last ACK.
    ack_every: int = 16
    #: Resend timer bounds (s).
    min_rto: float = 0.010
    max_rto: float = 2.0
    #: A frame's resend delay never grows beyond this (s; or its timeout, if longer) however
    #: often it was resent: one keystroke must never wait seconds. mosh caps at 1 s.
    max_backoff: float = 0.5
    #: Whether this end may use 16 KiB frames when every live path is a stream path.
    large_frames: bool = True


class Role(StrEnum):
    CLIENT = "client"
    EXIT = "exit"


class SessionState(StrEnum):
    OPEN = "open"
    RESUMING = "resuming"  #: every path is down; within the grace period
    CLOSED = "closed"


#: At most one tombstone CLOSE answer per this many seconds after the session closed.
TOMBSTONE_INTERVAL = 0.1
#: A path that sent this many DATA frames since its last ACK sends one (a timestamp the peer
#: echoes), at most every quarter RTT: the sender of a transfer needs RTT samples often
#: (min RTT, queueing delay), and otherwise would send ACKs only once per probe interval.
RTT_PROBE_FRAMES = 4
RTT_PROBE_MIN_GAP = 0.002

# Frame-layout constants bound once: `receive_frame` and `_receive_data` run for every copy.
_MIN_FRAME = wire.PREFIX.size + wire.TAG_SIZE
_DATA_MIN = wire.DATA_HEADER.size + wire.TAG_SIZE
_TAG = wire.TAG_SIZE
_U32 = 0xFFFFFFFF
_HALF_U32 = 1 << 31
_DATAGRAM_DATA_MAX = wire.MAX_DATAGRAM_FRAME
_STREAM_DATA_MAX = _DATA_MIN + wire.MAX_STREAM_PAYLOAD
_same_tag = hmac.compare_digest
_HELLO = int(wire.FrameType.HELLO)
_DATA = int(wire.FrameType.DATA)
_RESET = int(wire.FrameType.RESET)
_SEQ_AT = struct.Struct("!Q").unpack_from
_SEQ_OFFSET = wire.PREFIX.size
_PAYLOAD_AT = wire.DATA_HEADER.size
_FIN = int(wire.DataFlags.FIN)
_UP = PathState.UP
_CLOSED = SessionState.CLOSED


class Session:
    def __init__(
        self,
        role: Role,
        session_id: bytes,
        keys: SessionKeys,
        now: float,
        config: SessionConfig | None = None,
        features: Features | None = None,
    ) -> None:
        self.role = role
        self.session_id = session_id
        self.config = config or SessionConfig()
        #: What the handshake agreed on (encryption, compression); the same at both ends.
        self.features = features or Features()
        c2e = (keys.client_to_exit, keys.payload_client_to_exit, CLIENT_TO_EXIT)
        e2c = (keys.exit_to_client, keys.payload_exit_to_client, EXIT_TO_CLIENT)
        tx, rx = (c2e, e2c) if role is Role.CLIENT else (e2c, c2e)
        self._tx_key, self._rx_key = tx[0], rx[0]
        #: DATA frames of frame number, payload (a view) and FIN, and back: keyed once.
        self._encode_data = wire.data_sealer(self._tx_key, session_id)
        self._open_data = wire.data_opener(self._rx_key)
        self._rx_mac = wire.data_mac(self._rx_key)  #: the same, inline in `_receive_run`
        #: Stream encryption when the handshake agreed on it (core/seal.py has the rules): our
        #: stream's bytes as they enter the send buffer, the peer's as they are delivered.
        self._encrypt: Callable[[bytes | memoryview], bytes] | None = None
        self._decrypt: Callable[[bytes | memoryview], bytes] | None = None
        if self.features.encrypt:
            tx_cipher, rx_cipher = ciphers(tx[1], rx[1], tx[2], rx[2])
            self._encrypt, self._decrypt = tx_cipher.update, rx_cipher.update
        #: Stream compression when agreed (core/compress.py): records out, lazy decoding in.
        compress = self.features.compress
        self._deflate = StreamCompressor(compress) if compress is not Compress.OFF else None
        self._inflow = Inflow() if compress is not Compress.OFF else None
        self._consumer_paused = False
        self._receive_paused = False
        self._drain_at = now
        self.created = now
        self.state = SessionState.OPEN
        self.paths: dict[int, Path] = {}
        self.sender = Sender(self.config.window_bytes, self.config.max_backoff)
        self.receiver = Receiver(self.config.window_frames)
        #: Bytes of frames held out of order, at most (frames counted whole: header and tag).
        self._held_limit = self.config.window_bytes
        self._events: deque[Event] = deque()
        self.acks = AckPending(self.config.ack_delay, self.config.ack_every)
        self.recovery = Recovery(self.config.min_rto, self.config.max_rto, self.config.ack_delay)
        self.scheduler: Scheduler = make_scheduler(self.features.schedule)
        self._all_down_since: float | None = now
        self._close_frame: tuple[int, str] | None = None
        #: The peer's normal CLOSE, held until our consumer has taken every byte (`_check_done`).
        self._peer_close: tuple[int, str] | None = None
        #: When our consumer last took bytes while `_peer_close` is held: the hold ends
        #: `grace_period` after that (a consumer that never drains must not keep us forever).
        self._peer_close_at = now
        self._close_queued: set[int] = set()
        self._last_tombstone = float("-inf")
        self.closed_event: SessionClosed | None = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.bad_frames = 0
        self.duplicates = 0
        #: Authenticated but stale (an ACK no newer than one seen: a replay) or DATA outside
        #: the window: dropped before any reply.
        self.stale_frames = 0
        #: A RESET carrying this token ends the session (client only; see wire.encode_reset).
        self._reset_token = keys.reset if role is Role.CLIENT else b""
        self._dup_ack_at = float("-inf")
        self._fin_event_sent = False
        self._transmitted_at = float("-inf")

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
        return ModelRate() if datagram else StreamWindow()

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

    def pause_receiving(self, paused: bool) -> None:
        """The local consumer is full: stop opening the peer's window until it drains.

        When it drains, the wider window goes out in an ACK at once: a peer that filled the
        frozen window sends nothing more, so no DATA would prompt that ACK until the next
        probe interval, and the stream would stall that long every time.
        """
        self._consumer_paused = paused
        if self._inflow is not None:
            self._inflow.paused = paused
        self._update_receive_pause(force=True)

    def _update_receive_pause(self, force: bool = False) -> None:
        """Freeze the window while the consumer is full or too much compressed input waits
        undecoded (bounded memory: the peer cannot push more than the limit past us)."""
        inflow = self._inflow
        paused = self._consumer_paused or (
            inflow is not None and inflow.backlog > INFLOW_BACKLOG_LIMIT
        )
        if paused == self._receive_paused and not force:
            return
        self._receive_paused = paused
        receiver = self.receiver
        before = receiver.advertised_end
        receiver.pause(paused)
        if not paused and receiver.window_end() > before:
            self.acks.window_update = True

    def abort(self, code: int, reason: str, now: float) -> None:
        """End the session now and tell the peer why on every path."""
        if self.state is SessionState.CLOSED:
            return
        self._finish(code, reason, by_peer=False, now=now)

    def repeat_close(self) -> None:
        """Queue our CLOSE on every path again: a shutdown sends it a few times, so one lost
        datagram does not leave the peer waiting out its grace period."""
        if self._close_frame is not None:
            self._close_queued = set(self.paths)

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

    def _receive_close(self, code: int, reason: str, now: float) -> None:
        if code != wire.CloseCode.NORMAL or not self.receiver.fin_delivered:
            self._finish(code, reason, by_peer=True, now=now)
            return
        # The peer ends once it saw our ACK of its FIN, which says "received", not "taken": a
        # full consumer may still hold bytes back (a compressed direction decodes as it
        # drains). Closing now would drop them: a truncated stream with exit code 0. So the
        # close waits for the stream's end to go out.
        self._peer_close = (code, reason)
        self._peer_close_at = now
        self._drain(now)  # closes once the consumer took the end, maybe at once
        if self.closed_event is None:
            self._check_done(now)

    def _receive_reset(self, frame: bytes, now: float) -> None:
        token = self._reset_token
        if not token or self.state is SessionState.CLOSED or not wire.reset_matches(frame, token):
            self.bad_frames += 1
            return
        reason = "the exit no longer knows this session (it restarted or dropped it)"
        self._finish(wire.CloseCode.UNKNOWN_SESSION, reason, by_peer=True, now=now)

    def _receive_data(self, frame: bytes, now: float, path_id: int | None) -> None:  # noqa: C901, PLR0912, PLR0915
        # The hot path: every copy of every frame comes through here, so helpers are inlined.
        receiver = self.receiver
        if len(frame) < _DATA_MIN:
            self.bad_frames += 1
            return
        seq = _SEQ_AT(frame, _SEQ_OFFSET)[0]
        path = self.paths.get(path_id) if path_id is not None else None
        if seq < receiver.cumulative or seq in receiver.held:  # `Receiver.is_duplicate`
            # Never hashed: it cannot change the stream. Believed only if it carries the tag
            # of the first, verified copy (constant-time compare): a forged copy must not
            # count into `data_recv`, which the peer's congestion controller trusts, nor arm
            # an ACK. Too old to be remembered: dropped uncounted.
            slot = seq % ARRIVAL_MEMORY
            first = receiver.arrivals[slot]  # `Receiver.first_arrival`, inlined
            if first is None or first[0] != seq:
                self.stale_frames += 1
                return
            _, first_at, first_path, first_tag, counted = first
            if not _same_tag(first_tag, frame[-_TAG:]):
                self.bad_frames += 1
                if path is not None:
                    path.bad_frames += 1
                return
            self.duplicates += 1
            # A later copy of a frame that just arrived is redundancy, already acked with the
            # first copy: acking it again would send an ACK on every path per copy. A copy
            # that comes about a resend timeout after the first is a resend: our ACK was lost
            # (half of our own estimate, as the sender's timer may run shorter than ours).
            # Only a copy that came on a known path (an address the glue validated), at most one
            # per half resend timeout: a replayed stale frame must not make us send ACKs.
            half_rto = self.recovery.rto_value / 2
            if (
                now - first_at >= half_rto
                and path is not None
                and now - self._dup_ack_at >= half_rto
            ):
                self._dup_ack_at = now
                acks = self.acks
                if acks.since is None:  # `AckPending.note`, inlined
                    acks.since = now
                acks.count += 1
            # Each path's count takes a frame once: a replayed genuine copy inflates nothing.
            if path is not None:
                bit = 1 << path.path_id
                if not counted & bit:
                    receiver.arrivals[slot] = (seq, first_at, first_path, first_tag, counted | bit)
                    path.data_recv += 1
                    inbound = path.inbound
                    inbound.frames += 1
                    if first_path != path.path_id:
                        inbound.lag += EWMA_GAIN * ((now - first_at) - inbound.lag)
                else:  # sent on this path again: arrived, for the loss measure only
                    path.repeats_recv += 1
            return
        if seq >= receiver.advertised_end:  # `Receiver.in_window`, inlined
            self.stale_frames += 1
            return
        # Memory is bounded in bytes, not only in frames (review A12): no peer makes a frame
        # above its path kind's maximum (the scheduler never does), and frames held out of
        # order stay within `window_bytes`; a frame beyond that is dropped unacked, like one
        # beyond the window, and resent by the sender once the hole is filled.
        size = len(frame)
        if size > (_DATAGRAM_DATA_MAX if path is not None and path.datagram else _STREAM_DATA_MAX):
            self.bad_frames += 1
            if path is not None:
                path.bad_frames += 1
            return
        if seq != receiver.cumulative and receiver.held_bytes + size > self._held_limit:
            self.stale_frames += 1
            return
        try:
            fin, payload = self._open_data(frame)
        except wire.FrameError:
            self.bad_frames += 1
            if path is not None:
                path.bad_frames += 1
            return
        acks = self.acks
        if acks.since is None:
            acks.since = now
        acks.count += 1
        if path is not None:
            if path.state is _UP and self._all_down_since is None:  # `_heard`'s common case
                path.bytes_recv += size
                path.last_recv = now
            else:
                self._heard(path, now, size)
            path.data_recv += 1
            inbound = path.inbound
            inbound.frames += 1
            inbound.first += 1
            inbound.lag -= EWMA_GAIN * inbound.lag
        delivered = receiver.accept(
            seq, fin, payload, now, -1 if path is None else path.path_id, frame[-_TAG:]
        )
        if delivered or receiver.fin_delivered:
            self._deliver(delivered, now)

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

    def _receive_run(self, frames: list[bytes], start: int, now: float, path_id: int) -> int:
        """Take the DATA frames from `frames[start]` on that are the stream's next ones, in
        order, on a live path; return the index of the first frame not taken.

        The same checks and bookkeeping as `_receive_data` (each frame's size, number, window
        and tag, first), but the run is delivered at once: one decryption, one delivery, one
        update of the path's counters and the ACK owed, instead of one per frame (at 1196-byte
        frames a bulk receiver handles 840 frames per MB: docs/BENCHMARKS.md).
        """
        receiver, path = self.receiver, self.paths.get(path_id)
        if path is None or path.state is not _UP or self._all_down_since is not None:
            return start
        if self.state is not SessionState.OPEN:
            return start
        seq = first = receiver.cumulative
        end, held = receiver.advertised_end, receiver.held
        limit = _DATAGRAM_DATA_MAX if path.datagram else _STREAM_DATA_MAX
        reset, update, digest = self._rx_mac
        view = memoryview
        payloads: list[Payload] = []
        tags: list[bytes] = []
        size, fin, at, count = 0, False, start, len(frames)
        while at < count and seq < end:
            frame = frames[at]
            length = len(frame)
            if (
                length < _DATA_MIN
                or length > limit
                or frame[1] != _DATA
                or _SEQ_AT(frame, _SEQ_OFFSET)[0] != seq
                or seq in held
            ):
                break
            # `wire.open_data` inlined (a call and a tuple less per frame): the tag over the
            # header and payload, then the payload as a view into the frame
            reset()
            update(frame[:-_TAG])
            tag = frame[-_TAG:]
            if not _same_tag(digest(_TAG), tag):
                break  # `receive_frame` counts it
            payloads.append(view(frame)[_PAYLOAD_AT:-_TAG])
            tags.append(tag)
            size += length
            seq += 1
            at += 1
            if frame[2] & _FIN:
                fin = True
                break
        taken = at - start
        if not taken:
            return start
        acks = self.acks
        if acks.since is None:
            acks.since = now
        acks.count += taken
        path.bytes_recv += size
        path.last_recv = now
        path.data_recv += taken
        inbound = path.inbound
        inbound.frames += taken
        inbound.first += taken
        inbound.lag *= (1 - EWMA_GAIN) ** taken
        payloads += receiver.accept_run(first, tags, fin, now, path.path_id)
        self._deliver(payloads, now)
        return at

    def _deliver(self, delivered: list[Payload], now: float) -> None:
        """Hand the stream's next bytes (and its end, once the FIN frame is delivered) on:
        decrypted, then decoded if compressed, then to the consumer as events. The payloads
        (views into their frames) are copied once here: joined, or decrypted."""
        receiver = self.receiver
        inflow = self._inflow
        if inflow is not None and self._decrypt is None:
            # The decoder joins each record from the payload views (a record spans frames):
            # one copy, where joining the run first made two.
            decoder = inflow.decoder
            for payload in delivered:
                decoder.feed(payload)
            self._after_feed(inflow, now)
            return
        joined = delivered[0] if len(delivered) == 1 else b"".join(delivered)  # 0: FIN alone
        if joined and self._decrypt is not None:
            # in stream order, and only bytes of frames whose tag verified: encrypt-then-MAC
            data = self._decrypt(joined)
        else:
            data = joined if type(joined) is bytes else bytes(joined)
        if inflow is not None:
            inflow.decoder.feed(data)
            self._after_feed(inflow, now)
            return
        if data:
            self.bytes_in += len(data)
            self._events.append(StreamData(data))
        if receiver.fin_delivered:
            self._emit_stream_end()
            self._check_done(now)

    def _after_feed(self, inflow: Inflow, now: float) -> None:
        # Decode only once a whole record is in (records span many frames), not per frame.
        decoder = inflow.decoder
        if inflow.more or decoder.backlog >= decoder.need or self.receiver.fin_delivered:
            self._drain(now)
        elif decoder.backlog > INFLOW_BACKLOG_LIMIT:
            self._update_receive_pause()

    def _drain(self, now: float) -> None:
        """Decode what the consumer can take now (a compressed direction); the stream ends
        once the FIN is delivered and every record is decoded."""
        inflow = self._inflow
        if inflow is None or self.state is SessionState.CLOSED:
            return
        self._drain_at = now
        taken = self.bytes_in
        try:
            for chunk in inflow.drain():
                self.bytes_in += len(chunk)
                self._events.append(StreamData(chunk))
        except CompressionError as exc:
            self._finish(wire.CloseCode.PROTOCOL_ERROR, str(exc), by_peer=False, now=now)
            return
        if self._peer_close is not None and self.bytes_in != taken:
            self._peer_close_at = now  # the consumer takes more: the hold goes on
        self._update_receive_pause()
        if self.receiver.fin_delivered and not inflow.more and not inflow.paused:
            if inflow.backlog:
                reason = "compressed stream ends inside a record"
                self._finish(wire.CloseCode.PROTOCOL_ERROR, reason, by_peer=False, now=now)
                return
            self._emit_stream_end()
            self._check_done(now)

    def _emit_stream_end(self) -> None:
        if not self._fin_event_sent:
            self._fin_event_sent = True
            self._events.append(StreamEnded())

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
        sample, sent_by_echo = on_path_ack(path, ack, now)
        path.cc.on_ack(now, ack.data_recv, sample, path.rtt.srtt, sent_by_echo)
        sender = self.sender
        sender.on_peer_window(ack.window_end)
        ambiguous_after = self.recovery.ambiguous_after(now, self.paths.values())
        if sender.on_ack(ack.cumulative, ack.ranges, ambiguous_after):
            self.recovery.last_progress = sender.progress_at = now
        # RACK runs while anything is held above a hole, whether or not this ACK freed a
        # frame: an ACK lists only the lowest 32 runs, so a long loss burst can leave many
        # ACKs that free nothing, and a frame lost twice must not wait for its probe timeout.
        if sender.largest_acked >= sender.acked_below or self.recovery.loss_time is not None:
            self.recovery.on_ack(now, sender, self.paths.values())
        self._check_done(now)
        return True

    def _heard(self, path: Path, now: float, size: int) -> None:
        path.bytes_recv += size
        if path.state is PathState.UP:
            path.last_recv = now  # `Path.heard` for a live path: the common case
        elif path.heard(now):
            if self.role is Role.EXIT and not path.rtt.samples and path.acks_received == 0:
                # First contact: the client sends at once when our WELCOME (sent as the path
                # joined) arrives, so this is one round trip plus its processing.
                path.rtt.add_provisional(now - path.added_at)
            # Back from silence (or first contact): resend everything unacked on it at once.
            path.cursor = self.sender.acked_below
            path.last_sent = float("-inf")  # probe back now, so the peer learns it too
            self._events.append(PathUp(path.path_id))
        if self._all_down_since is not None:
            self._all_down_since = None
            if self.state is SessionState.RESUMING:
                self.state = SessionState.OPEN

    def _check_done(self, now: float) -> None:
        if not self._fin_event_sent:  # their stream has not ended here yet
            return
        if self._peer_close is not None:
            code, reason = self._peer_close
            self._finish(code, reason, by_peer=True, now=now)
        elif self.sender.fin_acked:  # our FIN acked, theirs delivered
            self._finish(wire.CloseCode.NORMAL, "session ended", by_peer=False, now=now)

    def _finish(self, code: int, reason: str, by_peer: bool, now: float) -> None:
        self.state = SessionState.CLOSED
        self.closed_event = SessionClosed(code, reason, by_peer)
        self._events.append(self.closed_event)
        if not by_peer:
            self._close_frame = (code, reason)
            self._close_queued = set(self.paths)

    def _answer_after_close(self, frame: bytes, now: float, path_id: int | None) -> None:
        """A closed session answers its peer's stragglers with CLOSE, rate-limited."""
        if self._close_frame is None or now - self._last_tombstone < TOMBSTONE_INTERVAL:
            return
        if frame[1] == wire.FrameType.CLOSE:
            return  # the peer is closed too: answering would ping-pong CLOSEs forever
        try:
            wire.verify(self._rx_key, frame)
        except wire.FrameError:
            return
        self._last_tombstone = now
        target = frame[3] if frame[1] != wire.FrameType.DATA else path_id
        if target is not None:
            self._close_queued.add(target)

    # -- frames out -----------------------------------------------------------------------------

    def max_payload(self) -> int:
        """Frames must fit every path; 16 KiB ones only when no path is a datagram path.

        Every path, not only the live ones: a frame never changes once made, so a 16 KiB frame
        cut while only stream paths were up could never be resent if they then died and only a
        datagram path were left; the session would wedge, neither delivering nor timing out.
        """
        if not self.config.large_frames or any(p.datagram for p in self.paths.values()):
            return wire.MAX_DATAGRAM_PAYLOAD
        return wire.MAX_STREAM_PAYLOAD

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
        ack_due = acks.due(now)
        probe_interval = self.config.probe_interval
        for path in paths.values():
            frames = out.get(path.path_id)
            # A quiet path (a backup at rest) carries ACKs only as probes: a few hundred bytes/s.
            if (
                (ack_due and not path.quiet)
                or now - path.last_sent >= probe_interval
                or (
                    path.data_sent - path.data_sent_at_ack >= RTT_PROBE_FRAMES
                    and now - path.ack_sent_at >= max(path.rtt.srtt / 4, RTT_PROBE_MIN_GAP)
                )
            ):
                path.data_sent_at_ack, path.ack_sent_at = path.data_sent, now
                behind = len(frames) if frames else 0  # all DATA so far
                ack = make_ack(
                    path, now, self.receiver, self._tx_key, self.session_id, behind=behind
                )
                if frames is None:
                    frames = out[path.path_id] = [ack]
                else:  # first: its timestamp must not wait behind our own burst
                    frames.insert(0, ack)
            if frames:
                path.last_sent = now
                path.bytes_sent += sum(map(len, frames))
        if ack_due:
            acks.sent()
        return out

    def challenge_frame(self, path_id: int, token: int, now: float) -> bytes | None:
        """An ACK for `path_id` whose `ts` is `token`, flagged CHALLENGE: the peer answers at
        once on that path, echoing it, which proves it receives at the address the glue sent
        this to (path validation). `token` must be unpredictable and above any clock value,
        so its echo never passes for an RTT sample."""
        path = self.paths.get(path_id)
        if path is None or self.state is SessionState.CLOSED:
            return None
        return make_ack(path, now, self.receiver, self._tx_key, self.session_id, challenge=token)

    def _transmit_close(self, out: dict[int, list[bytes]]) -> None:
        if self._close_frame is None or not self._close_queued:
            return
        code, reason = self._close_frame
        for path_id in self._close_queued:
            if path_id in self.paths:
                frame = wire.encode_close(self._tx_key, self.session_id, path_id, code, reason)
                out[path_id] = [frame]
        self._close_queued = set()

    # -- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must run next (None: only on input)."""
        if self.state is SessionState.CLOSED:
            return None
        inflow = self._inflow
        drain_due = inflow is not None and inflow.more and not inflow.paused
        if self._peer_close is not None:  # nothing but the drain is left (`transmit`)
            give_up = self._peer_close_at + self.config.grace_period
            return min(self._drain_at, give_up) if drain_due else give_up
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
        wake = path.cc.wake_at(path.rtt.srtt)
        if wake is None:
            return None
        if self.scheduler.waiting(path, self.sender):
            return wake
        if resends_waiting and wake > self._transmitted_at:
            # Lost frames wait for a budget: wake when it grows, never for a path whose
            # budget was there at the last transmit and took none of them (a tier or policy
            # keeps it out): that would be a busy loop.
            return wake
        return None

    def _path_timeout(self) -> float:
        return max(self.config.path_timeout, 3 * self.config.probe_interval)

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._peer_close is not None:
            grace = self.config.grace_period
            if now - self._peer_close_at >= grace:  # our consumer took nothing for that long
                reason = f"the peer closed; our consumer took nothing for {grace:.0f} s"
                self._finish(wire.CloseCode.TIMEOUT, reason, by_peer=False, now=now)
            return
        timeout = self._path_timeout()
        for path in self.paths.values():
            if (
                path.state is PathState.UP
                and path.last_recv is not None
                and now - path.last_recv >= timeout
            ):
                path.state = PathState.DOWN
                self._events.append(PathDown(path.path_id))
        if not any(p.state is PathState.UP for p in self.paths.values()):
            if self._all_down_since is None:
                self._all_down_since = now
            if self.paths and any(p.last_recv is not None for p in self.paths.values()):
                self.state = SessionState.RESUMING
            if now - self._all_down_since >= self.config.grace_period:
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
