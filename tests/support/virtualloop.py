"""A hand-run event loop on a virtual clock, for running the real glue without asyncio.

`SessionDriver(..., clock=loop.time, loop=loop)` takes it in place of the asyncio loop: time
stands still while callbacks run and jumps to the next due timer (trio's MockClock idea), so
what the driver does is exact and repeatable.

Time standing still makes two kinds of busy loop hang a test instead of spinning a core:
callbacks that keep scheduling callbacks with call_soon, and timers that keep re-arming
themselves due at once (call_at(now), call_later(0)). Both fail here with an AssertionError.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

#: Rounds of call_soon callbacks scheduled by callbacks, at one instant, that make a busy loop;
#: also the timers armed and fired at one instant (the clock standing) that make one.
BUSY_ROUNDS = 1000


class _Timer:
    def __init__(self, callback: Callable[[], object], armed_at: float) -> None:
        self.callback: Callable[[], object] | None = callback
        self.armed_at = armed_at  #: the clock when it was armed

    def cancel(self) -> None:
        self.callback = None


class VirtualLoop:
    """call_soon, call_at and time, on a clock that jumps to the next due timer."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._soon: list[Callable[[], object]] = []
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        #: Timers fired at `_standing_at` that were armed at that same instant.
        self._standing_at = start
        self._standing_fired = 0

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], object]) -> None:
        self._soon.append(callback)

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(callback, self.now)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        return self.call_at(self.now + delay, callback)

    def _fire(self, timer: _Timer) -> None:
        """Run a due timer. One armed at the instant it fires, the clock not having moved in
        between, was due at once; more than BUSY_ROUNDS of them at one instant are a timer
        re-armed for now forever (the call_soon busy loop in another form): it fails here."""
        callback = timer.callback
        if callback is None:
            return
        if timer.armed_at == self.now:
            if self._standing_at != self.now:
                self._standing_at, self._standing_fired = self.now, 0
            self._standing_fired += 1
            if self._standing_fired > BUSY_ROUNDS:
                raise AssertionError(
                    f"timers still re-armed for t={self.now} after {BUSY_ROUNDS} firings "
                    f"with the clock standing (busy loop; last: {callback!r})"
                )
        callback()

    def run_soon(self) -> None:
        """One loop iteration's worth: what was scheduled with call_soon, time standing.

        Callbacks that keep scheduling callbacks at one instant are a busy loop in the glue
        (relayd's probe echo was one): it fails here rather than hanging the test."""
        for _ in range(BUSY_ROUNDS):
            ready, self._soon = self._soon, []
            for callback in ready:
                callback()
            if not self._soon:
                return
        raise AssertionError(f"call_soon callbacks still rescheduled after {BUSY_ROUNDS} rounds")

    def run_due(self) -> None:
        """The timers due by now, each with the loop iteration it starts; time standing."""
        timers = self._timers
        while timers and timers[0][0] <= self.now:
            timer = heapq.heappop(timers)[2]
            if timer.callback is not None:
                self._fire(timer)
                self.run_soon()

    def run_until(self, done: Callable[[], bool], horizon: float) -> None:
        while not done():
            self.run_soon()
            if done() or not self._timers:
                return
            when, _, timer = heapq.heappop(self._timers)
            assert when <= horizon, f"not done by t={horizon}"
            self.now = max(self.now, when)
            self._fire(timer)
