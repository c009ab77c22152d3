"""Pacing wake-ups of a session's datagram paths, with hand-held time: a path whose next
release is due within PACING_SLACK of a transmit goes in it (`ModelRate.budget`), so the paths
share their wake-ups, and the pacing stays honest: the rate exact, each release one step's
worth, no path ever ahead of its rate by more than the slack."""

from __future__ import annotations

import pytest

from dupsession.core.congestion import MIN_PACING_STEP, PACING_SLACK, ModelRate
from tests.core.test_congestion import cruising

SRTT = 0.05
STEP = MIN_PACING_STEP  #: times below are in steps, so the tests hold for any step


def backlogged(rate: float, spent_at: float) -> ModelRate:
    """A cruising path pacing at `rate` frames/s with frames always waiting, its budget spent
    to the frame at `spent_at`."""
    cc = cruising(spent_at, rate, SRTT)
    cc.pacing_gain = 1.0
    budget = cc.budget(spent_at, SRTT)
    assert budget
    cc.on_sent(spent_at, budget)
    cc._tokens = 0.0  # the next frame accrues from `spent_at`
    cc.write_off()  # the window never limits these paths (and no ACK moves their gain)
    return cc


def wake_ups(paths: list[ModelRate], until: float) -> list[tuple[float, list[int]]]:
    """A session's loop over its paths: its timer is the earliest of their pacing wake-ups (as
    `Session.get_timer`), and each transmit spends every path's budget. Returns (time, frames
    per path) of each wake-up up to `until`."""
    seen = []
    while True:
        now = min(w for cc in paths if (w := cc.wake_at(SRTT)) is not None)
        if now > until:
            return seen
        sent = []
        for cc in paths:
            budget = cc.budget(now, SRTT)
            assert budget is not None
            cc.on_sent(now, budget)
            sent.append(budget)
            cc.write_off()
        assert any(sent), f"a wake-up at {now} that sent nothing (a busy loop)"
        seen.append((now, sent))


def test_two_paths_due_0_3_steps_apart_wake_the_session_once() -> None:
    """Each path waking at its own phase, relayd's two UDP paths woke it every step each: half
    its transmits (730-1,260 a second at a 1 ms step) were such wake-ups. Two paths due 0.3
    steps apart wake the session once: the later one goes in the earlier one's transmit, and
    from then on every wake-up serves both, one step's worth each."""
    a, b = backlogged(3 / STEP, 1.0), backlogged(2 / STEP, 1.0 + 0.3 * STEP)
    assert a.wake_at(SRTT) == pytest.approx(1.0 + STEP)
    assert b.wake_at(SRTT) == pytest.approx(1.0 + 1.3 * STEP)
    seen = wake_ups([a, b], until=1.0 + 100.5 * STEP)
    assert len(seen) == 100  # one per step, not two
    assert all(sent == [3, 2] for _, sent in seen)
    assert [now for now, _ in seen[:3]] == pytest.approx([1.0 + k * STEP for k in (1, 2, 3)])


@pytest.mark.parametrize("phase", [0.0, 0.37, 0.99])
def test_aligned_paths_keep_their_rates_within_the_slack(phase: float) -> None:
    """Over a second each path sends its pacing rate (within a step's worth and a frame), no
    release is more than a step's worth and the fraction of a frame left over from the last (a
    frame below 1/STEP frames/s), and no path is ever ahead of its rate by more than
    PACING_SLACK: the alignment moves releases, it adds none. Phases and offsets in steps."""
    rates = (3000.0, 2500.0, 1700.0, 700.0)
    starts = [1.0 + (phase + i * 0.21) * STEP for i in range(len(rates))]
    paths = [backlogged(r, s) for r, s in zip(rates, starts, strict=True)]
    seen = wake_ups(paths, until=2.0)
    totals = [0] * len(rates)
    for now, sent in seen:
        for i, (rate, count) in enumerate(zip(rates, sent, strict=True)):
            assert count < rate * MIN_PACING_STEP + 1  # a step's worth and a carried fraction
            totals[i] += count
            assert totals[i] <= rate * (now - starts[i] + PACING_SLACK) + 1e-6
    for rate, start, total in zip(rates, starts, totals, strict=True):
        # (the last wake-up came up to a step before 2.0 s, or released up to the slack ahead)
        assert abs(total - rate * (2.0 - start)) <= rate * MIN_PACING_STEP + 1


def test_a_release_due_within_the_slack_goes_in_a_transmit_and_a_later_one_waits() -> None:
    """A transmit at any moment (an ACK's): a release due within PACING_SLACK goes in it, the
    path's clock running ahead to that due time, and nothing accrues again before that clock;
    one due later waits (a frame every 2 steps here)."""
    cc = backlogged(0.5 / STEP, 1.0)
    due = 1.0 + 2 * STEP
    assert cc.wake_at(SRTT) == pytest.approx(due)
    assert cc.budget(due - PACING_SLACK - 1e-4, SRTT) == 0  # due the slack and 0.1 ms on: waits
    assert cc.budget(due - PACING_SLACK + 1e-4, SRTT) == 1  # due just within it: goes now
    cc.on_sent(due - PACING_SLACK + 1e-4, 1)
    assert cc.wake_at(SRTT) == pytest.approx(due + 2 * STEP)  # a frame's time after its due time
    assert cc.budget(due, SRTT) == 0  # (its clock is at `due`: nothing accrued yet)
    assert cc.budget(due + 2 * STEP - PACING_SLACK + 1e-4, SRTT) == 1


def test_one_transmit_takes_one_release_however_often_it_asks() -> None:
    """The scheduler asks a path's budget more than once in a transmit (`Stripe`, then the
    copies): the release after the one it took is due within the slack too, and taking it as
    well would send two steps' worth at once."""
    cc = backlogged(2.5 / STEP, 1.0)
    assert cc.budget(1.0 + STEP, SRTT) == 2  # its own release (2.5 accrued)
    cc.on_sent(1.0 + STEP, 2)
    assert cc.wake_at(SRTT) == pytest.approx(1.0 + 1.8 * STEP)
    assert cc.budget(1.0 + STEP, SRTT) == 0  # not the next one too
    assert cc.budget(1.0 + 1.1 * STEP, SRTT) == 2  # a later transmit takes it


def test_a_transmit_before_an_early_releases_due_time_takes_nothing() -> None:
    """An early release runs the path's clock ahead to its due time; a transmit before that
    (an ACK's, a moment later) finds the clock ahead of now (`ModelRate._refill`'s guard):
    budget 0, the wake-up unchanged. Without the guard the clock went back to now, and the
    next transmit took the release after it early as well: 2 more frames 0.6 ms before the
    first one's due time, two releases ahead of the rate line."""
    cc = backlogged(2.5 / STEP, 1.0)
    assert cc.budget(1.0 + STEP, SRTT) == 2
    cc.on_sent(1.0 + STEP, 2)
    assert cc.budget(1.0 + 1.01 * STEP, SRTT) == 2  # the release due 1.8 steps on, early
    cc.on_sent(1.0 + 1.01 * STEP, 2)
    wake = cc.wake_at(SRTT)
    assert wake == pytest.approx(1.0 + 2.6 * STEP)
    for now in (1.0 + k * STEP for k in (1.5, 1.6, 1.7)):  # transmits before its due time
        assert cc.budget(now, SRTT) == 0
        cc.on_sent(now, 0)
        assert cc.wake_at(SRTT) == wake
