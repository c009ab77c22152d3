"""The virtual test loop itself (tests/support/virtualloop.py): it runs timers on a clock that
jumps, and fails the glue's busy loops, which on a standing clock would otherwise hang a test
(review F3: a timer re-armed for the instant it fires was not caught, only call_soon chains)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.virtualloop import BUSY_ROUNDS, VirtualLoop

T0 = 100.0


def test_timers_that_advance_run_in_order_on_a_jumping_clock() -> None:
    loop = VirtualLoop(T0)
    ticks: list[float] = []
    late: list[float] = []
    rounds = 3 * BUSY_ROUNDS

    def tick() -> None:  # re-arms itself 1 ms ahead: the clock moves, not a busy loop
        ticks.append(loop.now)
        if len(ticks) < rounds:
            loop.call_later(0.001, tick)

    loop.call_at(T0 + 0.5, lambda: late.append(loop.now))
    loop.call_later(0.0, tick)
    loop.run_until(lambda: len(ticks) == rounds, horizon=T0 + 10)
    assert ticks[:2] == [T0, T0 + 0.001]
    assert ticks == sorted(ticks)
    assert late == [T0 + 0.5]
    assert loop.now == pytest.approx(T0 + 0.001 * (rounds - 1))


def test_many_timers_due_at_one_instant_are_not_a_busy_loop() -> None:
    """Frames of one flush arrive together: thousands of timers armed earlier, due at once."""
    loop = VirtualLoop(T0)
    fired: list[float] = []
    for _ in range(5 * BUSY_ROUNDS):
        loop.call_at(T0 + 0.01, lambda: fired.append(loop.now))
    loop.now = T0 + 0.01
    loop.run_due()
    assert fired == [T0 + 0.01] * (5 * BUSY_ROUNDS)


def test_a_timer_re_armed_once_at_its_own_instant_runs() -> None:
    """Due at once a few times at one instant (a deadline that was already past) is fine."""
    loop = VirtualLoop(T0)
    fired: list[float] = []

    def again() -> None:
        fired.append(loop.now)
        if len(fired) < 3:
            loop.call_at(loop.now, again)

    loop.call_at(T0 + 1, again)
    loop.run_until(lambda: len(fired) == 3, horizon=T0 + 2)
    assert fired == [T0 + 1] * 3


def _forever(loop: VirtualLoop, arm: Callable[[Callable[[], None]], object]) -> Callable[[], None]:
    def rearm() -> None:
        arm(rearm)

    return rearm


@pytest.mark.parametrize(
    "arm",
    [
        lambda loop, cb: loop.call_at(loop.now, cb),
        lambda loop, cb: loop.call_later(0.0, cb),
        lambda loop, cb: loop.call_at(loop.now - 1.0, cb),  # a deadline already past
    ],
    ids=["call_at(now)", "call_later(0)", "call_at(past)"],
)
@pytest.mark.parametrize("runner", ["run_until", "run_due"])
@pytest.mark.timeout(20)  # without the check the loop spins until a timeout: keep it short
def test_a_timer_re_armed_at_the_same_instant_forever_is_a_busy_loop(
    arm: Callable[[VirtualLoop, Callable[[], None]], object], runner: str
) -> None:
    loop = VirtualLoop(T0)
    rearm = _forever(loop, lambda cb: arm(loop, cb))
    loop.call_at(T0 + 1, rearm)
    with pytest.raises(AssertionError, match="busy loop"):
        if runner == "run_until":
            loop.run_until(lambda: False, horizon=T0 + 2)
        else:
            loop.now = T0 + 1
            loop.run_due()
    assert loop.now == T0 + 1  # caught with the clock standing where the loop began


def test_the_busy_loop_check_starts_afresh_at_each_instant() -> None:
    """BUSY_ROUNDS zero-delay re-arms at each of several instants: a count per instant."""
    loop = VirtualLoop(T0)
    fired: list[float] = []

    def burst() -> None:
        fired.append(loop.now)
        if len(fired) % BUSY_ROUNDS:
            loop.call_later(0.0, burst)
        else:
            loop.call_later(0.001, burst)

    loop.call_soon(burst)
    loop.run_until(lambda: len(fired) >= 4 * BUSY_ROUNDS, horizon=T0 + 1)
    assert sorted(set(fired)) == pytest.approx([T0, T0 + 0.001, T0 + 0.002, T0 + 0.003])


def test_a_call_soon_chain_is_a_busy_loop() -> None:
    loop = VirtualLoop(T0)

    def again() -> None:
        loop.call_soon(again)

    loop.call_soon(again)
    with pytest.raises(AssertionError, match="call_soon"):
        loop.run_soon()
