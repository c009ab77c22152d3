"""How far ahead of its rate a paced path can send when transmits come a moment apart.

A transmit takes a path's next release early when it is due within PACING_SLACK (a whole
step), so two transmits microseconds apart (the pacing timer's, then an ACK's) can each take
a release: two steps' worth back to back. That is the documented cost of sharing wake-ups
(`congestion.PACING_SLACK`, ARCHITECTURE.md "Pacing"); these tests pin its bound: never more
than a step's worth ahead of the rate line, never more than two steps' worth in one burst."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core.congestion import MIN_PACING_STEP, ModelRate
from tests.core.test_congestion import cruising

SRTT = 0.05
START = 1.0
#: Transmits this close together count as one burst (s): well under a step.
BACK_TO_BACK = 50e-6


def on_time_path(rate: float) -> ModelRate:
    """A cruising path pacing at `rate` frames/s, frames always waiting, its budget spent at
    START (its rate line starts there, with under a frame in hand)."""
    cc = cruising(START, rate, SRTT)
    cc.pacing_gain = 1.0
    while budget := cc.budget(START, SRTT):
        cc.on_sent(START, budget)
        cc.write_off()  # the window never limits it (and no ACK moves its gain)
    return cc


def transmit(cc: ModelRate, now: float) -> int:
    """A session's transmit: the scheduler asks each path's budget twice (`Stripe`, then the
    copies), and sends what it allows."""
    sent = 0
    for _ in range(2):
        budget = cc.budget(now, SRTT)
        assert budget is not None
        cc.on_sent(now, budget)
        cc.write_off()
        sent += budget
    return sent


def run(cc: ModelRate, acks: list[float], until: float) -> list[tuple[float, int]]:
    """The path's pacing timer (at its `wake_at`) and ACK transmits at the times `acks`,
    merged in time order: (time, frames) of every transmit up to `until`."""
    pending = sorted(acks)
    seen: list[tuple[float, int]] = []
    while True:
        wake = cc.wake_at(SRTT)
        assert wake is not None
        now = min(wake, pending[0]) if pending else wake
        if now > until:
            return seen
        if pending and pending[0] == now:
            pending.pop(0)
        seen.append((now, transmit(cc, now)))


def assert_bounded(rate: float, seen: list[tuple[float, int]]) -> None:
    step = max(1.0, rate * MIN_PACING_STEP)  # a release: a step's worth, at least a frame
    total = 0
    for now, count in seen:
        total += count
        # never more than a step ahead of the rate line (PACING_SLACK's worth), and the
        # fraction of a frame that was in hand at START
        assert total < rate * (now - START + MIN_PACING_STEP) + 1, (now, total)
    for i, (first, _) in enumerate(seen):
        burst = sum(count for now, count in seen[i:] if now - first <= BACK_TO_BACK)
        # two releases back to back at most, each a step's worth and a carried fraction
        assert burst < 2 * step + 1 + rate * BACK_TO_BACK, (first, burst)


def test_a_timer_transmit_then_an_acks_a_moment_later_send_two_steps_back_to_back() -> None:
    """The case the docs describe: at 2.5 frames a step the timer's transmit takes its release
    (2 frames) and an ACK's transmit 0.01 steps later takes the next, due 0.8 steps on (2
    more): 4 frames back to back, 1.5 ahead of the rate line, under its step's worth."""
    step = MIN_PACING_STEP
    rate = 2.5 / step
    cc = on_time_path(rate)
    cc._tokens = 0.0  # no fraction in hand: the releases below are 2.5 frames each
    first = transmit(cc, START + step)
    second = transmit(cc, START + 1.01 * step)
    assert (first, second) == (2, 2)
    assert first + second <= rate * (1.01 * step + step)
    assert transmit(cc, START + 1.02 * step) == 0  # a third takes nothing: the clock is a step on


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([300.0, 700.0, 1700.0, 2500.0, 3000.0, 5200.0]),
    acks=st.lists(st.floats(min_value=0.0, max_value=0.05), max_size=60),
    twins=st.lists(st.floats(min_value=1e-6, max_value=40e-6), max_size=60),
)
def test_closely_spaced_transmits_stay_within_a_step_of_the_rate_line(
    rate: float, acks: list[float], twins: list[float]
) -> None:
    """ACK transmits at any moments between the timer's, some a few microseconds after
    another (`twins`): the path is never ahead of its rate line by more than the slack, and
    no burst of transmits within BACK_TO_BACK sends more than two releases."""
    times = [START + a for a in acks]
    times += [t + d for t, d in zip(times, twins, strict=False)]
    seen = run(on_time_path(rate), times, until=START + 0.06)
    assert_bounded(rate, seen)
