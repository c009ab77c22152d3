"""Congestion control in the simulator: links with a rate and a bounded (200 ms) router queue.

What is promised (issue 9): a datagram path's controller converges to the link rate without
keeping a standing queue; random loss does not halve its rate; a transfer leaves room for
keystrokes of another session; two sessions on one bottleneck share it fairly, also when one
first measured its RTT through the other's queue.
"""

from __future__ import annotations

import statistics

import pytest

from dupsession.core.congestion import MIN_PACING_STEP, ModelRate
from dupsession.core.session_base import SessionConfig
from tests.sim.network import (
    START,
    Bottleneck,
    LinkSpec,
    PathSpec,
    SimResult,
    Simulation,
    run_together,
    share_bottleneck,
)

MBIT = 1e6 / 8  #: bytes per second
#: Payload share of a full datagram frame on the wire (1196 of 1232 bytes).
PAYLOAD_SHARE = 1196 / 1232


def bottlenecked(rate: float, delay: float, loss: float = 0.0) -> tuple[PathSpec, Bottleneck]:
    up = Bottleneck(rate, queue=0.2)
    down = Bottleneck(rate, queue=0.2)
    spec = PathSpec(
        LinkSpec(delay=delay, loss=loss, bottleneck=up),
        LinkSpec(delay=delay, loss=loss, bottleneck=down),
    )
    return spec, up


def upload(spec: PathSpec, size: int, seed: int = 1) -> tuple[Simulation, SimResult]:
    sim = Simulation([spec], seed, [bytes(size)], [])
    return sim, sim.run(until=120)


def goodput(result: SimResult, size: int) -> float:
    assert result.exit.received == result.client.sent, result.describe()
    assert result.exit.closed_at is not None, result.describe()
    return size / result.exit.closed_at


