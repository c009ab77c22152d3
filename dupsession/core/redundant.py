"""The `redundant` policy: every frame on every usable path its controller lets send.

Interactive sessions on bad networks: a loss costs nothing while another copy arrives.
"""

from __future__ import annotations

from collections.abc import Iterable

from dupsession.core.paths import Path
from dupsession.core.policy import Tier
from dupsession.core.schedule_copies import copy_everything, fill_overflow
from dupsession.core.schedule_paths import roles
from dupsession.core.sender import Sender, SentFrame


class Redundant:
    """Every frame on every usable path (the `redundant` policy)."""

    __slots__ = ("fed", "overflow_next", "reorder_spread")

    def __init__(self) -> None:
        self.reorder_spread = 0.0
        self.overflow_next = 0  #: first frame no overflow path has carried
        self.fed: set[int] = set()  #: non-primary paths carrying data by the policy right now

    def wake_at(self) -> float | None:
        return None

    def waiting(self, path: Path, sender: Sender) -> bool:
        return path.cursor < sender.next_seq and (
            path.tier is Tier.PRIMARY or path.path_id in self.fed
        )

    def schedule(
        self,
        now: float,
        paths: Iterable[Path],
        sender: Sender,
        resend: list[SentFrame],
        rto: float,
    ) -> dict[int, list[bytes]]:
        primary, overflow = roles(list(paths), now)
        waiting: set[int] = set()
        out = copy_everything(now, primary, sender, resend, rto, waiting)
        if overflow or self.fed:
            self.fed = {p.path_id for p in primary if p.tier is not Tier.PRIMARY}
        if overflow:
            self.overflow_next = fill_overflow(
                now, primary, overflow, sender, rto, out, self.overflow_next
            )
        for sent in resend:
            if not sent.armed and sent.seq not in waiting:
                sender.defer(sent, now + rto)  # no path can take it now: offer it again later
        return out
