"""What every part of the session shares: its configuration, role and states, the state
itself (`SessionBase.__init__`), and the moves any part may make: hear from a path
(`_heard`), end the session (`_check_done`, `_finish`).

The session is one class built from parts that each own one concern, each in its own module
and each a subclass of this one: delivery to our consumer (`delivery`), the DATA receive path
(`receive_data`), the close lifecycle (`closing`), and `Session` (`session`), which dispatches
frames, runs paths, transmits and keeps the timer. One instance, one `self`: the hot receive
path reads its state as attributes, as it did when the parts were one class.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dupsession.core import wire
from dupsession.core.acks import AckPending
from dupsession.core.compress import Inflow, StreamCompressor
from dupsession.core.events import Event, PathUp, SessionClosed
from dupsession.core.handshake import SessionKeys
from dupsession.core.negotiate import Compress, Features
from dupsession.core.paths import Path, PathState
from dupsession.core.receiver import Receiver
from dupsession.core.recovery import Recovery
from dupsession.core.scheduler import Scheduler, make_scheduler
from dupsession.core.seal import CLIENT_TO_EXIT, EXIT_TO_CLIENT, ciphers
from dupsession.core.sender import Sender


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
    #: Whether this end may cut large stream-path frames (16 KiB payloads, 65 499 bytes with
    #: JUMBO) while every path is a stream path.
    large_frames: bool = True


class Role(StrEnum):
    CLIENT = "client"
    EXIT = "exit"


class SessionState(StrEnum):
    OPEN = "open"
    RESUMING = "resuming"  #: every path is down; within the grace period
    CLOSED = "closed"


class SessionBase:
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
        #: The opener's tag check alone, for `_receive_run` (it keeps the tag, not a tuple).
        self._data_tag = wire.data_tag_check(self._rx_key)
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
        self._consumer_paused = self._receive_paused = False
        #: Payload bytes delivered since the receive window froze: while it is frozen, in-order
        #: frames are bounded in bytes too (`_held_limit`), not only by the frozen frame end.
        self._paused_bytes = 0
        self._drain_at = now
        self.created = now
        self.state = SessionState.OPEN
        self.paths: dict[int, Path] = {}
        self.sender = Sender(self.config.window_bytes, self.config.max_backoff)
        self.receiver = Receiver(self.config.window_frames)
        #: Bytes of frames held out of order, at most (frames counted whole: header and tag).
        self._held_limit = self.config.window_bytes
        #: Largest stream-path DATA payload we cut and take (JUMBO agreed or not), and frame.
        self._stream_payload = (
            wire.MAX_JUMBO_PAYLOAD if self.features.jumbo else wire.MAX_STREAM_PAYLOAD
        )
        self._stream_data_max = wire.DATA_HEADER.size + wire.TAG_SIZE + self._stream_payload
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