def test_converges_to_the_link_rate_without_a_standing_queue() -> None:
    rate, size = 10 * MBIT, 3_000_000
    spec, port = bottlenecked(rate, delay=0.025)
    sim, result = upload(spec, size)
    # the whole transfer, startup included, at >= 85 % of what the link can carry
    assert goodput(result, size) >= 0.85 * rate * PAYLOAD_SHARE, result.describe()
    cc = sim.client.session.paths[0].cc
    assert isinstance(cc, ModelRate)
    assert cc.mode == "probe"
    # the rate estimate is the link's (in frames of 1232 bytes), within 5 %
    assert abs(cc.btl_bw * 1232 - rate) <= 0.05 * rate
    assert cc.min_rtt == pytest_approx(0.05, 0.002)
    # after startup the queue stays short: median wait a small fraction of the 50 ms RTT,
    # and far below the 200 ms the router would hold
    steady = port.waits[len(port.waits) // 2 :]
    assert statistics.median(steady) < 0.015
    assert max(steady) < 0.1


def pytest_approx(value: float, tolerance: float) -> object:
    import pytest

    return pytest.approx(value, abs=tolerance)


def test_random_loss_does_not_halve_the_rate() -> None:
    rate, size = 10 * MBIT, 3_000_000
    clean = goodput(upload(bottlenecked(rate, 0.025)[0], size)[1], size)
    lossy_sim, lossy = upload(bottlenecked(rate, 0.025, loss=0.05)[0], size)
    # 5 % loss each way costs the 5 % resent and little more; a loss-based controller would
    # halve its window on every loss
    assert goodput(lossy, size) >= 0.8 * clean
    cc = lossy_sim.client.session.paths[0].cc
    assert isinstance(cc, ModelRate)
    assert abs(cc.btl_bw * 1232 - rate) <= 0.1 * rate


def test_two_sessions_share_one_bottleneck_fairly() -> None:
    """Two uploads, different RTTs (40 and 60 ms), one 2 Mbit/s uplink with a 200 ms queue.

    Over the second half of 12 s (virtual time): the link is used, the two get a fair share
    (issue 9: Jain's index >= 0.9; this run reaches 1.000, and it was 0.61, about 9:1, when
    first measured, 0.79 before the queue allowance and in-flight fix), no frame is
    tail-dropped and the shared queue's p95 stays under 150 ms.
    """
    rate, total = 2 * MBIT, 12.0
    run = share_bottleneck(rate, total, (0.02, 0.03))
    got, waits = run.got, run.waits
    assert sum(got) >= 0.9 * rate * PAYLOAD_SHARE * total / 2, got
    assert run.jain >= 0.95, (run.jain, got)
    assert run.dropped == 0  # no tail drop: the queue never reached the router's 200 ms
    assert statistics.quantiles(waits, n=20)[18] < 0.15, "queue p95"
    assert statistics.median(waits) < 0.12, "queue p50"


def test_a_session_whose_first_samples_met_a_queue_still_gets_its_share() -> None:
    """Two uploads start together on a 5 Mbit/s uplink, same RTT (50 ms): the second one's
    first frames wait behind the first one's startup burst, and it took that queue for its
    minimum RTT. Seeing no queue of its own after that, it kept the larger share (Jain 0.57,
    0.79 after the in-flight fix); re-measures on the clock's grid drain the queue for both at
    once, so the true minimum shows to both."""
    rate, total = 5 * MBIT, 10.0
    run = share_bottleneck(rate, total, (0.025, 0.025))
    assert run.jain >= 0.95, (run.jain, run.got)
    assert sum(run.got) >= 0.9 * rate * PAYLOAD_SHARE * total / 2, run.got
    assert statistics.quantiles(run.waits, n=20)[18] < 0.05, "queue p95"


def test_a_transfer_leaves_room_for_another_sessions_keystrokes() -> None:
    """Typing in one session while another uploads through the same uplink: the keystrokes
    wait behind the transfer's queue, and that queue stays short."""
    rate = 10 * MBIT
    up = Bottleneck(rate, queue=0.2)
    bulk_spec = PathSpec(LinkSpec(delay=0.02, bottleneck=up), LinkSpec(delay=0.02))
    typing_spec = PathSpec(LinkSpec(delay=0.02, bottleneck=up), LinkSpec(delay=0.02))
    bulk = Simulation([bulk_spec], 1, [bytes(4_000_000)], [])
    keys = [(1.0 + i * 0.05, bytes([i % 251])) for i in range(40)]
    typing = Simulation([typing_spec], 2, keys, [])
    run_together([bulk, typing], until=4.0)
    waits = up.waits[len(up.waits) // 3 :]
    assert statistics.quantiles(waits, n=100)[98] < 0.03  # p99 queueing delay under 30 ms
    assert typing.exit.received == b"".join(k for _, k in keys)


def steady_use(spec: PathSpec, port: Bottleneck, seed: int, size: int, warm: float = 1.0) -> float:
    """The share of `port`'s rate an upload of `size` bytes kept busy, from `warm` s into it
    until its end (everything the port carried: resends too)."""
    sim = Simulation([spec], seed, [bytes(size)], [])
    mark: list[tuple[float, int]] = []

    def stop(s: Simulation) -> bool:
        if not mark and s.now - START >= warm:
            mark.append((s.now - START, port.carried))
        return len(s.exit.received) >= size

    result = sim.run(until=60, stop=stop)
    assert result.exit.received == result.client.sent, result.describe()
    (at, carried) = mark[0]
    return (port.carried - carried) / (port.rate * (result.end - at))


@pytest.mark.parametrize("seed", [1, 2])
def test_delay_jitter_is_not_taken_for_a_standing_queue(seed: int) -> None:
    """One path of 60 ms mean RTT whose frames each take 0-10 ms extra each way (review H2):
    its smoothed RTT sits ~10 ms above the minimum with no queue at all, so a standing queue
    judged from the smoothed RTT drained (0.85) every cruise round and the link stood idle a
    fifth of the time (74-79 % busy). The path's own RTT noise (how far a round's samples sit
    above its lowest) is left out of the smoothed RTT first: 91-94 %. The link's use after the
    first second of a 12 MB upload (its resends included: the jitter reorders frames, and
    RACK resends some)."""
    rate, jitter = 20 * MBIT, 0.01
    port = Bottleneck(rate, queue=0.2)
    spec = PathSpec(
        LinkSpec(delay=0.025, jitter=jitter, bottleneck=port),
        LinkSpec(delay=0.025, jitter=jitter),
    )
    use = steady_use(spec, port, seed, 12_000_000)
    assert use >= 0.9, (seed, use)
    # ...and the noise left out is the jitter's, not a queue's (review I4): a real standing
    # queue still drains. 1.5x the noise: median wait 3.0-3.3 ms; 3x: 5.9; 4x: 7.2-10.5.
    assert statistics.median(port.waits[len(port.waits) // 2 :]) < 0.005, seed


@pytest.mark.parametrize("delay", [0.025, 0.03])
def test_without_jitter_the_noise_term_leaves_the_drain_after_a_probe(delay: float) -> None:
    """Review I1: the RTT noise (`_queued`) is measured on cruise rounds only. Taken from every
    round, a probe's rising queue and its drain's falling one made it ~1 ms on a path with no
    jitter, which cleared the standing-queue verdict at the end of most 0.75 rounds (9 of 11),
    and the cruise after each probe no longer drained what the probe left: the bulk queue's
    median rose from 0.7 to 1.1-1.4 ms (20 Mbit/s, 50 and 60 ms). Second half of 12 MB.
    Measured before each pacing release (`Bottleneck.standing_waits`): a release's own frames
    queue behind each other, more with a 2 ms pacing step than with 1 ms, and that is no
    standing queue. Median there with the noise term on cruise rounds 0.60 and 0.91 ms, from
    every round 1.17 and 1.75 ms (2 ms step; 0.44 / 0.55 against 0.87 / 1.01 at 1 ms: the
    bound is the 2 ms step's and must move with MIN_PACING_STEP, which the first assert pins)."""
    port = Bottleneck(20 * MBIT, queue=0.2)
    spec = PathSpec(LinkSpec(delay=delay, bottleneck=port), LinkSpec(delay=delay))
    sim = Simulation([spec], 1, [bytes(12_000_000)], [])
    result = sim.run(until=60, stop=lambda s: len(s.exit.received) >= 12_000_000)
    assert result.exit.received == result.client.sent, result.describe()
    assert MIN_PACING_STEP == 0.002, "the bound below is the 2 ms step's: recalibrate it"
    assert statistics.median(port.standing_waits(len(port.waits) // 2)) < 0.00105


@pytest.mark.parametrize("outage", [1.0, 2.0, 3.0])
def test_after_an_outage_the_path_resumes_at_its_rate(outage: float) -> None:
    """A 10 Mbit/s, 40 ms datagram path goes dark both ways for 1, 2 or 3 s during a 6 MB
    upload. The first delivery-rate sample after it spanned the silence and the estimate
    fell to it (0.3-2.7 Mbit/s 0.3 s after), and the echoes after it read the frames sent into
    the outage as a round of random loss (0.08-0.13): 2.7 and 0.2 Mbit/s in the second after
    the outage, the 3 s one's upload done in 34 s, not 8.5. What a silence lost is left out of
    the loss measure and no sample spans it (`ModelRate._after_silence`).

    Timed from the first delivery after the outage, which the capped probe timeout sends at
    most `max_backoff` (0.5 s) and a round trip after the light comes back: timed from the
    outage's end, where that probe falls (the pacing step moves it) decided the verdict (at a
    2 ms step the 3 s outage's first delivery came 0.54 s after, at 1 ms 0.04 s). The loss
    measure is read at every step of that second, not at its ends.

    The 2 s outage: each frame's resend deadline ran from its own send, so the window timed
    out one frame per pacing step, and silence wrote the window off every 0.2 s: 1914 frames
    went into the dark (886 in the 1 s one), their late ACKs read as 4.5 % loss, and the rate
    the second after was 2.75 Mbit/s (3 s: 1.9 %, 7.7 Mbit/s). With the probe timeout backed
    off for the session (`Recovery._probe_gate`) and at most MIN_WINDOW in flight while silent
    (`ModelRate._window`): 70-86 frames, no loss read, 9.3 Mbit/s after each outage, the first
    delivery 0.11 / 0.36 / 0.36 s after the light came back."""
    port = Bottleneck(10 * MBIT, queue=0.2)
    dark = ((2.0, 2.0 + outage),)
    spec = PathSpec(
        LinkSpec(delay=0.02, bottleneck=port, outages=dark), LinkSpec(delay=0.02, outages=dark)
    )
    size, back = 6_000_000, 2.0 + outage
    sim = Simulation([spec], 1, [bytes(size)], [])
    before = 0  #: bytes delivered when the outage ended
    first: list[tuple[float, int]] = []  #: (time, bytes) of the first delivery after it
    marks: list[int] = []
    dark_sends = [0, 0]  #: the path's DATA copies sent when the outage began, and ended
    dark_resends = [0, 0]  #: the sender's resend rounds then

    def stop(s: Simulation) -> bool:
        nonlocal before
        now, got = s.now - START, len(s.exit.received)
        cc = next(iter(s.client.session.paths.values())).cc
        assert isinstance(cc, ModelRate)
        resends = s.client.session.sender.retransmissions
        if now < 2.0:
            dark_sends[0], dark_resends[0] = cc._sent_total, resends
        if now < back:
            before = got
            dark_sends[1], dark_resends[1] = cc._sent_total, resends
        elif not first and got > before:
            first.append((now, got))
        if first and now <= first[0][0] + 1:
            assert cc.loss_rate < 0.01, (now, cc.loss_rate)  # 0.0001 (before: 0.019-0.045)
        elif first and not marks:
            marks.append(got - first[0][1])
        return got >= size

    result = sim.run(until=60, stop=stop)
    assert result.exit.received == result.client.sent, result.describe()
    assert first[0][0] - back <= SessionConfig().max_backoff + 0.1, first  # and a round trip
    assert marks[0] >= 0.8 * 10 * MBIT, marks  # the second after: 9.3 Mbit/s each
    # into the dark: the window in flight, then a probe now and then (70-86; before 886-1914)
    assert dark_sends[1] - dark_sends[0] <= 150, dark_sends
    # ...and recovery's probes backed off for the session: 8-10 resend rounds (with the window
    # cap alone 10-18, with neither 372-869: a frame per pacing step)
    assert dark_resends[1] - dark_resends[0] <= 12, dark_resends
