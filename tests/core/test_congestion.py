"""The datagram paths' controller (`ModelRate`) with hand-held time: exact budgets and state."""

from __future__ import annotations

import itertools

import pytest

from dupsession.core.congestion import (
    BW_WINDOW_ROUNDS,
    INITIAL_WINDOW,
    LOSS_COMPENSATION_MAX,
    LOSS_EWMA,
    MIN_BURST,
    MIN_PACING_STEP,
    MIN_WINDOW,
    PACING_CATCH_UP,
    PROBE_GAINS,
    PROBE_RTT_TIME,
    QUEUE_ALLOWANCE,
    QUEUE_DRAIN_GAIN,
    STALE_MIN,
    STARTUP_GAIN,
    TURN_BURSTS,
    ModelRate,
)
from dupsession.core.controller import CongestionController
from dupsession.core.probe_turns import PROBE_DEFER_ROUNDS, YIELD_GAIN, ProbeTurns
from dupsession.core.session import SessionConfig
from dupsession.core.stream_window import StreamWindow
from tests.support.session import T0, Pair, data_frames

SRTT = 0.05


def test_stream_paths_are_not_limited_by_the_base_controller() -> None:
    cc = CongestionController()
    assert cc.budget(0.0, SRTT) is None
    assert cc.wake_at(SRTT) is None


def test_first_budget_is_the_initial_window_then_pacing_refills_it() -> None:
    cc = ModelRate()
    assert cc.budget(10.0, SRTT) == INITIAL_WINDOW
    cc.on_sent(10.0, INITIAL_WINDOW)
    assert cc.budget(10.0, SRTT) == 0
    # no estimate yet: paced at startup gain x initial window per RTT
    rate = STARTUP_GAIN * INITIAL_WINDOW / SRTT
    assert cc.pacing_rate(SRTT) == pytest.approx(rate)
    # the next wake is when a release (a pacing step's worth, at most MIN_BURST) has refilled...
    need = max(1.0, rate * MIN_PACING_STEP)
    assert cc.wake_at(SRTT) == pytest.approx(10.0 + min(MIN_BURST, need) / rate)
    # ...and tokens never pile up beyond one burst (2 ms at the rate, at least MIN_BURST)
    assert cc.budget(10.01, SRTT) == int(max(MIN_BURST, rate * 0.002))


