"""ACK handling: when we owe the peer an ACK, what goes in it, and what the peer's ACK tells a path.

ACKs are per path (see docs/PROTOCOL.md): each carries that path's RTT timestamps and DATA
counters, plus the stream-wide cumulative point, selective ranges and window. Which frames an
ACK releases is the sender's business (`Sender.on_ack`); this module owns the rest.
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.addresses import TOKEN_BASE
from dupsession.core.paths import Path
from dupsession.core.receiver import Receiver

#: An echoed RTT sample outside [0, this] seconds is not a measurement (a challenge token's
#: echo, a bad clock): ignored.
MAX_RTT_SAMPLE = 10.0


class AckPending:
    """Whether received DATA (or a reopened window) needs an ACK, and from when."""

    __slots__ = ("count", "delay", "every", "sent_at", "since", "window_update")

    def __init__(self, delay: float, every: int) -> None:
        self.delay = delay  #: hold an ACK at most this long (s) after DATA needing one...
        self.every = every  #: ...or until this many frames arrived
        self.since: float | None = None
        self.count = 0
        self.window_update = False  #: the receive window reopened: tell the peer now
        self.sent_at = float("-inf")  #: when the last ACK for received DATA left

    def note(self, now: float) -> None:
        if self.since is None:
            self.since = now
        self.count += 1

    def due(self, now: float) -> bool:
        since = self.since
        return self.window_update or (
            # `deadline`'s sum, not a difference: at clock values such as 128-256 s the
            # difference fell a hair under the delay at the wake-up it asked for, and spun
            since is not None and (self.count >= self.every or now >= since + self.delay)
        )

    def rides_along(self, now: float) -> bool:
        """Whether an owed ACK goes with the DATA we send now, before its delay: only when
        the last one left at least a delay ago, so ACKs come no more often than the delay
        timer would send them (a closed-loop echo at 1 ms a round: one ACK per 4 ms, not one
        per message, each a read and a whole ACK's processing at the peer)."""
        return self.since is not None and now - self.sent_at >= self.delay

    def sent(self, now: float) -> None:
        self.sent_at = now
        self.window_update = False
        self.since = None
        self.count = 0

    def deadline(self) -> float | None:
        return None if self.since is None else self.since + self.delay


def make_ack(
    path: Path,
    now: float,
    receiver: Receiver,
    key: bytes,
    session_id: bytes,
    challenge: int | None = None,
    behind: int = 0,
    echo_recv: bool = False,
) -> bytes:
    """The next ACK for `path`: stream state plus this path's timestamps and counters. With a
    `challenge` token it goes in place of `ts`, flagged CHALLENGE (path validation).

    `behind` DATA frames go out after it in the same batch: its `data sent` leaves them out,
    since the peer measures loss (and we in-flight) on the rule that a path is FIFO: every
    DATA frame counted in an ACK was sent before it. With `echo_recv` (both ends agreed to
    ECHO_RECV) it also says how many we had received here when the timestamp it echoes came.
    """
    sent = path.data_sent - behind
    twins = path.twins_sent - path.batch_twins  # (twins come only with frames behind it)
    echo, delay, echo_count = 0, 0, path.peer_ts_recv if echo_recv else None
    if path.challenge is not None:
        # `echo recv` belongs to the latest `ts`, not to a token: none with a token's echo
        (echo, at), path.challenge, echo_count = path.challenge, None, None
        delay = max(0, int((now - at) * 1e6))
    elif path.peer_ts_us:
        echo, delay = path.peer_ts_us, max(0, int((now - path.peer_ts_at) * 1e6))
    path.ack_pseq += 1
    ts_us = int(now * 1e6) if challenge is None else challenge
    if challenge is None:  # a token is no timestamp: it must not enter the (sorted) send log
        path.ack_log.append((ts_us, sent, twins))
    ack = wire.Ack(
        path_id=path.path_id,
        pseq=path.ack_pseq,
        ts_us=ts_us,
        echo_ts_us=echo,
        echo_delay_us=delay,
        data_sent=sent,
        data_recv=path.data_recv,
        cumulative=receiver.cumulative,
        window_end=receiver.window_end(),
        ranges=receiver.ranges.lowest(wire.MAX_ACK_RANGES),
        lag_us=int(path.inbound.lag * 1e6),
        first=path.inbound.first,
        loss_bp=round(path.inbound.loss * 10000),
        challenge=challenge is not None,
        echo_recv=echo_count,
    )
    return wire.encode_ack(key, session_id, ack)


def on_path_ack(
    path: Path, ack: wire.Ack, now: float
) -> tuple[float | None, int | None, int | None]:
    """Fold the per-path part of the peer's ACK into `path`; return the RTT sample, if any,
    how many DATA frames we had sent on the path when the echoed timestamp left, and, when
    the ACK says so, the peer's `data received` (mod 2**32) when that timestamp arrived.

    The caller has checked that the ACK is fresh (`pseq` above the path's highest)."""
    path.acks_received += 1
    if path.peer_pseq >= 0 and ack.pseq > path.peer_pseq + 1:
        path.acks_lost += ack.pseq - path.peer_pseq - 1
    path.peer_pseq = ack.pseq
    path.peer_echo_us = ack.echo_ts_us
    if ack.challenge:
        path.challenge = (ack.ts_us, now)
        path.last_sent = float("-inf")  # answer a path challenge at once, on this path
    else:
        path.peer_ts_us = ack.ts_us
        path.peer_ts_at = now
        # FIFO: every copy the peer put on the path before this ACK has arrived or is lost
        # by now, so what it sent by then less this is exactly what it lost (`echo recv`).
        path.peer_ts_recv = path.data_recv
    sample, sent_by_echo, own_by_echo = None, None, None
    # A token's echo is none of our timestamps: popping up to it would empty the send log,
    # and the next echo would find nothing (no RTT sample, no loss measure for a round).
    if 0 < ack.echo_ts_us < TOKEN_BASE:
        sent_log = path.ack_log
        while sent_log and sent_log[0][0] < ack.echo_ts_us:
            sent_log.popleft()
        if sent_log and sent_log[0][0] == ack.echo_ts_us:
            _, sent_by_echo, twins = sent_log[0]
            # The peer takes a frame once per path: a keystroke's twin is no loss of ours.
            own_by_echo = sent_by_echo - twins
        sample = now - ack.echo_ts_us / 1e6 - ack.echo_delay_us / 1e6
        if 0 <= sample <= MAX_RTT_SAMPLE:
            path.rtt.add(sample)
            path.rtt_history.append(sample)
        else:
            sample = None
    echo_recv = ack.echo_recv if sent_by_echo is not None else None
    path.note_own_loss(ack.data_recv, own_by_echo, echo_recv)
    path.note_delivery(ack.data_recv)
    path.outbound.lag = ack.lag_us / 1e6
    path.outbound.first = ack.first
    # Inbound loss is measured here: on a FIFO path every DATA frame the peer sent before this
    # ACK has arrived by now unless lost. Outbound loss is the peer's own measure. The peer's
    # `data sent` counts every copy, a resend on this path too, so the copies that came here
    # again count as arrived (`data_recv` takes a frame once per path: alone, it made every
    # resend on this path whose first copy had arrived a loss).
    path.peer_report = path.update_loss(
        ack.data_sent, path.data_recv + path.repeats_recv, path.inbound, path.peer_report
    )
    path.outbound.loss = ack.loss_bp / 10000
    return sample, sent_by_echo, echo_recv
