"""The close lifecycle: our CLOSE (abort, repeated on shutdown), the peer's CLOSE and RESET,
the peer's normal CLOSE held until our consumer took the stream's end (and its grace, when
the consumer takes nothing), and the rate-limited CLOSE a closed session answers with.
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.delivery import Delivery
from dupsession.core.session_base import SessionState

#: At most one tombstone CLOSE answer per this many seconds after the session closed.
TOMBSTONE_INTERVAL = 0.1


class Closing(Delivery):
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

    def _held_close_timer(self, drain_due: bool) -> float:
        """The timer while the peer's CLOSE is held: the drain's next turn, if one is due, or
        the end of the grace the consumer has to take something."""
        give_up = self._peer_close_at + self.config.grace_period
        return min(self._drain_at, give_up) if drain_due else give_up

    def _held_close_expired(self, now: float) -> None:
        """End a held peer CLOSE once our consumer took nothing for the grace period."""
        grace = self.config.grace_period
        if now >= self._peer_close_at + grace:  # our consumer took nothing for that long
            # (`_held_close_timer`'s sum: a float difference a hair under it spun the timer)
            reason = f"the peer closed; our consumer took nothing for {grace:.0f} s"
            self._finish(wire.CloseCode.TIMEOUT, reason, by_peer=False, now=now)

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

    def _transmit_close(self, out: dict[int, list[bytes]]) -> None:
        if self._close_frame is None or not self._close_queued:
            return
        code, reason = self._close_frame
        for path_id in self._close_queued:
            if path_id in self.paths:
                frame = wire.encode_close(self._tx_key, self.session_id, path_id, code, reason)
                out[path_id] = [frame]
        self._close_queued = set()
