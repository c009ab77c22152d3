"""Loss recovery: which frames are lost, when to resend them, and when to wake.

Two ways a frame is found lost, as in RFC 9002 / RFC 8985:
- by order and time (RACK), on every ACK: a frame still unacknowledged while a frame sent
  after it (by more than a reorder window) was acknowledged is lost and resent at once. A
  lost keystroke costs about one RTT more when anything follows it;
- by timeout (the probe timeout), when nothing comes back: each frame's resend deadline is
  `srtt + 4·rttvar + ack delay` of the *best* live path (one slow path cannot slow recovery),
  doubling per consecutive timeout of that frame, and while nothing comes back for the
  session as a whole (RFC 9002's PTO count), but never beyond `max_backoff`, so one
  keystroke never waits seconds and a window sent into an outage is not resent frame by
  frame.
Frames' deadlines live in the sender's heap; this module decides the timeout they are armed
with and collects the frames to resend.
"""

from __future__ import annotations

from collections.abc import Iterable

from dupsession.core.paths import Path, PathState
from dupsession.core.sender import Sender, SentFrame

#: Floor of the RACK reorder window (s): below a millisecond, timer granularity rules.
MIN_REORDER_WINDOW = 0.001
#: Frames one probe timeout resends (the oldest ones); the rest wait for RACK or the next.
PROBE_FRAMES = 2
#: With fewer frames than this unacknowledged (and no bytes waiting to be cut), the probe
#: timeout runs from the frame's own send, not from the last ACK (RFC 7765, RTO Restart).
RESTART_FRAMES = 4


