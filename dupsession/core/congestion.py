"""Congestion control: one controller per path, deciding how much that path may send now.

The shape follows aioquic's `quic/congestion/base.py`: the session tells a path's controller
what it sent and what the peer reported, and asks it how many frames may go now and when
that changes (the pacing deadline, which becomes one of the session's timers). A controller
never picks frames or paths; that is the scheduler's job (`core/scheduler.py`).

Stream paths (TCP, SSH) have the kernel's congestion control on the wire; their controller
only keeps our own socket queue short.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class CongestionController:
    """The interface every controller implements. The base class never limits anything."""

    __slots__ = ()

    def budget(self, now: float, srtt: float) -> int | None:
        """Frames the path may send now; None means no limit."""
        return None

    def on_sent(self, now: float, count: int) -> None:
        """`count` DATA frames went out on the path at `now`."""

    def wake_at(self, srtt: float) -> float | None:
        """When `budget` grows again while the path has frames waiting (None: never by time)."""
        return None

    def snapshot(self) -> dict[str, Any]:
        """The controller's state for `dupsession status --json`."""
        return {"kind": "none"}


class RateCap(CongestionController):
    """At most `burst` frames per smoothed RTT: keeps a saturated uplink from drowning its own
    ACKs. A rate cap, not congestion control (it never backs off)."""

    __slots__ = ("burst", "recent")

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.recent: deque[float] = deque()  #: send times of the frames in the current window

    def budget(self, now: float, srtt: float) -> int | None:
        recent = self.recent
        horizon = now - max(srtt, 0.001)
        while recent and recent[0] <= horizon:
            recent.popleft()
        return self.burst - len(recent)

    def on_sent(self, now: float, count: int) -> None:
        self.recent.extend([now] * count)

    def wake_at(self, srtt: float) -> float | None:
        return self.recent[0] + max(srtt, 0.001) if self.recent else None

    def snapshot(self) -> dict[str, Any]:
        return {"kind": "rate-cap", "cwnd_frames": self.burst, "inflight_frames": len(self.recent)}
