"""One path's state as the session core sees it: liveness, RTT, loss, who-arrived-first.

A path is an unreliable, unordered frame pipe (anyio's `UnreliableObjectStream` contract):
the core never assumes a path delivers anything; it only measures what the path does.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from dupsession.core.controller import CongestionController
from dupsession.core.policy import Tier

#: RTT assumed before the first sample (seconds); high enough not to fire spurious resends.
INITIAL_RTT = 0.3
#: Samples kept for the status view's spread (sparkline / histogram).
RTT_HISTORY = 64
#: Upper bounds (s) of the RTT histogram buckets exported as metrics; the last is +Inf.
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))
#: Our recent ACK timestamps remembered per path, to match the peer's echoes.
ACK_LOG = 64
#: Weight of a new sample in the loss and lag moving averages.
EWMA_GAIN = 1 / 16


class PathState(StrEnum):
    PROBING = "probing"  #: configured, nothing heard back yet
    UP = "up"
    DOWN = "down"  #: was up, silent for longer than the path timeout


class RttEstimator:
    """RFC 6298 smoothing; `min_rtt` is kept because the scheduler ranks paths by it."""

    __slots__ = (
        "buckets",
        "latest",
        "min_rtt",
        "provisional",
        "rttvar",
        "samples",
        "srtt",
        "total",
    )

    def __init__(self) -> None:
        self.buckets = [0] * len(RTT_BUCKETS)  #: per-bucket (not cumulative) sample counts
        self.total = 0.0  #: sum of all samples, for the histogram's _sum
        self.srtt = INITIAL_RTT
        self.rttvar = INITIAL_RTT / 2
        self.min_rtt = float("inf")
        self.latest = 0.0
        self.samples = 0
        #: The estimate rests on a handshake sample only (an upper bound: it includes the
        #: peer's processing); the first measured sample replaces it rather than averaging.
        self.provisional = False

    def add_provisional(self, sample: float) -> None:
        """Seed the estimate from the handshake so the first frames are not on the 1 s
        default timer; kept out of the histogram and `min_rtt`."""
        if self.samples == 0 and sample > 0:
            self.srtt = sample
            self.rttvar = sample / 2
            self.provisional = True

    def timeout(self, ack_delay: float) -> float:
        """When an ACK for a frame sent now is overdue (s from now): srtt + 4·rttvar + the
        peer's ACK delay, with the variance term at most one srtt (at least 1 ms, the timer
        granularity), so never beyond 2·srtt + ack delay: RACK-TLP's probe timeout (RFC 8985,
        7.2).

        The first sample sets rttvar to half the RTT (RFC 6298) and each later one takes a
        quarter off, so for the first few keystrokes srtt + 4·rttvar is 2-3 RTTs: one lost in
        the demo's first second cost 3.3x RTT, one lost both ways 5-6x.
        """
        return self.srtt + max(min(4 * self.rttvar, self.srtt), 0.001) + ack_delay

    def add(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.latest = sample
        self.total += sample
        self.buckets[bisect.bisect_left(RTT_BUCKETS, sample)] += 1
        self.min_rtt = min(self.min_rtt, sample)
        if self.samples == 0 or self.provisional:
            self.provisional = False
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.samples += 1


@dataclass(slots=True)
class DirectionStats:
    """Per-direction counters: wins and lag are measured by whichever side receives."""

    frames: int = 0  #: DATA copies that arrived on this path (duplicates included)
    first: int = 0  #: frames this path delivered before any other path
    lag: float = 0.0  #: moving average of how far behind the first copy this path's copy came
    #: Moving average of DATA loss on this path in this direction: of the copies put on it
    #: between two ACKs, the fraction that never arrived (a resend on it counts as a copy).
    loss: float = 0.0


def received_by_echo(delivered: int, data_recv: int, echo_recv: int | None) -> int:
    """The peer's count of our DATA copies on a path when our echoed timestamp arrived,
    unwrapped like `delivered` (its count now, unwrapped from `data_recv`): the ACK's `echo
    recv` when it has one (and it is not ahead of `data_recv`), else `delivered`, which may
    count copies sent after that timestamp too."""
    if echo_recv is None:
        return delivered
    behind = (data_recv - echo_recv) & 0xFFFFFFFF
    return delivered - behind if behind < 1 << 31 else delivered


@dataclass(slots=True)
class Path:
    path_id: int
    datagram: bool  #: datagram paths carry only frames that fit one 1280-byte-MTU datagram
    state: PathState = PathState.PROBING
    writable: bool = True  #: stream paths: the glue clears this while the socket is full
    cursor: int = 0  #: next frame number this path has not sent yet
    last_recv: float | None = None
    added_at: float = 0.0  #: when the path joined (at the exit: when its WELCOME went out)
    last_sent: float = float("-inf")
    rtt: RttEstimator = field(default_factory=RttEstimator)
    rtt_history: deque[float] = field(default_factory=lambda: deque(maxlen=RTT_HISTORY))
    cc: CongestionController = field(default_factory=CongestionController)
    # ACK bookkeeping
    ack_pseq: int = 0
    peer_ts_us: int = 0
    peer_ts_at: float = 0.0
    peer_ts_recv: int = 0  #: `data_recv` when `peer_ts_us` arrived: our ACK's `echo recv`
    peer_pseq: int = -1  #: highest ACK pseq accepted on this path: older ones are replays
    peer_echo_us: int = 0  #: echo ts of the latest fresh ACK (path validation reads it)
    #: A path challenge to answer: (token, when it arrived). The next ACK on the path echoes
    #: it rather than the latest ts, which a regular ACK sent right after it would overwrite.
    challenge: tuple[int, float] | None = None
    acks_received: int = 0
    acks_lost: int = 0
    data_sent: int = 0
    data_sent_at_ack: int = 0  #: `data_sent` when this path last carried an ACK of ours
    ack_sent_at: float = float("-inf")
    #: (ts, data_sent, twins_sent) of our recent ACKs on this path: what had been sent when
    #: each left
    ack_log: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=ACK_LOG))
    #: A keystroke's second copy on this path (`schedule_copies.doubles`, `note_twin`): counted
    #: in `data_sent` like any copy, left out of our own loss measure (`note_own_loss`); and how
    #: many of them the transmit in progress put behind its ACK (`make_ack`'s `behind`)
    twins_sent: int = 0
    batch_twins: int = 0
    data_recv: int = 0
    data_recv_at_ack: int = 0  #: `data_recv` when this path last carried an ACK of ours
    #: Genuine DATA copies that came on this path again, for a frame it had delivered before
    #: (a resend, an extra copy of one): `data_recv` takes a frame once per path, the peer's
    #: `data sent` counts every copy, so the inbound loss counts these as arrived too.
    repeats_recv: int = 0
    #: (peer data_sent, our data_recv + repeats_recv) at the last ACK
    peer_report: tuple[int, int] | None = None
    #: Our own measure of our DATA loss on this path, which best-k decides by (review G3);
    #: `outbound.loss`, the peer's figure, counts a genuine copy that comes on the path again
    #: as arrived, and so does a replayed one: anyone who replays copies can lower it to none.
    #: Here the peer's `data received` (a frame once per path: a replay of a copy the path
    #: carried adds nothing; SECURITY.md names what is left) is held against the copies we
    #: had sent when an echoed timestamp of ours left (FIFO: each has arrived or is lost by
    #: then), as the controller does (`ModelRate.on_ack`). A resend here whose first copy
    #: had arrived counts as lost: the bias is towards more loss, not less.
    own_outbound: DirectionStats = field(default_factory=DirectionStats)
    own_delivered: int = -1  #: the peer's `data received` on this path, unwrapped (-1: none)
    #: the most copies seen missing: sent by an echo less the peer's count when it arrived
    #: (`received_by_echo`)
    own_lost: int = 0
    own_report: tuple[int, int] | None = None  #: (sent by the echo, own_lost) at the last fold
    inbound: DirectionStats = field(default_factory=DirectionStats)
    outbound: DirectionStats = field(default_factory=DirectionStats)
    bytes_sent: int = 0
    bytes_recv: int = 0
    bad_frames: int = 0
    tier: Tier = Tier.PRIMARY
    #: The access link the path leaves by, as the glue knows it (the client: its uplink; the
    #: exit: the peer's address): paths with the same `link` share its first hop, so bulk
    #: goes on one flow there (`schedule_paths.benched`). None: unknown, shares with nothing.
    link: str | None = None
    #: The scheduler keeps this path quiet (a backup at rest): ACKs only at the probe interval.
    quiet: bool = False
    # Delivery progress in our direction, from the peer's DATA counter in its ACKs on this
    # path: the scheduler calls a path stalled when copies went out and none showed up.
    peer_data_recv: int = -1  #: the counter in the newest ACK (mod 2**32)
    sent_since_progress: int = 0  #: DATA copies sent since that counter last grew
    unreported_since: float | None = None  #: when the first of those went out

    def note_data_sent(self, now: float, count: int) -> None:
        self.data_sent += count
        if self.unreported_since is None:
            self.unreported_since = now
        self.sent_since_progress += count

    def note_delivery(self, data_recv: int) -> None:
        """The peer's count of our DATA copies on this path, from an ACK."""
        if data_recv != self.peer_data_recv:
            if ((data_recv - self.peer_data_recv) & 0xFFFFFFFF) >= 1 << 31:
                return  # an older ACK overtaken by a newer one
            self.peer_data_recv = data_recv
            self.sent_since_progress = 0
            self.unreported_since = None

    def note_own_loss(
        self, data_recv: int, sent_by_echo: int | None, echo_recv: int | None = None
    ) -> None:
        """Fold the peer's `data received` (mod 2**32) and, when its ACK echoed one of our
        timestamps, what we had sent on the path by then (and, with `echo recv`, what it had
        received by then) into `own_outbound.loss`."""
        if self.own_delivered < 0:
            self.own_delivered = data_recv
        else:
            step = (data_recv - self.own_delivered) & 0xFFFFFFFF
            if step < 1 << 31:  # else an older ACK overtaken by a newer one
                self.own_delivered += step
        if sent_by_echo is None:
            return
        # Copies the peer counted may include some sent after the echo: a lower bound on
        # what is missing, so the largest one seen stands. `echo recv` leaves those out.
        received = received_by_echo(self.own_delivered, data_recv, echo_recv)
        self.own_lost = max(self.own_lost, sent_by_echo - received)
        last = self.own_report
        if last is None:
            self.own_report = (sent_by_echo, self.own_lost)
            return
        sent = sent_by_echo - last[0]
        if sent > 0:
            lost = min(self.own_lost - last[1], sent)
            self.own_outbound.loss += EWMA_GAIN * (lost / sent - self.own_outbound.loss)
            self.own_report = (sent_by_echo, self.own_lost)

    def heard(self, now: float) -> bool:
        """Record that a valid frame arrived; True when this revives a silent path."""
        revived = self.state is not PathState.UP
        self.last_recv = now
        self.state = PathState.UP
        return revived

    def update_loss(
        self, sent_total: int, recv_total: int, stats: DirectionStats, last: tuple[int, int] | None
    ) -> tuple[int, int]:
        """Fold one (sent, received) counter report into a direction's loss average."""
        if last is not None:
            sent = (sent_total - last[0]) & 0xFFFFFFFF
            recv = (recv_total - last[1]) & 0xFFFFFFFF
            if sent > 0 and recv <= sent:
                stats.loss += EWMA_GAIN * ((1 - recv / sent) - stats.loss)
        return sent_total, recv_total
