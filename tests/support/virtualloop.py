"""A hand-run event loop on a virtual clock, for running the real glue without asyncio.

`SessionDriver(..., clock=loop.time, loop=loop)` takes it in place of the asyncio loop: time
stands still while callbacks run and jumps to the next due timer (trio's MockClock idea), so
what the driver does is exact and repeatable.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

#: Rounds of call_soon callbacks scheduled by callbacks, at one instant, that make a busy loop.
BUSY_ROUNDS = 1000


class _Timer:
    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None


class VirtualLoop:
    """call_soon, call_at and time, on a clock that jumps to the next due timer."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._soon: list[Callable[[], object]] = []
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], object]) -> None:
        self._soon.append(callback)

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

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
                timer.callback()
                self.run_soon()

    def run_until(self, done: Callable[[], bool], horizon: float) -> None:
        while not done():
            self.run_soon()
            if done() or not self._timers:
                return
            when, _, timer = heapq.heappop(self._timers)
            assert when <= horizon, f"not done by t={horizon}"
            self.now = max(self.now, when)
            if timer.callback is not None:
                timer.callback()
