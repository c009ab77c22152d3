"""The `best-k` policy: every frame on the k paths with the best expected delivery.

The others carry one probe copy of the newest frame now and then, so their figures stay
fresh; a chosen path that stalls or is clearly beaten is swapped out (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from dupsession.core.paths import Path
from dupsession.core.schedule_copies import copy_everything, fill_overflow
from dupsession.core.schedule_paths import alive, budget_now, frame_limit, roles, stalled
from dupsession.core.sender import Sender, SentFrame

#: best-k reviews its choice this often (s), and at once when a chosen path stalls.
REVIEW_INTERVAL = 0.1
#: best-k swaps a chosen path for a candidate only when the candidate's expected delivery is
#: better by this factor and margin (s): no flapping between near-equal paths.
SWAP_FACTOR = 1.25
SWAP_MARGIN = 0.005
#: Paths best-k does not use carry one copy of the newest frame this often (s) while there is
#: data, so their delivery figures (loss, progress) stay fresh.
PROBE_COPY_INTERVAL = 0.25


class BestK:
    """Every frame on the k paths with the best expected delivery (`best-k`)."""

    __slots__ = ("chosen", "k", "next_review", "overflow_next", "probed_at", "reorder_spread")

    def __init__(self, k: int) -> None:
        self.k = k
        self.chosen: list[int] = []
        self.next_review = float("-inf")
        self.probed_at: dict[int, float] = {}
        self.overflow_next = 0
        self.reorder_spread = 0.0

    def wake_at(self) -> float | None:
        return None

    def waiting(self, path: Path, sender: Sender) -> bool:
        return path.path_id in self.chosen and path.cursor < sender.next_seq

    @staticmethod
    def expected_delivery(path: Path, now: float, rto: float) -> float:
        """Seconds a frame sent on `path` alone takes to arrive, counting one resend per loss.

        By our own loss measure (`Path.own_outbound`), not the peer's (`outbound.loss`): a
        replayed genuine copy lowers the peer's figure, so whoever replays copies on a lossy
        path could have it chosen (review G3)."""
        if not alive(path, now):
            return float("inf")
        srtt = path.rtt.srtt
        return srtt + path.own_outbound.loss * (srtt + rto)

    def review(self, now: float, paths: list[Path], sender: Sender, rto: float) -> None:
        """Keep the chosen paths unless one died or a candidate beats it clearly."""
        self.next_review = now + REVIEW_INTERVAL
        score = {p.path_id: self.expected_delivery(p, now, rto) for p in paths}
        by_id = {p.path_id: p for p in paths}
        keep = [i for i in self.chosen if i in score and score[i] < float("inf")]
        rest = sorted((i for i in score if i not in keep), key=lambda i: score[i])
        while len(keep) < self.k and rest and score[rest[0]] < float("inf"):
            keep.append(rest.pop(0))
        while rest and keep:
            worst = max(keep, key=lambda i: score[i])
            if score[rest[0]] * SWAP_FACTOR + SWAP_MARGIN >= score[worst]:
                break
            keep[keep.index(worst)] = rest.pop(0)
        if not keep:  # nothing alive: keep trying the least bad ones
            keep = sorted(score, key=lambda i: (score[i], by_id[i].rtt.srtt))[: self.k]
        for path_id in keep:
            if path_id not in self.chosen:  # newly chosen: carries whatever is unacked
                by_id[path_id].cursor = sender.acked_below
        self.chosen = keep

    def schedule(
        self,
        now: float,
        paths: Iterable[Path],
        sender: Sender,
        resend: list[SentFrame],
        rto: float,
    ) -> dict[int, list[bytes]]:
        primary, overflow = roles(list(paths), now)
        ids = {p.path_id for p in primary}
        if (
            now >= self.next_review
            or any(i not in ids for i in self.chosen)
            or any(stalled(p, now) for p in primary if p.path_id in self.chosen)
        ):
            self.review(now, primary, sender, rto)
        chosen = [p for p in primary if p.path_id in self.chosen]
        out = copy_everything(now, chosen, sender, resend, rto)
        if overflow:
            self.overflow_next = fill_overflow(
                now, chosen, overflow, sender, rto, out, self.overflow_next
            )
        self._probe(now, [p for p in primary if p.path_id not in self.chosen], sender, out)
        for sent in resend:
            if not sent.armed:
                sender.defer(sent, now + rto)
        return out

    def _probe(
        self, now: float, idle: list[Path], sender: Sender, out: dict[int, list[bytes]]
    ) -> None:
        """One copy of the newest frame now and then on each path not chosen."""
        newest = sender.frames.get(sender.next_seq - 1)
        if newest is None:
            return
        for path in idle:
            if now - self.probed_at.get(path.path_id, float("-inf")) < PROBE_COPY_INTERVAL:
                continue
            if len(newest.frame) > frame_limit(path) or budget_now(path, now) <= 0:
                continue
            self.probed_at[path.path_id] = now
            out.setdefault(path.path_id, []).append(newest.frame)
            path.note_data_sent(now, 1)
            path.cc.on_sent(now, 1)
