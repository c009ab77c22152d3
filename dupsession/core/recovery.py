"""Loss recovery: the resend timeout, which frames are due for a resend, and when to wake.

The timeout follows the *best* live path (lowest `srtt + 4·rttvar`), never the worst, so one
slow path cannot slow recovery. Frames' resend deadlines live in the sender's heap; this
module decides the timeout they are armed with and collects the ones that expired.
"""

from __future__ import annotations

from collections.abc import Iterable

from dupsession.core.paths import Path, PathState
from dupsession.core.sender import Sender, SentFrame


class Recovery:
    __slots__ = ("_resend", "ack_delay", "max_rto", "min_rto", "rto_value")

    def __init__(self, min_rto: float, max_rto: float, ack_delay: float) -> None:
        self.min_rto = min_rto  #: resend timeout bounds (s)
        self.max_rto = max_rto
        self.ack_delay = ack_delay  #: how long the peer may hold an ACK (s)
        #: The timeout as of the last transmit: per-copy checks read it rather than recompute.
        self.rto_value = max_rto / 2
        self._resend: list[int] = []

    def rto(self, paths: Iterable[Path]) -> float:
        """Resend timeout from the *best* live path: a slow path never delays recovery."""
        best = min(
            (
                p.rtt.srtt + max(4 * p.rtt.rttvar, 0.001)
                for p in paths
                if p.state is PathState.UP and p.rtt.samples
            ),
            default=None,
        )
        if best is None:
            best = self.max_rto / 2
        return min(max(best + self.ack_delay, self.min_rto), self.max_rto)

    def on_timer(self, now: float, sender: Sender) -> None:
        """Collect frames whose resend deadline passed; `take_resends` hands them out."""
        self._resend.extend(f.seq for f in sender.expired(now))

    def take_resends(self, sender: Sender) -> list[SentFrame]:
        """Frames due for a resend that are still unacknowledged, oldest first."""
        table = sender.frames
        resend = [table[s] for s in self._resend if s in table]
        self._resend = []
        return resend

    def deadline(self, sender: Sender) -> float | None:
        return sender.next_deadline()
