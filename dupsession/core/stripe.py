"""The `stripe` and `auto` policies: each frame once, on the path expected to deliver it
first (ECF/BLEST; a keystroke twice there when that is a lossy datagram path), with deadline
and tail re-injection; `auto` (`Stripe(copy_spare=True)`) also copies frames in flight onto
whatever budget the paths have left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from dupsession.core.paths import Path
from dupsession.core.policy import Tier
from dupsession.core.schedule_copies import (
    TWICE_FRAME,
    doubles,
    fill_overflow,
    hand_out,
    note_twin,
)
from dupsession.core.schedule_paths import (
    ACK_SLACK,
    benched,
    budget_now,
    delivery_rate,
    frame_limit,
    one_way_delay,
    path_rto,
    rank,
    roles,
    sendable,
    stalled,
)
from dupsession.core.sender import Sender, SentFrame

#: Copies of frames in flight a path with spare budget looks back over (frames).
COPY_LOOKBACK = 256

#: Hands one frame to one path: (path, frame, track it for deadline re-injection).
Take = Callable[[Path, SentFrame, bool], None]


class Stripe:
    """Each frame once, on the path expected to deliver it first (`stripe`); with
    `copy_spare`, spare budget copies frames in flight on other paths (`auto`)."""

    #: Whether `schedule` takes its shortcut for a transmit with nothing to hand out (`_idle`);
    #: tests/sim/test_idle_schedule.py turns it off to check that both ways run alike.
    skip_idle = True

    __slots__ = (
        "copy_spare",
        "flight",
        "next_new",
        "overflow_next",
        "owd",
        "pending",
        "reinjected",
        "reinjections",
        "reorder_spread",
        "starved",
    )

    def __init__(self, copy_spare: bool = False) -> None:
        self.copy_spare = copy_spare
        self.next_new = 0  #: first frame no path has carried yet
        self.overflow_next = 0
        #: Per path: (when its ACK is overdue, frame number) of single copies, in send order.
        self.flight: dict[int, deque[tuple[float, int]]] = {}
        self.reinjected: set[int] = set()  #: frames already re-sent by deadline
        self.reinjections = 0
        self.reorder_spread = 0.0
        #: Paths that stopped for want of budget with frames left for them. A path the ECF
        #: rule left idle waits for an input (an ACK, new data), not for its pacing timer.
        self.starved: set[int] = set()
        self.owd: dict[int, float] = {}  #: expected one-way delay of each path in use (s)
        self.pending: list[SentFrame] = []  #: resends no path had room for yet

    def wake_at(self) -> float | None:
        heads = [q[0][0] for q in self.flight.values() if q]
        return min(heads) if heads else None

    def waiting(self, path: Path, sender: Sender) -> bool:
        return path.path_id in self.starved and (
            self.next_new < sender.next_seq or bool(self.pending)
        )

    def schedule(
        self,
        now: float,
        paths: Iterable[Path],
        sender: Sender,
        resend: list[SentFrame],
        rto: float,
    ) -> dict[int, list[bytes]]:
        paths = list(paths)
        if self.skip_idle and self._idle(now, paths, sender, resend):
            return {}
        primary, overflow = roles(paths, now)
        ranked, spare = rank(primary, now)
        budget = {p.path_id: budget_now(p, now) for p in ranked + spare}
        self.owd = {p.path_id: one_way_delay(p) for p in ranked + overflow + spare}
        frames: dict[int, list[bytes]] = {p.path_id: [] for p in ranked + spare}
        counts = dict.fromkeys(budget, 0)
        #: frames a path carried before (resends there), for its controller's loss measure
        repeats = {p.path_id: 0 for p in ranked + spare}
        self.next_new = max(self.next_new, sender.acked_below)

        def take(path: Path, sent: SentFrame, track: bool) -> None:
            pid = path.path_id
            frames[pid].append(sent.frame)
            budget[pid] -= 1
            counts[pid] += 1
            repeats[pid] += (sent.on_paths >> pid) & 1
            sent.on_paths |= 1 << pid
            sender.sent(sent, now, path_rto(path, rto))
            if track:
                sent.path = pid
                rtt = path.rtt
                due = now + rtt.srtt + max(2 * rtt.rttvar, 0.002) + ACK_SLACK
                self.flight.setdefault(pid, deque()).append((due, sent.seq))

        carry = max((frame_limit(p) for p in ranked), default=0)

        def fastest(size: int, exclude: int = -1) -> Path | None:
            # a frame no ranked path can carry goes on a benched one that can (review D1)
            for path in ranked if size <= carry else spare:
                if (
                    budget[path.path_id] > 0
                    and size <= frame_limit(path)
                    and path.path_id != exclude
                ):
                    return path
            return None

        # 1. resends (lost or timed out)
        self._resend(sender, resend, budget, fastest, take)
        # 2. deadline re-injection: single copies unacknowledged past their expected ACK go
        #    once more on a faster path
        self._reinject(now, sender, ranked, budget, take)
        # 3. new frames, each on the path expected to deliver it first
        self._assign(now, sender, ranked, budget, take)
        if spare:
            self._hand_over(sender, carry, spare, budget, take)
        if self.pending:  # resends wait for room: the pacing timers must wake us
            self.starved |= {pid for pid, room in budget.items() if room <= 0}
        # 4. spare budget: auto copies frames in flight elsewhere; stripe re-sends only the
        #    slower paths' frames that this path would deliver sooner (the transfer's tail);
        self._copy_spare(now, sender, ranked, budget, take)
        if spare:
            self._lend(now, sender, ranked, spare, budget, counts, take)
        benched_ids = {p.path_id for p in spare}
        out: dict[int, list[bytes]] = {}
        for path in ranked + spare:
            pid = path.path_id
            # a benched path is held back by the policy, not by its data: app-limited
            left = self.next_new >= sender.next_seq or pid in benched_ids
            hand_out(path, now, counts[pid], budget[pid], left, out, frames[pid], repeats[pid])
        if overflow:
            self.overflow_next = fill_overflow(
                now, ranked, overflow, sender, rto, out, max(self.overflow_next, self.next_new)
            )
            self.next_new = max(self.next_new, self.overflow_next)
        self.reorder_spread = self._spread(ranked)
        self._forget_reinjected(sender)
        return out

    def _forget_reinjected(self, sender: Sender) -> None:
        if len(self.reinjected) > 4096:
            low = sender.acked_below
            self.reinjected = {s for s in self.reinjected if s >= low}

    def _idle(self, now: float, paths: list[Path], sender: Sender, resend: list[SentFrame]) -> bool:
        """Whether this transmit has nothing to hand out, and if so its bookkeeping done: the
        state the full schedule would leave, without its roles, ranks, budgets and passes.

        Most transmits of an interactive session are such: the copies of a keystroke that came
        first on another path, the copies of its ACK (loopback, 2 UDP + 2 TCP: ~5 transmits
        per keystroke at each end, each the whole schedule). Nothing to hand out means no
        resend waits, no new frame, no single copy in flight overdue (nothing to re-inject),
        every usable path's cursor at the newest frame (nothing to copy), no tiers (no
        overflow, no quiet backups) and no stalled path (it would be left out of the ranks).
        The full schedule then only moves these: the acknowledged copies leave `flight`, each
        path's controller refills its budget (`budget_now`) and is told it left budget unused
        (`hand_out`: app-limited), `stalled` retires a stall past STALL_RETRY, nothing is
        starved, and the reorder spread is taken anew."""
        self.next_new = next_new = max(self.next_new, sender.acked_below)
        if resend or self.pending or next_new < sender.next_seq:
            return False
        in_flight = self._drop_acknowledged(now, sender)
        if in_flight is None:
            return False
        usable = []
        for path in paths:
            if path.tier is not Tier.PRIMARY:
                return False
            if sendable(path):
                if path.cursor < next_new:
                    return False
                usable.append(path)
        if any(stalled(path, now) for path in usable):
            return False  # `stalled` is idempotent: the full schedule's calls find the same
        for path in usable:
            budget_now(path, now)  # the controller's pacing clock moves as in `schedule`
            hand_out(path, now, 0, 0, True, {}, [])
        self.starved = set()
        spread = 0.0
        if in_flight:  # `_spread` over `rank`'s ranked paths: here the usable ones not benched
            bench = benched(usable, now)
            spread = self._spread([p for p in usable if p.path_id not in bench] or usable)
        self.reorder_spread = spread
        self._forget_reinjected(sender)
        return True

    def _drop_acknowledged(self, now: float, sender: Sender) -> bool | None:
        """Drops the acknowledged single copies off the heads of `flight`, as `_reinject`
        does; whether any is left in flight, None if one is overdue (a re-injection's)."""
        frames = sender.frames
        in_flight = False
        for queue in self.flight.values():
            while queue and queue[0][1] not in frames:
                queue.popleft()
            if queue:
                if queue[0][0] <= now:
                    return None
                in_flight = True
        return in_flight

    def _resend(
        self,
        sender: Sender,
        resend: list[SentFrame],
        budget: dict[int, int],
        fastest: Callable[[int], Path | None],
        take: Take,
    ) -> None:
        """Resends, oldest first, each on the fastest path with room, in as many copies as
        recovery asked for (within that path's budget; a stream path never loses one). What
        finds no room waits here, first in line, not re-armed: re-armed, recovery would find
        it lost again on every ACK."""
        table, waiting, self.pending = sender.frames, self.pending, []
        if waiting:
            resend = sorted({s.seq: s for s in waiting + resend}.values(), key=lambda s: s.seq)
        for sent in resend:
            if sent.seq not in table or sent.armed:
                continue  # acknowledged meanwhile, or sent again by another route
            path = fastest(len(sent.frame))
            if path is None:
                self.pending.append(sent)
                continue
            take(path, sent, True)
            extra = min(sent.copies - 1, budget[path.path_id]) if path.datagram else 0
            for _ in range(extra):
                take(path, sent, False)

    def _spread(self, ranked: list[Path]) -> float:
        """How much later than the fastest path a single copy in flight may arrive (s): RACK
        must not call that loss. Only paths that hold a frame nowhere else count (each queue
        in `flight` starts with one not yet acknowledged nor overdue, once `_reinject` ran):
        a keystroke that went first on the fastest path and was copied elsewhere (`auto`, idle
        paths) is lost when its fast copy is, and a reorder window widened by the slow path's
        delay would only hold its resend back."""
        if len(ranked) < 2:  # one path reorders against no other: RACK's own window covers
            return 0.0  # its jitter (this was its 2·rttvar: 25-40 ms in a session's first second)
        flight = self.flight
        slowest = max(
            (p.rtt.srtt + 2 * p.rtt.rttvar for p in ranked if flight.get(p.path_id)),
            default=None,
        )
        return 0.0 if slowest is None else max(slowest - min(p.rtt.srtt for p in ranked), 0.0)

    def _reinject(
        self, now: float, sender: Sender, ranked: list[Path], budget: dict[int, int], take: Take
    ) -> None:
        frames = sender.frames
        owd = self.owd
        for pid, queue in self.flight.items():
            while queue and (queue[0][1] not in frames or queue[0][0] <= now):
                due, seq = queue.popleft()
                sent = frames.get(seq)
                if sent is None or sent.path != pid or seq in self.reinjected or due > now:
                    continue
                mine = owd.get(pid, float("inf"))
                for path in ranked:
                    if (
                        path.path_id != pid
                        and owd[path.path_id] <= mine
                        and budget[path.path_id] > 0
                        and len(sent.frame) <= frame_limit(path)
                    ):
                        self.reinjected.add(seq)
                        self.reinjections += 1
                        take(path, sent, False)
                        break

    def _assign(
        self, now: float, sender: Sender, ranked: list[Path], budget: dict[int, int], take: Take
    ) -> None:
        seq = self.next_new
        self.starved = set()
        faster_rate = 0.0
        fastest_owd = one_way_delay(ranked[0]) if ranked else 0.0
        for path in ranked:
            seq = self._take_new(path, sender, seq, budget, take, faster=(faster_rate, fastest_owd))
            faster_rate += delivery_rate(path)
        self.next_new = seq

    def _hand_over(
        self, sender: Sender, carry: int, spare: list[Path], budget: dict[int, int], take: Take
    ) -> None:
        """Frames longer than any ranked path carries go on a benched path that can carry
        them, in order (they are the oldest: cut at 16 KiB while only stream paths were up,
        `Session.max_payload`). Left to the ranked paths, `_assign` stopped at the first one
        for good, and the session wedged with both paths alive (review D1)."""
        seq = self.next_new
        for path in spare:
            seq = self._take_new(path, sender, seq, budget, take, shortest=carry + 1)
        self.next_new = seq

    def _take_new(
        self,
        path: Path,
        sender: Sender,
        seq: int,
        budget: dict[int, int],
        take: Take,
        shortest: int = 0,
        faster: tuple[float, float] = (0.0, 0.0),
    ) -> int:
        """New frames from `seq` on `path`, in order, while its budget lasts; returns the next
        frame's number. It stops at the first frame shorter than `shortest` or longer than the
        path carries, and (ECF) where the faster paths, `faster` = (their summed rate, the
        fastest one's one-way delay), would still deliver the rest no later than this path
        would: the frame is left to their queues. A path whose budget ran out first starves.
        A keystroke goes twice on a lossy datagram path (`schedule_copies.doubles`): its one
        copy there lost, it would come by a slower path (docs/BENCHMARKS.md "Twins for
        `auto`")."""
        end, frames = sender.next_seq, sender.frames
        pid, owd, limit = path.path_id, one_way_delay(path), frame_limit(path)
        faster_rate, fastest_owd = faster
        twice = doubles(path, end - seq, budget[pid])
        while seq < end and budget[pid] > 0:
            if faster_rate and (end - seq) / faster_rate + fastest_owd <= owd:
                break
            sent = frames.get(seq)
            if sent is not None and not shortest <= len(sent.frame) <= limit:
                break
            seq += 1
            if sent is not None:
                take(path, sent, True)
                if twice and len(sent.frame) <= TWICE_FRAME:
                    take(path, sent, False)  # the twin: a repeat to the controller (`take`)
                    note_twin(path)
        if seq < end and budget[pid] <= 0:
            self.starved.add(pid)
        return seq

    def _lend(
        self,
        now: float,
        sender: Sender,
        ranked: list[Path],
        spare: list[Path],
        budget: dict[int, int],
        counts: dict[int, int],
        take: Take,
    ) -> None:
        """Benched stream paths copy frames within what the datagram path on their link left
        unused, and that path's controller is charged for them (`borrow`): the link carries
        no more than its datagram controller lets it, whichever path the bytes take. An idle
        shell's keystrokes still go on every path; a transfer's copies do not double the
        link's load."""
        for path in spare:
            pid = path.path_id
            lenders = [p for p in ranked if p.datagram and p.link == path.link]
            lender = max(lenders, key=lambda p: budget[p.path_id], default=None)
            room = 0 if lender is None else budget[lender.path_id]
            budget[pid] = min(budget[pid], room) if room > 0 else 0
            granted = budget[pid]
            if granted <= 0 or lender is None:
                continue
            self._copy_spare(now, sender, [path], budget, take)
            used = granted - budget[pid]
            if used:
                budget[lender.path_id] -= used
                lender.cc.borrow(now, used)

    def _copy_spare(
        self, now: float, sender: Sender, ranked: list[Path], budget: dict[int, int], take: Take
    ) -> None:
        frames = sender.frames
        owd = self.owd
        start = max(sender.acked_below, self.next_new - COPY_LOOKBACK)
        for path in ranked:
            pid = path.path_id
            if budget[pid] <= 0:
                continue
            mine, limit = owd[pid], frame_limit(path)
            seq = max(start, path.cursor)
            while seq < self.next_new and budget[pid] > 0:
                sent = frames.get(seq)
                seq += 1
                if sent is None or sent.path == pid or len(sent.frame) > limit:
                    continue
                if not self.copy_spare:
                    # stripe: only a frame this path would deliver before its own copy arrives
                    theirs = owd.get(sent.path)  # None: its path is stalled or gone
                    if theirs is not None and sent.sent_at + theirs <= now + mine:
                        continue
                take(path, sent, False)
            path.cursor = seq
