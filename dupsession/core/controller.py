"""The interface of a path's congestion controller: what the session tells it, what it asks.

The shape follows aioquic's `quic/congestion/base.py`: the session tells a path's controller
what it sent and what the peer reported, and asks it how many frames may go now and when
that changes (the pacing deadline, which becomes one of the session's timers). A controller
never picks frames or paths; that is the scheduler's job (`core/scheduler.py`). Datagram
paths run `congestion.ModelRate`, stream paths `stream_window.StreamWindow`.
"""

from __future__ import annotations

from typing import Any


class CongestionController:
    """The interface every controller implements. The base class never limits anything."""

    __slots__ = ()

    def budget(self, now: float, srtt: float) -> int | None:
        """Frames the path may send now; None means no limit."""
        return None

    def on_sent(self, now: float, count: int, repeats: int = 0) -> None:
        """`count` DATA frames went out on the path at `now`; `repeats` of them had gone out
        on this path before (resends there: the peer counts a frame once per path)."""

    def wake_at(self, srtt: float) -> float | None:
        """When `budget` grows again while the path has frames waiting (None: never by time)."""
        return None

    def borrow(self, now: float, count: int) -> None:
        """`count` frames of this path's budget went out on another path of the same link
        (`schedule_paths.benched`): they use its pacing, not its window (they are not in flight
        here)."""

    def write_off(self) -> None:
        """Count everything in flight as lost (the connection that held it was replaced),
        until the peer's counter shows it arrived after all."""

    def on_ack(
        self,
        now: float,
        data_recv: int,
        rtt: float | None,
        srtt: float,
        sent_by_echo: int | None,
        echo_recv: int | None = None,
    ) -> None:
        """The peer's ACK on this path: its DATA-received counter (mod 2**32), an RTT sample,
        how many DATA frames we had sent here when the timestamp it echoes left and, when the
        ACK carries it, the peer's counter (mod 2**32) when that timestamp arrived."""

    def on_peer_resumed(self) -> None:
        """The ACK about to be applied reopened the window of the peer's paused consumer: what
        the next echo on this path shows lost, the pause dropped (it is no network loss)."""

    def on_budget_left(self, left: bool) -> None:
        """Whether the last transmit left budget unused (the sender had nothing more)."""

    def snapshot(self) -> dict[str, Any]:
        """The controller's state for `dupsession status --json`."""
        return {"kind": "none"}
