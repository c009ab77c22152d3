"""Congestion control: one controller per path, deciding how much that path may send now.

The interface every controller implements is `core/controller.py`'s `CongestionController`.

Stream paths (TCP, SSH) have the kernel's congestion control on the wire; their controller
(`core/stream_window.py`, ModelRate's estimates without pacing) only bounds what we hand the
socket. A session's datagram paths take turns at their probe rounds (`core/probe_turns.py`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from dupsession.core.controller import CongestionController
from dupsession.core.paths import received_by_echo
from dupsession.core.probe_turns import YIELD_GAIN, ProbeTurns

#: Frames a path may send before it has any estimate (like TCP's initial window of 10, a bit
#: more since our frames are small on interactive sessions).
INITIAL_WINDOW = 32
#: Never fewer frames in flight than this, whatever the estimate: keeps ACKs coming.
MIN_WINDOW = 4
#: BBR's startup gain, 2/ln 2: doubles the sending rate every round trip.
STARTUP_GAIN = 2.885
#: Startup ends when the rate estimate grew less than 25 % for this many rounds.
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
#: Startup also ends once the smoothed RTT passes this multiple of the minimum with a queue
#: above target: the bottleneck is full (HyStart's delay signal), no need to wait 3 rounds.
STARTUP_EXIT_RTT = 1.5
#: ...and at once, on any ACK, when every RTT sample of the current round (at least this many)
#: sat above the minimum by more than the queue target (HyStart++'s delay rule): waiting for
#: the round's end and a smoothed RTT let startup's doubling stand 75-100 ms of queue in the
#: netlab's routers before it stopped, and every keystroke beside the transfer waited behind it.
STARTUP_EXIT_SAMPLES = 4
#: Startup's window, in BDPs (BBR v2's): the pacing gain grows the rate; the window only
#: bounds what the overshoot can queue before the delay rule sees it.
STARTUP_CWND_GAIN = 2.0
#: A queue is "standing" when the smoothed RTT, less RTT_NOISE_GAIN x the path's RTT noise,
#: sits above the minimum by max(this fraction of the minimum, QUEUE_TARGET_MIN s). A tenth,
#: not a quarter: on the netlab's 55 and 75 ms paths a quarter let a cruise stand 14 and 19 ms
#: that a keystroke's echo waited behind (typing9d). The noise: how far a cruise round's
#: samples (not a probe's 1.25 or 0.75, a yield or a re-measure) sit above its lowest on
#: average, following a quieter round at once and a noisier one by RTT_NOISE_RISE; x1.5 since
#: a round's lowest sample sits above the minimum by part of it. Delay jitter lifts the
#: smoothed RTT with no queue at all: at 0-10 ms each way every cruise round drained, the link
#: busy 74-79 %, now 91-94 % (review H2, tests/sim/test_congestion.py).
QUEUE_TARGET_FRACTION = 0.10
QUEUE_TARGET_MIN = 0.005
RTT_NOISE_GAIN = 1.5
RTT_NOISE_RISE = 0.125
#: The pacing gain of a cruise round that found a standing queue.
QUEUE_DRAIN_GAIN = 0.85
#: ...and its window (`cwnd`): one BDP plus this many frames, not a gain times the BDP:
#: each flow then holds at most this many frames in a shared queue, and since a FIFO queue
#: serves flows in proportion to what each holds in it, flows sharing a bottleneck
#: converge to equal rates whatever their RTTs (TCP Vegas's and FAST's fixed point). A window
#: in BDPs lets each hold a share of the queue in proportion to its rate, so any split stands
#: (two sessions on a 2 Mbit/s uplink stayed at 1.2:0.7 Mbit/s; Jain 0.93 -> 0.99).
QUEUE_ALLOWANCE = 4
#: Random loss each round is smoothed with this weight; a cruise round that finds no standing
#: queue paces above the delivery rate by the loss it measured, at most this much (a fraction):
#: the rate estimate counts what arrived, so pacing at it sends (1 - loss) of what the path
#: carries, whether the loss happens before the bottleneck or after it. Loss from our own
#: overshoot comes with a queue, and a queued round drains instead.
LOSS_EWMA = 0.125
LOSS_COMPENSATION_MAX = 0.2
#: A round's loss fraction counts only when it sent at least this many frames.
LOSS_MIN_FRAMES = 8
#: Sends with repeats remembered until an echo passes them (`ModelRate._measure_loss`).
REPEAT_LOG_MAX = 1024
#: Pacing gains of the probe cycle, one round each.
PROBE_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: The rate estimate is the maximum over this many rounds.
BW_WINDOW_ROUNDS = 10
#: A round is at least this long (s) for the rate window: loopback RTTs are microseconds.
MIN_BW_ROUND = 0.02
#: The minimum RTT is re-measured at every multiple of this (s, BBR v2's 5 s) of the clock
#: the core is given: each path past startup keeps half a BDP in flight for PROBE_RTT_TIME
#: (at least one RTT), so the queue drains and the true minimum shows. On a grid of the clock
#: (not BBR's 5 s after the path's last matching sample), so sessions of one host drain
#: together; the fairness fix owes most to the first re-measure (FIRST_PROBE_RTT_PERIOD,
#: never skipped: a session that met another's queue at its start took it for its minimum and
#: kept the larger share, Jain 0.57-0.79, now 0.99); review D3: the grid is a choice, not a
#: proof (ARCHITECTURE.md). Skipped while samples come near the minimum a re-measure found,
#: so a lone transfer pays once, after startup: half its rate for 0.2 s (3 % of a 4 MB upload).
PROBE_RTT_PERIOD = 5.0
PROBE_RTT_TIME = 0.2
#: A path's first re-measure comes at the next multiple of this (s) after startup drained:
#: startup measured its minimum through the queue it, and any session starting with it, built.
FIRST_PROBE_RTT_PERIOD = 1.0
#: A sample within this share of the queue target above the minimum confirms it (it stays
#: believed against a higher one a re-measure finds, see MIN_RTT_EXPIRY): real RTTs jitter
#: by a fraction of a ms, so an exact match almost never comes.
MIN_RTT_CONFIRM = 0.5
#: A minimum RTT no sample has matched for this long (s) gives way to a higher one.
MIN_RTT_EXPIRY = 30.0
#: RTTs below this (s) are treated as this: timer granularity and event-loop turns.
MIN_RTT_FLOOR = 0.001
#: Room in the window for the peer holding its ACKs (s): it acks every 16 frames or 4 ms.
ACK_AGGREGATION = 0.008
#: A delivery-rate sample spans at least this long (s): ACKs come in batches.
MIN_SAMPLE_INTERVAL = 0.005
#: After startup a sample spans this many round trips: over one, the peer's timer ACKs (not
#: aligned with arrivals) make it up to 1/16 off on a short path, and the windowed maximum
#: keeps the high ones, so the estimate ran ~3 % above the link and kept a standing queue.
SAMPLE_RTTS = 2
#: Pacing releases frames in bursts of this long (s) at the pacing rate, at least MIN_BURST
#: frames: one transmit per frame would cost more CPU than the pacing gains.
BURST_TIME = 0.002
#: Pacing tokens within this of a whole frame count as that frame (float rounding).
TOKEN_ROUNDING = 1e-6
MIN_BURST = 4.0
#: Wake for pacing no more often than this (s): a release is this long's worth at the rate
#: (BURST_TIME's, the same 2 ms). Each wake-up is a transmit, a fixed cost (a scheduler pass,
#: a send per path): from 1 ms to 2 ms the simulator's download exit (`send_cost.py --mb 10`)
#: made 27 % fewer transmits for 19 % less CPU per MB, the typing rise unchanged
#: (`sim_under_load.py`: +5.9 against +5.8 ms at 0 %; up1's downlink queue p50 1.3 -> 1.7 ms),
#: and on the netlab relayd's share of a core during the download fell from 43-52 % to 38-45 %
#: (BENCHMARKS.md "Pacing step: 1 ms -> 2 ms").
MIN_PACING_STEP = 0.002
#: A transmit takes every path whose next pacing release is due within this long (s), with
#: the budget the path will have then (Linux fq's timer slack, QUIC pacers' alarm granularity):
#: the earliest path's wake-up serves the others, and an ACK's transmit the releases due soon
#: after it. The path's pacing clock runs ahead to that due time and nothing accrues until now
#: passes it, so the average rate is exact, a release is still one step's worth, and no path
#: is ever ahead of its rate by more than this long's worth (`tests/core/test_pacing.py`). But
#: two transmits a moment apart (the timer's, then an ACK's) can each take a release, so a path
#: can send two steps' worth (4 ms at its rate) back to back: still never more than a step
#: ahead of its rate line (`tests/core/test_pacing_bound.py`); in the simulator's download
#: up1's downlink queue p50 went 0.4 -> 0.8 ms (BENCHMARKS.md "relayd's transmits").
#: At the 1 ms step then: each path waking at its own phase, relayd's two UDP paths woke it
#: 730-1,260 times a second of a download, half its transmits; in the simulator's download
#: (`sim_under_load.py`, 5 % loss) the exit's transmits that sent fell 40 %, its timer's 48 %
#: (half a step: 23 %, 26 %).
PACING_SLACK = MIN_PACING_STEP
#: A backlogged path past startup whose pacing wake-up came late (a busy event loop or CPU)
#: gets the time it missed back, up to this long (s) at its pacing rate (not in startup or
#: drain: a catch-up there only adds to what a policer drops). Capped at one burst, the UDP
#: paths sent ~15 % under their pacing rate on the 2-core netlab, and a 1.25 round never
#: delivered above the estimate, stuck at 60-70 % of the link (ARCHITECTURE.md).
PACING_CATCH_UP = 0.01
#: ...but one transmit takes at most this many bursts of the tokens; the rest go in the next
#: event-loop turns (`wake_at` is then now): relayd serves many sessions, and a catch-up spent
#: in one transmit made its turns 4-16 ms long, which another session's keystrokes and echoes
#: waited for. Fewer bursts per turn cost rate on a busy CPU: one burst 0.86x plain ssh's
#: download at 5 % loss, two 0.91x in 2 of 7 runs; three kept it in all 6 (BENCHMARKS.md).
TURN_BURSTS = 3
#: With no ACK for STALE_RTTS smoothed RTTs (at least STALE_MIN s), in-flight is assumed lost.
STALE_RTTS = 3
STALE_MIN = 0.2
#: Bits of a full datagram frame: the status view's rate in bits/s (an upper bound: frames of
#: an interactive session are smaller).
FRAME_BITS = 1232 * 8
#: RTT assumed by the status view before any sample (s).
INITIAL_SRTT = 0.3


def _next_multiple(now: float, period: float) -> float:
    """The first multiple of `period` after `now`: a grid every session on this clock shares."""
    return (now // period + 1) * period


class ModelRate(CongestionController):
    """BBR-like control for a datagram path: a model of the path, not a reaction to loss.

    Two estimates, as BBR's: the bottleneck delivery rate (windowed maximum of the peer's
    per-path count of our frames it received, per second; PROTOCOL.md) and the minimum RTT.
    It paces at `pacing_gain` x the rate and keeps at most `cwnd_gain` x the BDP in flight:
    random loss (wireless) lowers neither estimate much, and the bottleneck's queue stays
    short, which is what keystrokes in this and other sessions need. States (BBR v1, rounds
    of one RTT): startup (gain 2.89 until the rate stops growing by 25 % for 3 rounds), drain
    (1/2.89 until in-flight is one BDP), probe (1.25, 0.75, 1 x 6: probe, drain what probing
    queued, cruise). In-flight is what we sent less what the peer received less what was
    lost: sent before an echoed timestamp and not received when it arrived (`echo recv`; paths
    are FIFO but for rare reordering); after a silence, everything in flight counts as lost.
    """

    __slots__ = (
        "_busy_at",
        "_bw",
        "_capped",
        "_cruise_round",
        "_cycle",
        "_deferred",
        "_delivered",
        "_deliveries",
        "_echoed_to",
        "_forgive_until",
        "_full_bw",
        "_full_rounds",
        "_last_ack_at",
        "_last_recv",
        "_lost",
        "_lost_echoed",
        "_next_probe_rtt",
        "_presumed",
        "_presumed_at",
        "_probe_min",
        "_probe_rtt_until",
        "_queue_round",
        "_remeasured",
        "_repeat_log",
        "_repeats",
        "_repeats_echoed",
        "_round_end",
        "_round_lost",
        "_round_repeats",
        "_round_rtt",
        "_round_samples",
        "_round_sent",
        "_round_sum",
        "_rtt_noise",
        "_sent_total",
        "_silent_at",
        "_tokens",
        "_tokens_at",
        "_wait_until",
        "app_limited",
        "btl_bw",
        "cwnd_gain",
        "inflight",
        "latest_rtt",
        "loss_rate",
        "min_rtt",
        "min_rtt_at",
        "mode",
        "pacing_gain",
        "rounds",
        "turns",
    )

    #: Times the path's RTT noise left out of the smoothed RTT when judging a queue.
    noise_gain: ClassVar[float] = RTT_NOISE_GAIN

    def __init__(self, turns: ProbeTurns | None = None) -> None:
        #: Shared with the session's other datagram paths: whose turn it is to probe.
        self.turns = turns
        self.mode = "startup"
        self.pacing_gain = STARTUP_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        #: This round found a standing queue: the window is one BDP + QUEUE_ALLOWANCE frames.
        self._queue_round = False
        self.btl_bw = 0.0  #: frames per second, windowed maximum
        self._bw: deque[tuple[float, float]] = deque()  #: (time, rate), decreasing rates
        self.min_rtt = float("inf")
        self.min_rtt_at = 0.0
        self.latest_rtt = 0.0
        self._delivered = -1  #: the peer's count of our DATA copies on this path (unwrapped)
        self._last_recv = 0  #: its last raw 32-bit value
        self._deliveries: deque[tuple[float, int]] = deque()  #: (time, delivered) this RTT
        self._sent_total = 0  #: DATA copies sent on this path, like the peer's counter
        self._lost = 0  #: of those, how many in-flight leaves out as lost
        self._lost_echoed = 0  #: of those, how many the echoed counters prove lost
        #: Written off by silence (`_inflight`): how many, and the peer's count then. Frames
        #: that arrive after all were among them (FIFO): each comes back into flight.
        self._presumed = 0
        self._presumed_at = 0
        self._last_ack_at = float("-inf")
        #: When silence last wrote the window off (`_inflight`; until an ACK comes, a path
        #: backlogged as it fell silent, `_capped`, keeps at most MIN_WINDOW frames in flight
        #: per stale stretch, `_window`), and the first send with nothing in flight (a burst
        #: after a quiet spell, the last ACK a keepalive's, is not silent 2 ms in: review Q1).
        self._silent_at = self._busy_at = float("-inf")
        self._capped = False
        self.inflight = 0
        self._tokens = float(INITIAL_WINDOW)
        self._tokens_at: float | None = None
        self._full_bw = 0.0
        self._full_rounds = 0
        self._round_end = 0.0
        self.rounds = 0  #: rounds ended (`_advance`): the probe cycle's and turns' unit
        self._round_rtt = float("inf")  #: the lowest RTT sample of the current round
        self._round_sum = 0.0  #: the sum of its samples
        #: A cruise round (1.0, or 0.85 on a queue): only such a round measures the RTT noise;
        #: probe, yield, startup, drain and re-measure rounds move the queue on purpose (I1)
        self._cruise_round = False
        #: How far a round's samples sit above the lowest of them (s), smoothed (`_queued`)
        self._rtt_noise = 0.0
        self._round_samples = 0
        self._round_sent = 0  #: _sent_total and _lost when the loss fraction last moved
        self._round_lost = 0
        self._repeats = 0  #: of _sent_total, frames this path had carried before
        self._repeats_echoed = 0  #: of those, the ones sent before the last echoed timestamp
        #: (_sent_total, _repeats) after each send with repeats, until an echo passes it
        self._repeat_log: deque[tuple[int, int]] = deque()
        self._round_repeats = (0, 0)  #: _repeats and _repeats_echoed at the last measure
        self._forgive_until = 0  #: losses among our first this many sends are no loss...
        self._echoed_to = 0  #: ...until an echo passes them: the most sends an echo covered
        self.loss_rate = 0.0  #: smoothed fraction of DATA copies lost on this path
        self._cycle = 0
        self._deferred = 0  #: rounds the due probe waited for the session's turn
        self._wait_until = float("-inf")  #: the 1.25 round it waits out (`ProbeTurns.refuse`)
        self._probe_rtt_until = 0.0
        self._next_probe_rtt = float("inf")  #: when the next re-measure of the min RTT starts
        self._remeasured = False
        self._probe_min = float("inf")
        self.app_limited = True  #: the last transmit left budget unused (nothing to send)

    # -- the model ---------------------------------------------------------------------------

    def _rtt(self, srtt: float) -> float:
        return max(min(self.min_rtt, srtt), MIN_RTT_FLOOR) if self.min_rtt < 1e9 else srtt

    def bdp(self, srtt: float) -> float:
        """Bandwidth-delay product in frames, with room for the peer's ACK batching."""
        if not self.btl_bw:
            return float(INITIAL_WINDOW)
        return self.btl_bw * (self._rtt(srtt) + ACK_AGGREGATION)

    def cwnd(self, srtt: float) -> int:
        if self.mode == "probe-rtt":
            return max(MIN_WINDOW, int(self.bdp(srtt) / 2))
        if self._queue_round:
            return max(MIN_WINDOW, int(self.bdp(srtt)) + QUEUE_ALLOWANCE)
        window = max(MIN_WINDOW, int(self.cwnd_gain * self.bdp(srtt)))
        # Startup never holds less than its initial window: an interactive session stays in
        # startup (app-limited, it never fills the pipe), and a window sized from its own
        # trickle of keystrokes would hold a keystroke back behind a lost one's resends.
        return max(window, INITIAL_WINDOW) if self.mode == "startup" else window

    def pacing_rate(self, srtt: float) -> float:
        """Frames per second."""
        rate = self.btl_bw or INITIAL_WINDOW / max(srtt, MIN_RTT_FLOOR)
        if self.mode == "startup":  # likewise: never below the initial window per round trip
            rate = max(rate, INITIAL_WINDOW / max(self._rtt(srtt), MIN_RTT_FLOOR))
        return self.pacing_gain * rate

    def _burst(self, rate: float) -> float:
        return max(MIN_BURST, rate * BURST_TIME)

    # -- what the session tells it -----------------------------------------------------------

    def on_ack(
        self,
        now: float,
        data_recv: int,
        rtt: float | None,
        srtt: float,
        sent_by_echo: int | None,
        echo_recv: int | None = None,
    ) -> None:
        """The peer's ACK on this path: its count of our DATA copies it received here (mod
        2**32), an RTT sample when it echoed one of our timestamps, how many frames we had
        sent here when that timestamp left, and (`wire.Ack.echo_recv`) how many of them it
        had received when the timestamp arrived."""
        if self._silent() or now >= self._last_ack_at + self._stale_after(srtt):
            self._after_silence()  # no ACK for the write-off's time
        self._last_ack_at = now
        if rtt is not None:
            self._rtt_sample(now, rtt)
        self._probe_rtt(now, srtt)
        if self._delivered < 0:
            self._delivered, self._last_recv = data_recv, data_recv
        else:
            step = (data_recv - self._last_recv) & 0xFFFFFFFF
            if step >= 1 << 31:
                return  # an older ACK overtaken by a newer one
            self._delivered += step
            self._last_recv = data_recv
        forgive = False
        if sent_by_echo is not None:
            forgive = self._echoed_to < self._forgive_until  # `_after_silence`
            self._echoed_to = max(self._echoed_to, sent_by_echo)
            self._lost_echoed = self._echoed_loss(sent_by_echo, data_recv, echo_recv)
            log = self._repeat_log
            while log and log[0][0] <= sent_by_echo:
                self._repeats_echoed = log.popleft()[1]
        presumed = self._presumed - (self._delivered - self._presumed_at)
        self._lost = max(self._lost_echoed, presumed)
        self.inflight = max(0, self._sent_total - self._delivered - self._lost)
        deliveries = self._deliveries
        if forgive:  # the round's loss measure restarts after this echo
            self._round_sent, self._round_lost = self._sent_total, self._lost_echoed
            self._round_repeats = (self._repeats, self._repeats_echoed)
        deliveries.append((now, self._delivered))
        window = max(self._rtt(srtt), MIN_SAMPLE_INTERVAL)
        if self.mode != "startup":
            window *= SAMPLE_RTTS
        while len(deliveries) > 2 and deliveries[1][0] <= now - window:
            deliveries.popleft()
        first_at, first = deliveries[0]
        if now - first_at >= window:
            self._sample((self._delivered - first) / (now - first_at), now, srtt)
        self._advance(now, srtt)

    def _echoed_loss(self, sent_by_echo: int, data_recv: int, echo_recv: int | None) -> int:
        """Our copies on this path lost by the time the echoed timestamp arrived."""
        if echo_recv is None:  # (a peer without ECHO_RECV)
            # A lower bound (FIFO: all sent before the timestamp has arrived or is lost,
            # but the count may hold some sent after it too): keep the largest.
            return max(self._lost_echoed, sent_by_echo - self._delivered)
        # Exact: the latest stands, so a frame reordered past the timestamp is lost
        # only until the next echo. The lower bound ran short by every frame sent
        # after the timestamp that had arrived: a path whose window was one burst
        # (4 frames in drain on loopback, after a startup burst the receiver's socket
        # dropped) kept that burst "in flight" after each ACK and sent 4 frames per
        # stale write-off, 0.2 s, for the rest of a transfer (20 frames/s, 24 KB/s; the
        # `tests/e2e` loopback echoes timed out about 1 run in 8).
        received = received_by_echo(self._delivered, data_recv, echo_recv)
        return max(sent_by_echo - received, 0)

    def _rtt_sample(self, now: float, rtt: float) -> None:
        self.latest_rtt = rtt
        if rtt <= self.min_rtt:
            self.min_rtt, self.min_rtt_at = rtt, now
        elif rtt - self.min_rtt <= MIN_RTT_CONFIRM * self._queue_target():
            self.min_rtt_at = now
        self._probe_min = min(self._probe_min, rtt)
        self._round_rtt = min(self._round_rtt, rtt)
        self._round_sum += rtt
        self._round_samples += 1
        if (
            self.mode == "startup"
            and self._round_samples >= STARTUP_EXIT_SAMPLES
            and not self.app_limited
            and self._round_rtt - self.min_rtt > self._queue_target()
        ):
            self._end_startup()

    def _after_silence(self) -> None:
        """What we sent so far is out of the loss measure (an echo covering some of it restarts
        the round's, `on_ack`) and the next rate sample starts here: what a silence lost (a
        paused receiver's drops, an outage) is no random loss to pace over the link for, and a
        sample across it took the estimate to a fraction of the link (ARCHITECTURE.md)."""
        self.on_peer_resumed()
        self._deliveries.clear()

    def on_peer_resumed(self) -> None:
        self._forgive_until = self._sent_total  # the pause's drops, before any silence counts

    def _probe_rtt(self, now: float, srtt: float) -> None:
        if self.mode == "probe-rtt":
            if now >= self._probe_rtt_until:
                # A higher minimum is believed only once the old one is long unconfirmed: a
                # probe that met another session's queue must not inflate the model.
                if self._probe_min < 1e9 and (
                    self._probe_min <= self.min_rtt or now - self.min_rtt_at > MIN_RTT_EXPIRY
                ):
                    self.min_rtt = self._probe_min
                    self.min_rtt_at = now
                self._next_probe_rtt = _next_multiple(now, PROBE_RTT_PERIOD)
                self._probe_rtt_until, self._remeasured = now, True
                self.mode, self._cycle, self.pacing_gain = "probe", 0, 1.0
        elif self.mode == "probe" and now >= self._next_probe_rtt:
            # Not needed when a sample since the last re-measure (or skipped one) came near a
            # minimum that a re-measure found: the queue empties anyway. Never skipped the first
            # time: a session that met another's queue at its start confirms that queue.
            since = max(self._probe_rtt_until, self._next_probe_rtt - PROBE_RTT_PERIOD)
            if self._remeasured and self.min_rtt_at > since:
                self._next_probe_rtt += PROBE_RTT_PERIOD
                return
            # Nor is a re-measure's a cruise round (nor the one it starts in): it empties the
            # queue on purpose, and the estimate took its spread in (the falling queue of its
            # first round, a quiet path in the others) until the next cruise round ended.
            self.mode, self.pacing_gain, self._cruise_round = "probe-rtt", 1.0, False
            # It ends with every path's next round a 1.25 (`_cycle` 0): a turn held across it,
            # or a refusal count past PROBE_DEFER_ROUNDS, let two paths probe at once after it
            # (review J1, tests/core/test_congestion.py); so turns start afresh.
            self._deferred, self._wait_until = 0, float("-inf")
            if self.turns is not None:
                self.turns.release(self)
            self._probe_rtt_until = now + max(PROBE_RTT_TIME, self._rtt(srtt))
            self._probe_min = float("inf")

    def _sample(self, rate: float, now: float, srtt: float) -> None:
        if self.app_limited and rate < self.btl_bw:
            return  # a quiet sender says nothing about the path's capacity
        bw = self._bw
        while bw and bw[-1][1] <= rate:
            bw.pop()
        bw.append((now, rate))
        horizon = now - BW_WINDOW_ROUNDS * max(self._rtt(srtt), MIN_BW_ROUND)
        while bw[0][0] < horizon:
            bw.popleft()
        self.btl_bw = bw[0][1]

    def _advance(self, now: float, srtt: float) -> None:
        """Once per round (one RTT): the state machine."""
        if now < self._round_end:
            return
        self._round_end = now + self._rtt(srtt)
        self.rounds += 1
        if self._round_samples >= 2 and self._cruise_round:
            spread = self._round_sum / self._round_samples - self._round_rtt
            step = (spread - self._rtt_noise) * RTT_NOISE_RISE
            self._rtt_noise = spread if spread < self._rtt_noise else self._rtt_noise + step
        queued = self._queued(srtt)
        self._round_rtt, self._round_sum, self._round_samples = float("inf"), 0.0, 0
        self._measure_loss()
        if self.mode == "startup":
            if self.app_limited:
                return
            if queued and srtt > STARTUP_EXIT_RTT * self.min_rtt:
                self._full_rounds = FULL_BW_ROUNDS  # a queue is building: the pipe is full
            elif self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
                self._full_bw, self._full_rounds = self.btl_bw, 0
                return
            self._full_rounds += 1
            if self._full_rounds >= FULL_BW_ROUNDS:
                self._end_startup()
        if self.mode == "drain":
            if self.inflight > self.bdp(srtt):
                return
            self.mode, self._cycle = "probe", 0
            self._next_probe_rtt = _next_multiple(now, FIRST_PROBE_RTT_PERIOD)
        if self.mode == "probe":  # (probe-rtt ends by time, in `_probe_rtt`)
            self.pacing_gain = self._next_gain(now)
            self.cwnd_gain, self._queue_round = 2.0, False
            self._cruise_round = self.pacing_gain == 1.0  # (a queued one drains at 0.85)
            if queued and self.pacing_gain <= 1.0:
                # Delay-aware: a standing queue means the estimates run high (ACK batching
                # inflates samples; flows sharing a bottleneck each see the others' drain
                # phases); drain it rather than cruise on top of it, in rate and in window.
                self.pacing_gain = QUEUE_DRAIN_GAIN
                self._queue_round = True  # the window: `cwnd` (BDP + QUEUE_ALLOWANCE)
            else:
                self.pacing_gain /= 1 - min(self.loss_rate, LOSS_COMPENSATION_MAX)

    def _next_gain(self, now: float) -> float:
        """The probe cycle's next pacing gain. With a session's turns (`ProbeTurns`), a probe
        due while another path holds the turn waits (PROBE_DEFER_ROUNDS rounds, and at least
        until the 1.25 round of the path that refused it has ended), and meanwhile this round,
        like any other cruise round, paces at YIELD_GAIN while the holder is in its 1.25
        round, else at 1.0."""
        gain = PROBE_GAINS[self._cycle % len(PROBE_GAINS)]
        turns = self.turns
        if turns is not None:
            if gain > 1.0 and turns.refuse(self, now, self._deferred, self._wait_until):
                if not self._deferred:  # the first refusal: its holder's 1.25 round
                    self._wait_until = turns.up_until
                self._deferred += 1
                return YIELD_GAIN if turns.yields(self, now) else 1.0
            if gain > 1.0:
                turns.take(self, now, self._round_end - now)
                self._deferred = 0
            elif gain == 1.0 and turns.yields(self, now):
                gain = YIELD_GAIN
        self._cycle += 1
        return gain

    def _end_startup(self) -> None:
        self.mode, self.pacing_gain, self.cwnd_gain = "drain", 1 / STARTUP_GAIN, 2.0
        self._queue_round = False

    def _measure_loss(self) -> None:
        """Fold the frames lost since the last measure into the smoothed loss fraction.

        Repeats (frames this path had carried before) are left out of both counts. The peer
        counts a frame once per path (review A1), so a spurious resend on the path that carried
        the first copy never counts: counted as lost, such repeats read as 17-22 % loss on a
        path with none, the cruise paced 1.2x over the link, and the queue made RACK resend
        more, a spiral. Left out, a real loss resent on the same path is undercounted: a little
        rate, not a queue."""
        repeats, echoed = self._round_repeats
        sent = self._sent_total - self._round_sent - (self._repeats - repeats)
        if sent < LOSS_MIN_FRAMES:
            return
        lost = self._lost_echoed - self._round_lost - (self._repeats_echoed - echoed)
        lost = min(max(lost, 0), sent)
        self.loss_rate += (lost / sent - self.loss_rate) * LOSS_EWMA
        self._round_sent, self._round_lost = self._sent_total, self._lost_echoed
        self._round_repeats = (self._repeats, self._repeats_echoed)

    def _queued(self, srtt: float) -> bool:
        """Whether the smoothed RTT, less the path's RTT noise, sits above the minimum by more
        than the queue target."""
        if self.min_rtt > 1e9:
            return False
        return srtt - self.noise_gain * self._rtt_noise - self.min_rtt > self._queue_target()

    def _queue_target(self) -> float:
        return max(self.min_rtt * QUEUE_TARGET_FRACTION, QUEUE_TARGET_MIN)

    # -- what the scheduler asks -------------------------------------------------------------

    def _stale_after(self, srtt: float) -> float:
        return max(STALE_RTTS * srtt, STALE_MIN)

    def _silent(self) -> bool:
        """Silence wrote the window off and no ACK came since."""
        return self._silent_at > self._last_ack_at

    def _stale_at(self, srtt: float) -> float:
        """When what is in flight counts as lost: a stale time after the latest of the last
        ACK, the last write-off and the first send with nothing in flight. One sum for
        `_inflight` and `wake_at`: a float difference a hair under the stale time left the
        silence undeclared at the wake-up it asked for, and the session spun."""
        return max(self._last_ack_at, self._silent_at, self._busy_at) + self._stale_after(srtt)

    def _window(self, srtt: float) -> int:
        # A backlogged path, silent: MIN_WINDOW per stale stretch (room for recovery's probes),
        # not a window: rewritten off every stale stretch, a full window went into a 2 s
        # outage each 0.2 s, the pacing rate into the dark (tests/sim/test_congestion.py's
        # outage). Not a keystroke's path: there the probes' twin copies took all four and
        # keystrokes typed in the dark waited a stretch more (review Q2: the first echo after
        # a 1-1.44 s outage 124.5 ms median, 89 before, 94 now; tests/sim/test_silence.py).
        return MIN_WINDOW if self._capped and self._silent() else self.cwnd(srtt)

    def _inflight(self, now: float, srtt: float) -> int:
        if self.inflight and now >= self._stale_at(srtt):
            if not self._silent():  # the silence begins: was the path backlogged?
                self._capped = not self.app_limited
            self._silent_at = now
            # Silence: all lost, for now. Not for good: a queue that held them longer than
            # this (a startup burst into a 200 ms router queue) delivers them later, and a
            # write-off kept after that let the path keep that many more in flight than its
            # window, for the rest of the session (the two-session fairness test: 8 frames).
            self.write_off()
        return self.inflight

    def write_off(self) -> None:
        self._presumed_at = max(self._delivered, 0)
        self._lost = self._presumed = self._sent_total - self._presumed_at
        self.inflight = 0

    def _refill(self, now: float, rate: float) -> float:
        if self._tokens_at is not None:
            elapsed = now - self._tokens_at
            if elapsed < 0:  # an early release (`budget`) ran the path's clock ahead of now
                return self._tokens
            cap = self._burst(rate)
            if not self.app_limited and self.mode == "probe":  # late, frames waiting: catch up
                # (what a catch-up granted stays until spent: `budget` hands it out
                # TURN_BURSTS bursts per transmit, in event-loop turns a moment apart)
                held = min(self._tokens, rate * PACING_CATCH_UP)
                cap = max(cap, rate * min(elapsed, PACING_CATCH_UP), held)
            self._tokens = min(self._tokens + elapsed * rate, max(cap, 1.0))
        self._tokens_at = now
        return self._tokens

    def budget(self, now: float, srtt: float) -> int | None:
        rate = self.pacing_rate(srtt)  # once per transmit: the hot path
        at = self._tokens_at
        tokens = self._refill(now, rate)
        # A release due soon goes in this transmit; only in the path's first call at `now`
        # (its clock behind now): the scheduler asks again within one transmit, and each ask
        # would take the release after that one too, two steps' worth at once.
        if at is None or at < now:
            due = self._due(rate)
            if now < due <= now + PACING_SLACK:
                tokens = self._refill(due, rate)
        inflight = self._inflight(now, srtt)  # (first: it may find a silence, `_window`)
        room = self._window(srtt) - inflight
        if self.mode == "probe":  # the only mode with catch-up: spend it over several turns
            tokens = min(tokens, TURN_BURSTS * self._burst(rate))
        # A float sum of elapsed x rate lands a hair under a whole frame (0.9999999999994):
        # `wake_at` then says the frame is due now and `int` says it is not, and a session
        # woken at its own timer spins (tests/core/test_seal.py's resend test found it).
        return max(0, min(int(tokens + TOKEN_ROUNDING), room))

    def on_sent(self, now: float, count: int, repeats: int = 0) -> None:
        if not self.inflight:
            self._busy_at = now
        self._tokens -= count
        self.inflight += count
        self._sent_total += count
        if repeats:
            self._repeats += repeats
            log = self._repeat_log
            log.append((self._sent_total, self._repeats))
            if len(log) > REPEAT_LOG_MAX:  # no echo for that long: the oldest are moot
                self._repeats_echoed = log.popleft()[1]
        if self._last_ack_at == float("-inf"):
            self._last_ack_at = now  # silence is counted from the first send

    def on_budget_left(self, left: bool) -> None:
        # Held back by silence's window (`_window`) says nothing of the path's capacity: in
        # startup it counted as rounds with the pipe full, and a paused peer's probes ended
        # the startup of a path that had never filled it (test_congestion_pause.py).
        self.app_limited = left or (self._capped and self._silent())

    def borrow(self, now: float, count: int) -> None:
        self._tokens -= count

    def _due(self, rate: float) -> float:
        """When the budget reaches a release: a step's worth (MIN_PACING_STEP at the rate), at
        least a frame."""
        assert self._tokens_at is not None
        need = min(self._burst(rate), max(1.0, rate * MIN_PACING_STEP)) - self._tokens
        return self._tokens_at + max(need, 0.0) / rate

    def wake_at(self, srtt: float) -> float | None:
        if self._tokens_at is None:
            return None
        rate = self.pacing_rate(srtt)
        at = self._due(rate)
        if self.inflight >= self._window(srtt):  # window-limited: ACKs open it, or silence
            at = max(at, self._stale_at(srtt))
        return at

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": "model-rate",
            "mode": self.mode,
            "rate_bps": self.btl_bw * FRAME_BITS,
            "rate_fps": self.btl_bw,
            "pacing_fps": self.pacing_gain * self.btl_bw,
            "cwnd_frames": self.cwnd(self.latest_rtt or INITIAL_SRTT),
            "inflight_frames": self.inflight,
            "min_rtt": self.min_rtt if self.min_rtt < 1e9 else None,
            "queue_delay": max(0.0, self.latest_rtt - self.min_rtt) if self.min_rtt < 1e9 else None,
            "loss": self.loss_rate,
        }