class Recovery:
    __slots__ = (
        "_probed_at",
        "_resend",
        "_tail_probed",
        "_timeouts",
        "ack_delay",
        "last_progress",
        "loss_time",
        "max_rto",
        "min_rto",
        "rack_rtt",
        "rack_seen",
        "rto_value",
        "spread",
        "window",
    )

    def __init__(self, min_rto: float, max_rto: float, ack_delay: float) -> None:
        self.min_rto = min_rto  #: resend timeout bounds (s)
        self.max_rto = max_rto
        self.ack_delay = ack_delay  #: how long the peer may hold an ACK (s)
        #: The timeout as of the last transmit: per-copy checks read it rather than recompute.
        self.rto_value = max_rto / 2
        self._resend: list[int] = []
        #: (frame number, send time) of the last tail probe: a probe no path could take was
        #: re-armed unsent (same send time) and waits for its timer, not for this rule again.
        self._tail_probed = (-1, 0.0)
        self.loss_time: float | None = None  #: when a frame crosses the RACK time line
        self.rack_seen = float("-inf")  #: the sender's RACK send time when last looked at
        self.rack_rtt = 0.0  #: RTT of the most recently sent acknowledged frame (s)
        #: Reorder the scheduler causes on purpose (s): single copies on paths of different
        #: delay (stripe) arrive out of send order; RACK must not call that loss.
        self.spread = 0.0
        self.window = MIN_REORDER_WINDOW  #: the reorder window RACK last used (s)
        #: When an ACK last acknowledged anything new. While ACKs make progress, RACK finds the
        #: losses; the probe timeout counts from here too (RFC 9002 arms it from the last
        #: ACK-eliciting event), so a queue that grows the RTT does not time out a whole window.
        self.last_progress = float("-inf")
        self._probed_at = float("-inf")  #: when a probe timeout last fired...
        self._timeouts = 0  #: ...and how many fired in a row with no ACK progress between

    @staticmethod
    def reorder_window(paths: Iterable[Path]) -> float:
        """A quarter of the best live path's minimum RTT (RACK's default), at least 1 ms."""
        best = min(
            (p.rtt.min_rtt for p in paths if p.state is PathState.UP and p.rtt.samples),
            default=0.0,
        )
        return max(best / 4, MIN_REORDER_WINDOW)

    @staticmethod
    def ambiguous_after(now: float, paths: Iterable[Path]) -> float:
        """Resends after this time are acknowledged by an earlier copy, not their own, so
        they must not move the RACK line (RFC 8985, 6.2 step 2; `Sender.on_ack`): the
        earliest an ACK can answer a resend is the best path's minimum RTT after it left.

        A path with no sample yet counts with its handshake RTT (review D13): an upper bound
        (it includes the peer's processing), so a resend may wait for the probe timeout where
        it need not, never the other way. Its minimum RTT alone is infinite: before any
        sample no resend moved the line, and an early loss always waited for the probe
        timeout. With no estimate at all, every acknowledged frame moves it.
        """
        fastest = min(
            (
                p.rtt.min_rtt if p.rtt.samples else p.rtt.srtt
                for p in paths
                if p.rtt.samples or p.rtt.provisional
            ),
            default=0.0,
        )
        return now - fastest

    def on_ack(self, now: float, sender: Sender, paths: Iterable[Path]) -> None:
        """After the sender took an ACK: queue what RACK now finds lost."""
        if sender.largest_acked < 0 or not sender.frames:
            self.loss_time = None
            return
        if sender.rack_sent_at != self.rack_seen:
            self.rack_seen = sender.rack_sent_at
            self.rack_rtt = max(now - sender.rack_sent_at, 0.0)
        self.window = self.reorder_window(paths) + self.spread
        self._detect(now, sender, self.window, paths)

    def _detect(self, now: float, sender: Sender, reorder: float, paths: Iterable[Path]) -> None:
        lost, self.loss_time = sender.detect_lost(now, reorder, self.rack_rtt)
        if not lost:
            return
        # Like a probe, a keystroke's resend goes twice on a single datagram path: one copy
        # is lost one time in twenty there, and then the keystroke waits another round (the
        # demo-like simulation: an echo found lost by RACK three times in a row, 317 ms). Not
        # a transfer's (four frames or more in flight): that would cost it the loss rate again.
        copies = 2 if len(sender.frames) < RESTART_FRAMES and _datagrams_up(paths) == 1 else 1
        for frame in lost:
            frame.copies = copies
        self._resend.extend(f.seq for f in lost)

    def on_window_reopened(self, now: float, sender: Sender, paths: Iterable[Path]) -> None:
        """The peer's ACK reopened a window its paused consumer had frozen: resend now what
        the pause dropped, not at the probe timeout (up to `max_backoff` away after a pause).

        A paused receiver takes at most `window_bytes` past the pause and drops the frames
        beyond that unacked (review H1). Those frames are the ones this ACK, sent as the
        consumer resumed, leaves unacknowledged although they were sent a round trip before
        it arrived (the largest of the live paths' latest RTT samples, which this ACK's echo
        just took, plus the reorder window): they had reached the peer before the resume, or
        were lost. Frames sent since may have arrived after
        the resume and been taken: they keep their timers (RACK finds them, as it finds a
        probe of the first dropped frame that came just before the resume, once the resends
        behind it are acknowledged). The peer answers, so the resends are not backed off.
        """
        paths = list(paths)
        rtt = max(
            (p.rtt.latest for p in paths if p.state is PathState.UP and p.rtt.samples),
            default=None,
        )
        if rtt is None:
            return  # no estimate of when a frame has arrived: the timers decide
        line = now - rtt - (self.reorder_window(paths) + self.spread)
        dropped = [f for f in sender.frames.values() if f.armed and f.sent_at <= line]
        for frame in dropped:
            frame.armed = False  # its heap entry goes stale; the resend re-arms it
            frame.copies = 1  # refused, not lost: one copy, as the first was
        sender.progress_at = now
        self._probed_at = float("-inf")  # nor the probe timeout: the next counts as the first
        # Lowest first: the peer delivers in order, and what RACK or a probe queued during the
        # pause was refused too (the probes of the first dropped frames, behind later ones).
        self._resend = sorted({*self._resend, *(f.seq for f in dropped)})

    def rto(self, paths: Iterable[Path]) -> float:
        """Resend timeout from the *best* live path: a slow path never delays recovery."""
        best = min(
            (
                p.rtt.timeout(self.ack_delay)
                for p in paths
                if p.state is PathState.UP and (p.rtt.samples or p.rtt.provisional)
            ),
            default=None,
        )
        if best is None:
            best = self.max_rto / 2 + self.ack_delay
        return min(max(best, self.min_rto), self.max_rto)

    def on_timer(self, now: float, sender: Sender, paths: Iterable[Path]) -> None:
        """Collect frames whose resend deadline or RACK time passed; `take_resends` hands
        them out."""
        paths = list(paths)
        if self.loss_time is not None and self.loss_time <= now:
            self.window = self.reorder_window(paths) + self.spread
            self._detect(now, sender, self.window, paths)
        # A probe goes twice on a single path: at 5 % loss its one copy is lost one time in
        # twenty, and each such double loss cost a keystroke (and those behind it) 2 RTTs more.
        # With several paths each already carries a copy; a stream path never loses one.
        twice = _datagrams_up(paths) == 1
        tail = self._lost_resend(sender)
        if tail is not None and tail[0] <= now:
            tail[1].armed = False  # its heap entry goes stale; the resend re-arms it
            self._tail_probed = (tail[1].seq, tail[1].sent_at)
            sender.lost_detected += 1
            self._probe([tail[1]], twice)
        if now < self._probe_gate(sender, paths):
            return
        expired = sender.expired(now)
        if expired:
            self._timeouts = self._timeouts + 1 if self._probed_at > self.last_progress else 1
            self._probed_at = now
        # A probe timeout resends the oldest few frames only, as RFC 9002's probes do: their
        # ACK lets RACK find what else was lost. Resending everything that timed out would
        # mostly repeat frames the peer holds beyond the 32 runs an ACK can list.
        expired.sort(key=lambda f: f.seq)
        for frame in expired[PROBE_FRAMES:]:
            sender.defer(frame, now + self.rto_value)
        self._probe(expired[:PROBE_FRAMES], twice)

    def _probe_gate(self, sender: Sender, paths: Iterable[Path]) -> float:
        """The earliest a probe timeout may fire, while many frames are in flight: one timeout
        after the last ACK progress (a queue that grows the RTT must not time out a whole
        window while ACKs keep coming), and 2^k timeouts (at most `max_backoff`) after the last
        probe timeout, k of them with no progress between; with a few frames only and a
        datagram path up, no later than each frame's own deadline (its send plus one timeout).

        A keystroke goes out a few ms before the previous one's ACK arrives (interval 50 ms,
        RTT plus ACK delay 51), so counted from that ACK its probe went 2-10 ms late, twice
        when the echo was lost too: the demo's 161-169 ms tails. RFC 7765 restarts the RTO
        the same way for fewer than four segments in flight.

        Not with stream paths only: they lose no frame (TCP resends it), and a probe queued
        behind the keystroke on the same connection cannot arrive before it. There the
        restart only raced each keystroke against its own ACK, which the peer holds for the
        ACK delay plus however late its timer fires, while the timeout allows the ACK delay
        plus 1 ms once a steady RTT has worn rttvar down: on the SSH relay test's lone path a
        few keystrokes and echoes in a hundred went twice (`test_no_spurious_probe_of_a_...`).
        """
        if (
            len(sender.frames) < RESTART_FRAMES
            and not sender.has_pending()
            and _datagrams_up(paths) > 0
        ):
            return float("-inf")
        gate = self.last_progress + self.rto_value
        if self._probed_at > self.last_progress:
            # Nothing came back since the last probe timeout: the next waits twice as long,
            # up to `max_backoff` (RFC 9002's PTO backoff, for the session, not per frame).
            # Each frame's own deadline runs from its own send, so without this a window sent
            # into an outage timed out one frame per pacing step: 300-600 resends a second
            # into the dark on a 10 Mbit/s path, 372-869 rounds in a 1-3 s outage, 8-10 now
            # (tests/sim/test_congestion.py's outage test).
            gate = max(gate, self._probed_at + sender.backed_off(self.rto_value, self._timeouts))
        return gate

    def _probe(self, frames: list[SentFrame], twice: bool) -> None:
        for frame in frames:
            frame.copies = 2 if twice else 1  # the scheduler's policy honours it
        self._resend.extend(f.seq for f in frames)

    def _lost_resend(self, sender: Sender) -> tuple[float, SentFrame] | None:
        """When the oldest unacknowledged frame counts as lost although RACK cannot tell: it
        was resent, the resend was lost, and the frames acknowledged since were all sent
        before it (a keystroke's resend, with the next keystroke still in flight).

        An ACK made progress after its send, so the path delivers: once the RACK RTT plus
        the reorder window (at least one probe timeout) passed since its send, it is resent,
        with no backoff. RACK-TLP (RFC 8985) probes the tail the same way. Without this, the
        resend waited for the next keystroke's ACK or a backed-off timeout: about 2 RTTs.
        """
        oldest = sender.frames.get(sender.acked_below)  # (a hole's start is never SACKed)
        if (
            oldest is None
            or not oldest.armed
            or oldest.sends < 2
            or self.last_progress <= oldest.sent_at
            or self._tail_probed == (oldest.seq, oldest.sent_at)
        ):
            return None
        return oldest.sent_at + max(self.rto_value, self.rack_rtt + self.window), oldest

    def take_resends(self, sender: Sender) -> list[SentFrame]:
        """Frames due for a resend that are still unacknowledged and unsent."""
        table = sender.frames
        resend = [table[s] for s in dict.fromkeys(self._resend) if s in table]
        self._resend = []
        return [f for f in resend if not f.armed]

    def keep_waiting(self, resend: list[SentFrame]) -> None:
        """Frames the scheduler left unsent for want of a controller's budget stay first in
        line: a lost frame must not lose its turn to new data sent on a later pacing tick."""
        self._resend = [f.seq for f in resend if not f.armed]

    def waiting(self) -> bool:
        return bool(self._resend)

    def deadline(self, sender: Sender, paths: Iterable[Path]) -> float | None:
        timeout, loss_time = sender.next_deadline(), self.loss_time
        if timeout is not None:
            timeout = max(timeout, self._probe_gate(sender, paths))
        tail = self._lost_resend(sender)
        if tail is not None and (timeout is None or tail[0] < timeout):
            timeout = tail[0]
        if loss_time is None:
            return timeout
        return loss_time if timeout is None else min(timeout, loss_time)


def _datagrams_up(paths: Iterable[Path]) -> int:
    """Datagram paths up: with none, no frame is lost in flight (stream paths resend); with
    exactly one, a resend there may need two copies."""
    return sum(1 for p in paths if p.datagram and p.state is PathState.UP)