def test_inflight_counts_what_the_peer_received_and_what_its_echo_shows_lost() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 20)
    cc.on_ack(1.05, data_recv=10, rtt=0.05, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == 10
    # the echoed timestamp left after 20 frames; the peer has 17: 3 were lost
    cc.on_ack(1.06, data_recv=17, rtt=0.05, srtt=SRTT, sent_by_echo=20)
    assert cc.inflight == 0
    assert cc.min_rtt == pytest.approx(0.05)


def test_silence_releases_the_window() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    window = cc.cwnd(SRTT)
    cc.on_sent(1.0, window)
    cc.on_ack(1.05, data_recv=0, rtt=0.05, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == window
    assert cc.budget(1.05 + STALE_MIN - 1e-6, SRTT) == 0  # window full, still waiting
    assert cc.budget(1.05 + STALE_MIN + 1e-6, SRTT) > 0  # silent too long: counted lost
    assert cc.inflight == 0


def test_frames_written_off_by_silence_come_back_into_flight_when_they_arrive() -> None:
    """A startup burst into a 200 ms router queue outlasts the silence rule: everything is
    written off, then arrives. Kept written off, those frames let the path hold that many
    more in flight than its window for the rest of the session; nor were they lost."""
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 30)
    cc.on_ack(1.0, data_recv=0, rtt=None, srtt=SRTT, sent_by_echo=None)  # the counter's base
    cc.budget(1.0 + STALE_MIN + 0.01, SRTT)
    assert cc.inflight == 0  # silence: all 30 written off
    # 10 of them arrive: 20 still count as lost, and the frames sent since stay in flight
    cc.on_sent(1.3, 5)
    cc.on_ack(1.35, data_recv=10, rtt=0.3, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == 5
    # the first echo after the queue drained: all 30 arrived, and 2 of the next 5 did not
    cc.on_ack(1.4, data_recv=33, rtt=0.1, srtt=SRTT, sent_by_echo=35)
    assert cc.inflight == 0
    assert cc._lost == cc._lost_echoed == 2
    # an older echo repeated with a later count proves no less lost
    cc.on_sent(1.4, 4)
    cc.on_ack(1.45, data_recv=35, rtt=None, srtt=SRTT, sent_by_echo=35)
    assert (cc._lost, cc.inflight) == (2, 2)


def test_counter_wraparound_and_reordered_acks() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    start = 2**32 - 5
    cc.on_ack(1.0, data_recv=start, rtt=None, srtt=SRTT, sent_by_echo=None)
    cc.on_ack(1.01, data_recv=5, rtt=None, srtt=SRTT, sent_by_echo=None)  # wrapped: +10
    cc.on_ack(1.02, data_recv=3, rtt=None, srtt=SRTT, sent_by_echo=None)  # older: ignored
    assert cc.snapshot()["kind"] == "model-rate"
    assert cc._delivered == start + 10


def cruising(now: float = 1.0, rate: float = 100.0, min_rtt: float = SRTT) -> ModelRate:
    """A controller past startup, its estimates set by hand, the next round a cruise round."""
    cc = ModelRate()
    cc.mode, cc.btl_bw, cc._cycle, cc.app_limited = "probe", rate, 2, False
    cc.min_rtt, cc.min_rtt_at = min_rtt, now
    cc.on_ack(now, data_recv=0, rtt=None, srtt=min_rtt, sent_by_echo=None)  # the counter's base
    return cc


def test_a_cruise_round_paces_above_the_delivery_rate_by_the_random_loss_it_measured() -> None:
    cc = cruising()
    cc.on_sent(1.0, 100)
    # the echoed timestamp left after all 100; the peer has 90: 10 % lost this round, smoothed
    # by 1/8 into the loss rate, and the cruise round sends that much more than arrives
    cc.on_ack(1.06, data_recv=90, rtt=SRTT, srtt=SRTT, sent_by_echo=100)
    assert cc.loss_rate == pytest.approx(0.1 * LOSS_EWMA)
    assert cc.pacing_gain == pytest.approx(1 / (1 - 0.1 * LOSS_EWMA))


def test_a_round_with_a_standing_queue_drains_whatever_the_loss() -> None:
    cc = cruising()
    cc.loss_rate = 0.1
    cc.on_sent(1.0, 100)
    # the smoothed RTT 20 ms above the minimum (queue target 12.5 ms): our own queue, so the
    # loss may be our overshoot's; the round drains at the queue gain, no compensation
    cc.on_ack(1.06, data_recv=90, rtt=0.07, srtt=0.07, sent_by_echo=100)
    assert cc.pacing_gain == QUEUE_DRAIN_GAIN
    # and its window is one BDP plus a few frames, whatever the rate: each flow sharing the
    # queue holds as many frames in it, so a FIFO queue serves them equally
    assert cc.cwnd(0.07) == int(cc.bdp(0.07)) + QUEUE_ALLOWANCE


def test_loss_compensation_is_capped() -> None:
    cc = cruising()
    cc.loss_rate = 0.9
    cc.on_sent(1.0, 100)
    cc.on_ack(1.06, data_recv=10, rtt=SRTT, srtt=SRTT, sent_by_echo=100)
    assert cc.pacing_gain == pytest.approx(1 / (1 - LOSS_COMPENSATION_MAX))


def leaving_drain(now: float, rate: float = 100.0, min_rtt: float = SRTT) -> ModelRate:
    """A controller whose drain ends at `now` (its estimates set by hand)."""
    cc = ModelRate()
    cc.mode, cc.btl_bw, cc.app_limited = "drain", rate, False
    cc.min_rtt, cc.min_rtt_at = min_rtt, now
    cc.on_ack(now, data_recv=0, rtt=None, srtt=min_rtt, sent_by_echo=None)
    assert cc.mode == "probe"
    return cc


def test_paths_re_measure_the_min_rtt_together_on_a_grid_of_the_clock() -> None:
    """Sessions sharing a bottleneck must drain it together for any of them to see the true
    minimum, so every path re-measures at the same multiples of the clock. The first time
    whatever its samples say: one that began behind another's queue keeps confirming an
    inflated minimum."""
    for cc in (leaving_drain(100.3, rate=1000.0), leaving_drain(100.7, rate=1000.0)):
        cc.on_ack(100.99, data_recv=0, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
        assert cc.mode == "probe"
        # the first re-measure at the next whole second after startup: both at 101 s
        cc.on_ack(101.0, data_recv=0, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
        assert cc.mode == "probe-rtt"
        assert cc.cwnd(SRTT) == int(cc.bdp(SRTT) / 2) > MIN_WINDOW  # half a BDP in flight
        cc.on_ack(101.1, data_recv=0, rtt=0.04, srtt=SRTT, sent_by_echo=None)  # the queue left
        cc.on_ack(101.0 + PROBE_RTT_TIME, data_recv=0, rtt=0.04, srtt=SRTT, sent_by_echo=None)
        assert (cc.mode, cc.min_rtt) == ("probe", 0.04)
        # then on the 5 s grid, unless a sample near that re-measured minimum showed this
        # period that the queue empties anyway (a probe costs a busy path half its rate)
        cc.on_ack(104.99, data_recv=0, rtt=0.06, srtt=0.06, sent_by_echo=None)  # a queue
        assert cc.mode == "probe"
        cc.on_ack(105.0, data_recv=0, rtt=0.06, srtt=0.06, sent_by_echo=None)
        assert cc.mode == "probe-rtt"
        # a higher minimum (another host's queue) is not believed while ours is confirmed
        cc.on_ack(105.3, data_recv=0, rtt=0.06, srtt=0.06, sent_by_echo=None)
        assert (cc.mode, cc.min_rtt) == ("probe", 0.04)
        cc.on_ack(107.0, data_recv=0, rtt=0.041, srtt=0.05, sent_by_echo=None)  # confirmed
        cc.on_ack(110.0, data_recv=0, rtt=0.06, srtt=0.06, sent_by_echo=None)
        assert cc.mode == "probe"  # skipped: the queue emptied at 107 s
        cc.on_ack(115.0, data_recv=0, rtt=0.06, srtt=0.06, sent_by_echo=None)
        assert cc.mode == "probe-rtt"


def test_a_re_measure_of_the_min_rtt_leaves_the_rtt_noise_alone() -> None:
    """The RTT noise (`_queued`) is measured on cruise rounds only (review I1), and a
    re-measure's rounds (and the one it starts in) are none: they empty the queue on purpose.
    Taken in, the falling queue of its first round raised the noise and its quiet rounds then
    zeroed it (on a path with jitter too), and the verdicts up to the next cruise round's end,
    the drain after the probe that follows every re-measure among them, were judged on that."""
    cc = cruising(now=100.0, min_rtt=0.05)
    for i, rtt in enumerate((0.05, 0.052, 0.054, 0.05)):  # a cruise round: some noise
        cc.on_ack(100.02 + 0.01 * i, data_recv=0, rtt=rtt, srtt=0.051, sent_by_echo=None)
    noise = cc._rtt_noise
    assert noise > 0 and cc.mode == "probe"
    cc._next_probe_rtt = 100.055  # a re-measure is due (on the clock's grid)
    now, rtt = 100.06, 0.06
    while cc.mode != "probe" or cc.pacing_gain <= 1.0:  # up to the probe after it
        # its queue drains (0.06 -> 0.05), then the path is quiet
        cc.on_ack(now, data_recv=0, rtt=rtt, srtt=0.051, sent_by_echo=None)
        assert cc._rtt_noise == noise, (now, cc.mode)
        now, rtt = now + 0.005, max(0.05, rtt - 0.002)
    assert now > 100.06 + PROBE_RTT_TIME


def test_an_interactive_session_in_startup_keeps_the_initial_window() -> None:
    """Keystrokes never fill the pipe, so their path stays in startup with a rate estimate
    of a few frames per second; a window sized from that (4 frames) held keystrokes back
    behind a lost one's resends. Startup keeps at least its initial window and rate."""
    cc = ModelRate()
    now = 1.0
    for i in range(40):  # a keystroke every 50 ms, each acknowledged one RTT later
        cc.budget(now, SRTT)
        cc.on_sent(now, 1)
        cc.on_budget_left(True)
        cc.on_ack(now + SRTT, data_recv=i + 1, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
        now += 0.05
    assert cc.mode == "startup"
    assert 0 < cc.btl_bw < 30  # the estimate is the typing rate (20/s), not the path's
    assert cc.cwnd(SRTT) == INITIAL_WINDOW
    assert cc.pacing_rate(SRTT) == pytest.approx(STARTUP_GAIN * INITIAL_WINDOW / SRTT)


def test_after_startup_a_delivery_rate_sample_spans_two_round_trips() -> None:
    cc = cruising(now=1.0, rate=100.0)
    # one round trip after the base: 10 frames in 60 ms would read 167/s (the peer's timer
    # ACKs are not aligned with arrivals; over one short RTT that error is large): no sample
    cc.on_ack(1.06, data_recv=10, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
    assert cc.btl_bw == 100.0
    cc.on_ack(1.11, data_recv=12, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
    assert cc.btl_bw == pytest.approx(12 / 0.11)  # two round trips: the sample counts


def spend(cc: ModelRate, now: float) -> list[int]:
    """The budgets of transmits at `now` (event-loop turns a moment apart), each sent in full,
    until the path has no more tokens."""
    turns = []
    while (budget := cc.budget(now, SRTT)) and len(turns) < 100:
        wake = cc.wake_at(SRTT)
        assert wake is not None and wake <= now  # tokens left: the next turn is due at once
        cc.on_sent(now, budget)
        turns.append(budget)
    return turns


def test_a_late_wake_up_of_a_backlogged_path_gets_its_sending_time_back() -> None:
    """An event loop busy elsewhere (or a loaded CPU) wakes a paced path late; a path with
    frames waiting gets the missed time back, up to PACING_CATCH_UP, so it sends at its pacing
    rate on average. Capped at one burst, every late wake-up lost sending time: on the
    netlab the paths sent ~15 % under their rate and their estimates stalled below the link.
    The time comes back a few bursts per transmit (`TURN_BURSTS`), in consecutive event-loop
    turns: spent in one, it made relayd's turns 4-16 ms long on the netlab, and every other
    session it serves waited for them."""
    cc = cruising(now=1.0, rate=2000.0)
    rate = cc.pacing_rate(SRTT)  # 2000/s in a cruise round: 4 frames per 2 ms burst
    burst = int(max(MIN_BURST, rate * 0.002))
    assert spend(cc, 1.0)
    cc.on_budget_left(False)  # frames left waiting: its wake is `wake_at`, ~1 ms on
    turns = spend(cc, 1.008)  # woken 7 ms late: 8 ms' worth, TURN_BURSTS per transmit
    assert sum(turns) == int(0.008 * rate) > burst * TURN_BURSTS
    assert max(turns) == burst * TURN_BURSTS < sum(turns)
    # never more than PACING_CATCH_UP's worth, however late (short of the stale time, 0.2 s
    # with no ACK: silence caps the window, `test_silence_keeps_min_window_in_flight...`)
    turns = spend(cc, 1.15)
    assert sum(turns) == int(PACING_CATCH_UP * rate)
    assert max(turns) == burst * TURN_BURSTS < sum(turns)
    # a path with nothing to send (app-limited) keeps one burst, as before: a keystroke after
    # a quiet second goes out at once, a new transfer starts paced
    cc.on_budget_left(True)
    assert cc.budget(1.5, SRTT) == burst


def test_a_reconnected_stream_path_starts_with_an_empty_window() -> None:
    """Review C9: what the old connection held no longer fills the new one's window. Kept
    until the first echo on the new connection showed it lost, it held the path back for a
    round trip. Frames the old connection still delivers then change nothing."""
    small = SessionConfig(large_frames=False)
    pair = Pair(datagram=False, client=small, exit=small)
    client = pair.client
    now = pair.connect(T0, delay=0.025)
    client.send(bytes(200_000))
    out = client.transmit(now)
    cc = client.paths[0].cc
    assert isinstance(cc, StreamWindow)
    sent = len(data_frames(out))
    assert cc.inflight == sent == cc.cwnd(SRTT)  # the window is full
    client.add_path(0, False, now + 0.01)  # the connection died; the glue opened a new one
    assert cc.inflight == 0
    assert cc.budget(now + 0.01, SRTT) == cc.cwnd(SRTT)
    resent = data_frames(client.transmit(now + 0.01))
    assert resent[0] == data_frames(out)[0]  # from the oldest unacked frame, on the new one
    assert cc.inflight == len(resent)
    # the old connection's first 3 frames did arrive: still only the new ones are in flight
    cc.on_ack(now + 0.04, data_recv=3, rtt=None, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == len(resent)


def test_repeats_on_a_path_are_left_out_of_its_loss_fraction() -> None:
    """The peer counts a frame once per path, so a spurious resend on the path that carried
    the frame never shows as received. Counted as lost, such repeats read as 17-22 % loss on a
    loss-free path (the seed-like simulation) and the cruise paced 1.2x over the link."""
    cc = cruising()
    cc.on_sent(1.0, 100, repeats=10)  # 10 of them went on this path before, and had arrived
    cc.on_ack(1.06, data_recv=90, rtt=SRTT, srtt=SRTT, sent_by_echo=100)
    assert cc.loss_rate == 0.0
    assert cc.pacing_gain == pytest.approx(1.0)
    assert cc.inflight == 0  # in flight, the repeats are written off as before
    # real loss still counts: 90 new frames, 9 of them lost (repeats sent later do not yet
    # count: the echo left before them)
    cc.on_sent(1.07, 90)
    cc.on_sent(1.08, 20, repeats=20)
    cc.on_ack(1.13, data_recv=171, rtt=SRTT, srtt=SRTT, sent_by_echo=190)
    assert cc._repeats_echoed == 10
    cc.on_ack(1.2, data_recv=171, rtt=SRTT, srtt=SRTT, sent_by_echo=190)
    assert cc.loss_rate == pytest.approx(9 / 90 * LOSS_EWMA)


def run_paths(
    paths: list[ModelRate], seconds: float, remeasure_at: float | None = None
) -> list[list[tuple[float, float]]]:
    """ACK every path each ms at its min RTT for `seconds`: each one's (time, pacing gain) at
    every change. `remeasure_at`: every path's min-RTT re-measure falls due then (the clock's
    grid makes a session's paths re-measure together)."""
    gains: list[list[tuple[float, float]]] = [[] for _ in paths]
    now = 1.0
    while now < 1.0 + seconds:
        if remeasure_at is not None and abs(now - remeasure_at) < 0.0005:
            for cc in paths:
                cc._next_probe_rtt, cc._remeasured = now, False
        for i, cc in enumerate(paths):
            cc.on_ack(now, data_recv=0, rtt=cc.min_rtt, srtt=cc.min_rtt, sent_by_echo=None)
            if not gains[i] or gains[i][-1][1] != cc.pacing_gain:
                gains[i].append((now, cc.pacing_gain))
        now += 0.001
    return gains


def probe_spans(changes: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """(start, end of the 1.25 round, end of the 0.75 round after it) of each probe."""
    out, start, up_end = [], None, None
    for at, gain in changes:
        if start is not None and up_end is not None:
            out.append((start, up_end, at))
            start, up_end = None, None
        if gain > 1.0:
            start = at
        elif gain == PROBE_GAINS[1] and start is not None:
            up_end = at
    return out


def test_a_sessions_datagram_paths_probe_in_turns_and_a_lone_path_as_before() -> None:
    """ProbeTurns: the 1.25 rounds of two paths of one session (the netlab's uplinks: 55 and
    75 ms rounds) never overlap, and a probe starts inside the other's turn (its 0.75 round)
    only once it waited PROBE_DEFER_ROUNDS rounds; the other path cruises at YIELD_GAIN while
    the holder's 1.25 round lasts (not through its 0.75: review H3), so a keystroke's copy on
    it passes a short queue; and neither path goes without its probes: they stay within its
    bandwidth window."""
    turns = ProbeTurns()
    paths = [cruising(min_rtt=0.055), cruising(min_rtt=0.075)]
    for cc in paths:
        cc.turns, cc._cycle = turns, 0  # both due to probe in their next round
    up1, up2 = run_paths(paths, 6.0)
    probes1, probes2 = probe_spans(up1), probe_spans(up2)
    for (mine, rtt), theirs in (((probes1, 0.055), probes2), ((probes2, 0.075), probes1)):
        for a0, a1, _ in mine:
            for b0, b1, b2 in theirs:
                assert a1 <= b0 or b1 <= a0, ((a0, a1), (b0, b1))  # 1.25 rounds apart
                # a start inside the other's turn is a probe that waited its limit
                assert not b0 <= a0 < b2 or a0 >= b0 + PROBE_DEFER_ROUNDS * rtt, (a0, b0)
    # each still probes about once per cycle of 8 rounds (6 s: 13.6 and 10 cycles), and never
    # more than BW_WINDOW_ROUNDS rounds (+ the 1 ms steps) after its last probe
    assert len(probes1) >= 10 and len(probes2) >= 8, (len(probes1), len(probes2))
    for probes, rtt in ((probes1, 0.055), (probes2, 0.075)):
        gaps = [(b[0] - a[0]) / rtt for a, b in itertools.pairwise(probes)]
        assert max(gaps) <= BW_WINDOW_ROUNDS + 0.5, gaps
    # a cruise round while the other is in its 1.25 round paces at YIELD_GAIN (it drains its
    # own queue while the other's probe stands); during the other's 0.75 round it cruises
    for gains, theirs in ((up1, probes2), (up2, probes1)):
        yields = [at for at, g in gains if g == YIELD_GAIN and at < theirs[-1][2]]
        assert yields
        assert all(any(b0 <= at < b1 for b0, b1, _ in theirs) for at in yields), yields
    # a path of its own (no turns: every single-path session, every fairness test) probes
    # once per cycle, exactly as before
    (alone,) = run_paths([cruising(min_rtt=0.055)], 6.0)
    assert [g for _, g in alone][:3] == [1.0, PROBE_GAINS[0], PROBE_GAINS[1]]
    assert YIELD_GAIN not in {g for _, g in alone}
    assert len(probe_spans(alone)) >= 13


@pytest.mark.parametrize(
    ("fast", "slow", "grid"),
    [(0.055, 0.075, 2.0), (0.055, 0.075, 2.45965), (0.02, 0.12, 2.09193), (0.02, 0.12, 2.11095)],
)
def test_a_re_measure_resets_the_probe_turn_and_the_deferral(
    fast: float, slow: float, grid: float
) -> None:
    """Review J1: a re-measure ends with every path's next round a 1.25. Kept across it, the
    holder's turn let it take a new one at once, and the waiter's count of refusals (past
    PROBE_DEFER_ROUNDS, its wait long over) let it probe at the same time: the 1.25 rounds
    overlapped once after a re-measure that began mid-deferral (11 of 200 grid phases at
    55/75 ms, 7 at 20/120; these are four of them). A re-measure gives up the turn and the
    deferral, so the turns start afresh."""
    turns = ProbeTurns()
    paths = [cruising(min_rtt=fast), cruising(min_rtt=slow)]
    for cc in paths:
        cc.turns, cc._cycle = turns, 0
    gains = run_paths(paths, 3.0, remeasure_at=grid)
    assert all(cc._remeasured and cc._probe_rtt_until > grid for cc in paths)  # it happened
    probes1, probes2 = (probe_spans(g) for g in gains)
    for a0, a1, _ in probes1:
        for b0, b1, _ in probes2:
            assert a1 <= b0 or b1 <= a0, ((a0, a1), (b0, b1))


def test_only_the_holder_releases_a_probe_turn() -> None:
    """A re-measure gives up its own turn (`release`), never another path's: a path that
    re-measures while the other holds the turn must leave it held, or the two 1.25 rounds
    overlap."""
    turns, holder, other = ProbeTurns(), object(), object()
    turns.take(holder, now=1.0, round_time=0.05)
    turns.release(other)
    assert turns.refuse(other, now=1.01, deferred=0, wait_until=turns.up_until)
    assert turns.yields(other, now=1.01) and turns.up_until == 1.05
    turns.release(holder)
    assert not turns.refuse(other, now=1.01, deferred=0, wait_until=1.05)
    assert not turns.yields(other, now=1.01)


@pytest.mark.parametrize(("fast", "slow"), [(0.015, 0.075), (0.02, 0.12)])
def test_a_fast_path_waits_out_a_slow_ones_1_25_round(fast: float, slow: float) -> None:
    """Review I5: beside a path whose rounds are 4-6 times its own (Wi-Fi beside LTE), a
    refused probe's PROBE_DEFER_ROUNDS rounds end inside the other's 1.25 round; counted in
    its own rounds alone it then probed on top of it (4 overlaps in 6 s each here). The wait
    runs at least to the end of the refusing holder's 1.25 round, so the 1.25 rounds never
    overlap, and the fast path's probes are at most that one slow round later."""
    turns = ProbeTurns()
    paths = [cruising(min_rtt=fast), cruising(min_rtt=slow)]
    for cc in paths:
        cc.turns, cc._cycle = turns, 0
    gains = run_paths(paths, 6.0)
    probes1, probes2 = (probe_spans(g) for g in gains)
    for a0, a1, _ in probes1:
        for b0, b1, _ in probes2:
            assert a1 <= b0 or b1 <= a0, ((a0, a1), (b0, b1))
    for probes, rtt, other in ((probes1, fast, slow), (probes2, slow, fast)):
        gaps = [(b[0] - a[0]) / rtt for a, b in itertools.pairwise(probes)]
        # its cycle, then at most the other's 1.25 round (or its own 2 rounds), + 1 round
        limit = len(PROBE_GAINS) + max(other / rtt, PROBE_DEFER_ROUNDS) + 1
        assert len(gaps) >= 6.0 / rtt / limit - 1 and max(gaps) <= limit, gaps


def test_silence_keeps_min_window_in_flight_until_an_ack_comes() -> None:
    """No ACK for the stale time (0.2 s here): what is in flight is written off, and until an
    ACK comes a path that was backlogged (not app-limited) keeps at most MIN_WINDOW frames in
    flight per stale stretch, room for recovery's probes. Written off afresh every stale
    stretch with the whole window open, a path sent its pacing rate into a 2 s outage (1000
    frames a second on 10 Mbit/s), and the resends that outage made read as loss after it
    (tests/sim/test_congestion.py)."""
    cc = cruising(now=1.0, rate=2000.0)
    window = cc.cwnd(SRTT)
    assert window > 10 * MIN_WINDOW
    cc.on_sent(1.0, 8)
    stale = 1.0 + STALE_MIN  # (STALE_MIN > 3 x SRTT)
    assert cc.budget(stale - 0.01, SRTT) > MIN_WINDOW  # not silent yet: paced, window open
    for stretch in range(3):
        at = stale + STALE_MIN * stretch
        assert cc.budget(at, SRTT) == MIN_WINDOW and cc.inflight == 0, stretch
        cc.on_sent(at, MIN_WINDOW)
        assert cc.budget(at + 0.05, SRTT) == 0
        # window-limited: it wakes when the next stale stretch would write these off
        assert cc.wake_at(SRTT) == pytest.approx(at + STALE_MIN)
    cc.on_ack(1.65, data_recv=2, rtt=SRTT, srtt=SRTT, sent_by_echo=None)
    assert not cc._silent() and cc.budget(1.66, SRTT) > MIN_WINDOW


def test_a_silent_path_that_was_not_backlogged_keeps_its_window() -> None:
    """A keystroke's path falls silent (an outage while typing): recovery's probes go twice on
    a lone path and would take all of MIN_WINDOW, holding the keystrokes typed in the dark
    back a stale stretch more (review Q2, tests/sim/test_silence.py). Its window stays."""
    cc = cruising(now=1.0, rate=2000.0)
    cc.on_sent(1.0, 2)
    cc.on_budget_left(True)  # nothing more to send: app-limited
    at = 1.0 + STALE_MIN
    assert cc.budget(at, SRTT) > MIN_WINDOW and cc.inflight == 0  # written off, not capped
    assert cc._silent()
