"""A set of non-negative integers stored as sorted, disjoint, non-adjacent [start, end) runs.

The shape of selective acks and of the receiver's "what have I got above the cumulative ack".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int | None = None) -> None:
        """Add [start, end); `end` defaults to start + 1."""
        stop = start + 1 if end is None else end
        if stop <= start:
            return
        starts, ends = self._starts, self._ends
        # first run whose end >= start (touches or overlaps), last run whose start <= stop
        lo = bisect.bisect_left(ends, start)
        hi = bisect.bisect_right(starts, stop)
        if lo < hi:
            start = min(start, starts[lo])
            stop = max(stop, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [stop]

    def remove_below(self, bound: int) -> None:
        """Drop every value < bound (the cumulative ack moved)."""
        starts, ends = self._starts, self._ends
        idx = bisect.bisect_right(ends, bound)
        del starts[:idx]
        del ends[:idx]
        if starts and starts[0] < bound:
            starts[0] = bound

    def __contains__(self, value: int) -> bool:
        idx = bisect.bisect_right(self._starts, value) - 1
        return idx >= 0 and value < self._ends[idx]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def first(self) -> tuple[int, int]:
        return self._starts[0], self._ends[0]

    def pop_first(self) -> tuple[int, int]:
        return self._starts.pop(0), self._ends.pop(0)

    def lowest(self, count: int) -> tuple[tuple[int, int], ...]:
        """The `count` lowest runs: what fits in one ACK, nearest the frames that time out first."""
        return tuple(zip(self._starts[:count], self._ends[:count], strict=True))
