"""Congestion controllers for tests: simple, predictable stand-ins for the session's own."""

from __future__ import annotations

from collections import deque

from dupsession.core.controller import CongestionController


class Window(CongestionController):
    """At most `frames` per smoothed RTT on a path: a small window so that one path cannot
    take everything at once and the policy has to decide. Not the session's own controller,
    so these tests see the policies alone."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.sent: deque[float] = deque()

    def budget(self, now: float, srtt: float) -> int | None:
        while self.sent and self.sent[0] <= now - srtt:
            self.sent.popleft()
        return self.frames - len(self.sent)

    def on_sent(self, now: float, count: int, repeats: int = 0) -> None:
        self.sent.extend([now] * count)

    def wake_at(self, srtt: float) -> float | None:
        return self.sent[0] + srtt if self.sent else None
