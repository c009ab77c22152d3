"""Scheduling: which DATA frame goes on which path, and when. One interface, several policies.

A policy sees the paths (state, RTT, controller, tier), the sender's shared buffer of unacked
frames and the frames recovery wants resent, and returns the DATA frames per path for this
transmit. It never builds ACKs (the session adds those) and never decides that a frame is lost
(`core/recovery.py` does). Each direction is scheduled by the end that sends it, by the policy
the client chose for the session (`core/policy.py`).

- `Redundant`: every frame on every usable path its controller lets send.
- `BestK`: every frame on the k paths with the best recent delivery; the others carry one
  probe copy now and then so their figures stay fresh; a degraded path is swapped out.
- `Stripe`: each frame once, on the path expected to deliver it first (ECF/BLEST: a slower
  path takes a frame only when the faster ones' queue would deliver it later than it would);
  a frame still unacknowledged when it should have been is re-sent once on a faster path
  (deadline re-injection, as xquic does), and a fast path with spare budget re-sends the
  frames in flight on slower paths that it would deliver sooner (tail re-injection).
- `Auto`: `Stripe`, and whatever budget the paths have left copies the frames in flight on
  other paths: an idle shell gets every keystroke on every path, a transfer gets their sum.

Tiers (`Tier`) gate every policy the same way (`_roles`): backup paths carry data only when
no primary or overflow path is alive, and are kept quiet otherwise; overflow paths carry only
frames no primary path has taken, single copies, once the primaries have no budget left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from dupsession.core import wire
from dupsession.core.paths import Path, PathState
from dupsession.core.policy import Policy, Schedule, Tier
from dupsession.core.sender import Sender, SentFrame

#: A path that sent this many DATA copies with no sign of any arriving...
STALL_FRAMES = 3
#: ...for this long beyond its expected round trip (s) is stalled: no new data goes on it.
STALL_SLACK = 0.02
#: A stalled path is offered data again after this long (s): the only way to see it healed.
STALL_RETRY = 1.0
#: A path not heard from for this long (s) is not alive for tier decisions; ACK probes come
#: every probe interval (0.5 s), so this leaves room for one late probe and still lets a
#: backup take over within a second.
SILENCE = 0.75
#: Frames a stream path (no controller budget) takes per transmit in striping policies; the
#: glue's writable flag stops it when the socket buffer fills.
STREAM_BATCH = 64
#: Rate assumed for a path with no estimate yet, in frames per round trip.
INITIAL_RATE_FRAMES = 32
#: A stream path is benched while its own delivery estimate is at most this times that of
#: the datagram path on its link (`benched`): above it, the datagram path does not carry the
#: link (a UDP throttle), and the link would run at its rate. Flows sharing one bottleneck
#: never deliver more than it, so the stream path's estimate stays at or under the datagram
#: path's there; the margin covers the samples' noise (ACK batching: a few %).
BENCH_MARGIN = 1.25
#: Extra time (s) the peer may hold an ACK (its ack delay, 4 ms by default, and then some).
ACK_SLACK = 0.005
#: Copies of frames in flight a path with spare budget looks back over (frames).
COPY_LOOKBACK = 256
#: best-k reviews its choice this often (s), and at once when a chosen path stalls.
REVIEW_INTERVAL = 0.1
#: best-k swaps a chosen path for a candidate only when the candidate's expected delivery is
#: better by this factor and margin (s): no flapping between near-equal paths.
SWAP_FACTOR = 1.25
SWAP_MARGIN = 0.005
#: Paths best-k does not use carry one copy of the newest frame this often (s) while there is
#: data, so their delivery figures (loss, progress) stay fresh.
PROBE_COPY_INTERVAL = 0.25


#: Hands one frame to one path: (path, frame, track it for deadline re-injection).
Take = Callable[[Path, SentFrame, bool], None]


class Scheduler(Protocol):
    #: Extra reorder window recovery must allow (s): single copies on paths of different
    #: delay arrive out of order by design, not by loss.
    reorder_spread: float

    def schedule(
        self,
        now: float,
        paths: Iterable[Path],
        sender: Sender,
        resend: list[SentFrame],
        rto: float,
    ) -> dict[int, list[bytes]]:
        """DATA frames to send now per path id; every frame sent is reported to `sender`."""
        ...

    def wake_at(self) -> float | None:
        """When the policy wants `schedule` called again by time (None: only on input)."""
        ...

    def waiting(self, path: Path, sender: Sender) -> bool:
        """Whether `path` has frames this policy would give it as soon as its controller lets
        it: only then is the controller's pacing time a timer (else it would spin)."""
        ...


def make_scheduler(schedule: Schedule) -> Scheduler:
    if schedule.policy is Policy.BEST_K:
        return BestK(schedule.best_k)
    if schedule.policy is Policy.STRIPE:
        return Stripe()
    if schedule.policy is Policy.AUTO:
        return Stripe(copy_spare=True)
    return Redundant()


# -- what every policy asks about a path ----------------------------------------------------


def _sendable(path: Path) -> bool:
    return path.state is not PathState.DOWN and path.writable


def stalled(path: Path, now: float) -> bool:
    """Copies went out on `path` and none showed up at the peer for longer than a round trip
    should take: a blackout or a failed direction, seen long before the path times out."""
    since = path.unreported_since
    if since is None or path.sent_since_progress < STALL_FRAMES:
        return False
    rtt = path.rtt
    age = now - since
    if age <= max(2 * rtt.srtt, rtt.srtt + 4 * rtt.rttvar) + STALL_SLACK:
        return False
    if age > STALL_RETRY + 2 * rtt.srtt:
        # Give it another chance: a path that healed can only show it by carrying data.
        path.sent_since_progress, path.unreported_since = 0, None
        return False
    return True


def alive(path: Path, now: float) -> bool:
    """Usable and delivering: what tier decisions and best-k count on."""
    last = path.last_recv
    return (
        _sendable(path)
        and (last is None or now - last <= max(SILENCE, 3 * path.rtt.srtt))
        and not stalled(path, now)
    )


def _roles(paths: list[Path], now: float) -> tuple[list[Path], list[Path]]:
    """(paths that carry data by the policy, overflow paths), by tier; marks quiet backups."""
    primary: list[Path] = []
    overflow: list[Path] = []
    backup: list[Path] = []
    for path in paths:
        tier = path.tier
        if tier is Tier.PRIMARY:
            if _sendable(path):
                primary.append(path)
            continue
        path.quiet = tier is Tier.BACKUP
        if _sendable(path):
            (overflow if tier is Tier.OVERFLOW else backup).append(path)
    if not overflow and not backup:
        return primary, overflow  # the common case: no tiers, nothing to decide
    if any(alive(p, now) for p in primary):
        return primary, overflow
    if any(alive(p, now) for p in overflow):
        return primary + overflow, []  # the primaries are gone: saturated at zero capacity
    for path in backup:
        path.quiet = False
    return primary + overflow + backup, []


def benched(paths: list[Path], now: float) -> set[int]:
    """Stream paths that carry no bulk: a datagram path on the same access link (`Path.link`)
    is alive and carries that link at least as well. Two flows on one link each size their
    window from their own rate estimate, and the estimates of flows that share a bottleneck
    add up to more than it carries (each one's windowed maximum comes from the others' quiet
    moments): the excess stands in the router's queue, in front of every keystroke
    (docs/BENCHMARKS.md, "Under load"). One flow per link has no one to overestimate against.
    The datagram path keeps bulk at random loss too: its controller is loss-tolerant and its
    resends need no TCP retransmission timeout. A benched path still copies frames while its
    link's datagram path has budget to spare (an idle shell: every keystroke on every path),
    takes the frames no datagram path can carry (`_assign`, `_resend`: 16 KiB ones cut
    before a datagram path joined, review D1), and carries bulk again once that path dies
    or stalls.

    "Carries the link": both paths are past startup, each has an estimate of what it
    delivers, and the stream path's is at most BENCH_MARGIN times the datagram path's. A
    path that shares the bottleneck cannot deliver more than the bottleneck, so on a shared
    link the stream path's estimate (made in startup beside the datagram path's, or while
    it carried bulk before) stays under the datagram path's once that path fills the link;
    a UDP-only throttle (a policer: ISPs and hotel networks apply them, an on-path observer
    can impose one) leaves the datagram path's estimate far under the stream path's, and
    the stream path keeps bulk (review D2: benched anyway, the link ran at the UDP rate,
    0.94 instead of 9.8 Mbit/s). A throttle that starts later shows as the datagram path's
    estimate falling under the stream path's last one (kept while benched: a benched path
    is app-limited, and an app-limited sample never lowers an estimate).
    """
    carried: dict[str, float] = {}
    probing: set[str] = set()
    for path in paths:
        if not path.datagram or path.link is None or not alive(path, now):
            continue
        mode = getattr(path.cc, "mode", "startup")
        if mode == "drain":
            probing.add(path.link)
        rate = float("inf") if mode == "startup" else _rate_estimate(path)
        carried[path.link] = max(carried.get(path.link, 0.0), rate)
    if not carried:
        return set()
    return {
        p.path_id
        for p in paths
        if not p.datagram
        and p.link in carried
        and p.link not in probing
        # A stream path still in its own startup beside a datagram path past startup joined
        # late (an SSH path after its login, a lost SYN, a config reload): it has no estimate
        # of what it delivers, and benched it never would (an app-limited sample never raises
        # one), so a UDP-only throttle would cap the link at the UDP rate (review E1, 0.95
        # instead of 10 Mbit/s). It carries bulk until its startup ends; on a shared link its
        # estimate then stays under the datagram path's and it is benched.
        and (carried[p.link] == float("inf") or getattr(p.cc, "mode", "") != "startup")
        and _rate_estimate(p) <= BENCH_MARGIN * carried[p.link]
    }


def _rank(primary: list[Path], now: float) -> tuple[list[Path], list[Path]]:
    """(paths that take new frames, fastest first; benched stream paths, copies only)."""
    bench = benched(primary, now)
    ranked = sorted(
        (p for p in primary if not stalled(p, now) and p.path_id not in bench), key=_owd
    )
    if not ranked:  # every primary stalled: keep trying them rather than send nothing
        return sorted(primary, key=_owd), []
    return ranked, [p for p in primary if p.path_id in bench]


def _limit(path: Path) -> int:
    return wire.MAX_DATAGRAM_FRAME if path.datagram else wire.MAX_STREAM_FRAME


def _owd(path: Path) -> float:
    """Expected one-way delay (s): half the smoothed RTT, which includes queueing."""
    return path.rtt.srtt / 2


def _rate_estimate(path: Path) -> float:
    """The controller's delivery-rate estimate (frames/s), 0 without one."""
    return float(getattr(path.cc, "btl_bw", 0.0))


def _rate(path: Path) -> float:
    """Expected delivery rate (frames/s): the controller's estimate, or a first guess."""
    estimate = _rate_estimate(path)
    return estimate if estimate > 0 else INITIAL_RATE_FRAMES / max(path.rtt.srtt, 0.001)


def _path_rto(path: Path, rto: float) -> float:
    """A single copy's resend timeout: its own path's, never shorter than the session's (which
    follows the best path, too early for a frame on a slower one)."""
    return max(rto, path.rtt.timeout(ACK_SLACK))


def _finish(
    path: Path,
    now: float,
    count: int,
    budget: int | None,
    left: bool,
    out: dict[int, list[bytes]],
    frames: list[bytes],
    repeats: int = 0,
) -> None:
    """Account what `path` got this transmit and hand its frames out; `repeats` of the
    `count` frames had gone on this path before (its controller's loss measure needs it)."""
    if count:
        path.note_data_sent(now, count)
        path.cc.on_sent(now, count, repeats)
    on_left = getattr(path.cc, "on_budget_left", None)
    if budget is not None and on_left is not None:
        on_left(left)
    if frames:
        out[path.path_id] = frames


# -- redundant ------------------------------------------------------------------------------


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
        primary, overflow = _roles(list(paths), now)
        waiting: set[int] = set()
        out = copy_everything(now, primary, sender, resend, rto, waiting)
        if overflow or self.fed:
            self.fed = {p.path_id for p in primary if p.tier is not Tier.PRIMARY}
        if overflow:
            self.overflow_next = _overflow(
                now, primary, overflow, sender, rto, out, self.overflow_next
            )
        for sent in resend:
            if not sent.armed and sent.seq not in waiting:
                sender.defer(sent, now + rto)  # no path can take it now: offer it again later
        return out


def copy_everything(
    now: float,
    paths: list[Path],
    sender: Sender,
    resend: list[SentFrame],
    rto: float,
    waiting: set[int] | None = None,
) -> dict[int, list[bytes]]:
    """Every frame on each of `paths`, from each path's own cursor, within its budget.

    Resends a path would take but has no budget for go into `waiting`: recovery keeps them
    first in line for the next transmit (a pacing tick) rather than re-arming their timer.
    """
    out: dict[int, list[bytes]] = {}
    # A stream path delivers what it was given unless its connection dies (and a new one
    # rewinds its cursor), so a frame's first resend goes on the datagram paths only when
    # there are any: resending into a deep TCP queue only lengthens it.
    stream_resend = resend
    datagram_up = bool(resend) and any(p.datagram for p in paths)
    if datagram_up:
        stream_resend = [
            sent for sent in resend if sent.sends > 1 or len(sent.frame) > wire.MAX_DATAGRAM_FRAME
        ]
    for path in paths:
        frames: list[bytes] = []
        limit = _limit(path)
        budget = path.cc.budget(now, path.rtt.srtt)
        cursor = path.cursor
        sent_here = 0
        for sent in resend if path.datagram else stream_resend:
            if sent.seq >= cursor or len(sent.frame) > limit:
                continue  # not sent here yet (the cursor will reach it), or too big
            copies = sent.copies if path.datagram else 1
            if budget is not None:
                if budget <= 0:  # resends count against the controller like new frames
                    if waiting is None:
                        break
                    waiting.add(sent.seq)
                    continue
                copies = min(copies, budget)
                budget -= copies
            frames.extend([sent.frame] * copies)
            sender.sent(sent, now, rto)
            sent_here += copies
        repeats = sent_here  # resends below the path's cursor: it carried them before
        sent_here += _send_new(path, frames, sender, now, rto, limit, budget)
        left = path.cursor >= sender.next_seq
        _finish(path, now, sent_here, budget, left, out, frames, repeats)
    return out


def _send_new(
    path: Path,
    frames: list[bytes],
    sender: Sender,
    now: float,
    rto: float,
    limit: int,
    budget: int | None,
) -> int:
    """New frames from the path's cursor on, at most `budget` of them (None: no cap)."""
    seq = max(path.cursor, sender.acked_below)
    end = sender.next_seq
    count = 0
    if seq < end:
        table, mark, append = sender.frames, sender.sent, frames.append
        first: list[SentFrame] = []  # never sent before: armed together (`Sender.sent_first`)
        if budget is None:
            budget = end - seq
        while seq < end and count < budget:
            sent = table.get(seq)
            seq += 1
            if sent is None or len(sent.frame) > limit:
                continue
            append(sent.frame)
            count += 1
            if not sent.armed:  # only the round's first copy arms the resend timer
                if not sent.sends:
                    first.append(sent)
                    continue
                if first:  # in frame-number order, as one call per frame would
                    sender.sent_first(first, now, rto)
                    first = []
                mark(sent, now, rto)
        if first:
            sender.sent_first(first, now, rto)
    path.cursor = seq
    return count


def _overflow(
    now: float,
    primary: list[Path],
    overflow: list[Path],
    sender: Sender,
    rto: float,
    out: dict[int, list[bytes]],
    start: int,
) -> int:
    """Frames no primary path has carried yet, once each, on the overflow paths, and only
    while every primary is out of budget (saturated). Returns the new overflow cursor."""
    seq = max(start, sender.acked_below, max((p.cursor for p in primary), default=0))
    end = sender.next_seq
    if seq >= end or any(_budget(p, now) > 0 for p in primary):
        return max(start, seq)
    for path in sorted(overflow, key=_owd):
        budget = _budget(path, now)
        frames = out.setdefault(path.path_id, [])
        count, limit = 0, _limit(path)
        while seq < end and count < budget:
            sent = sender.frames.get(seq)
            seq += 1
            if sent is None or len(sent.frame) > limit:
                continue
            frames.append(sent.frame)
            sender.sent(sent, now, _path_rto(path, rto))
            sent.path = path.path_id
            count += 1
        _finish(path, now, count, budget, seq >= end, out, frames)
        if not frames:
            del out[path.path_id]
    return seq


def _budget(path: Path, now: float) -> int:
    """Frames `path` may take now; stream paths (no controller limit) take a batch."""
    if not path.writable:
        return 0
    budget = path.cc.budget(now, path.rtt.srtt)
    return STREAM_BATCH if budget is None else budget


# -- best-k -----------------------------------------------------------------------------------


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
        """Seconds a frame sent on `path` alone takes to arrive, counting one resend per loss."""
        if not alive(path, now):
            return float("inf")
        srtt = path.rtt.srtt
        return srtt + path.outbound.loss * (srtt + rto)

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
        primary, overflow = _roles(list(paths), now)
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
            self.overflow_next = _overflow(
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
            if len(newest.frame) > _limit(path) or _budget(path, now) <= 0:
                continue
            self.probed_at[path.path_id] = now
            out.setdefault(path.path_id, []).append(newest.frame)
            path.note_data_sent(now, 1)
            path.cc.on_sent(now, 1)


# -- stripe and auto --------------------------------------------------------------------------


class Stripe:
    """Each frame once, on the path expected to deliver it first (`stripe`); with
    `copy_spare`, spare budget copies frames in flight on other paths (`auto`)."""

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
        primary, overflow = _roles(list(paths), now)
        ranked, spare = _rank(primary, now)
        budget = {p.path_id: _budget(p, now) for p in ranked + spare}
        self.owd = {p.path_id: _owd(p) for p in ranked + overflow + spare}
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
            sender.sent(sent, now, _path_rto(path, rto))
            if track:
                sent.path = pid
                rtt = path.rtt
                due = now + rtt.srtt + max(2 * rtt.rttvar, 0.002) + ACK_SLACK
                self.flight.setdefault(pid, deque()).append((due, sent.seq))

        carry = max((_limit(p) for p in ranked), default=0)

        def fastest(size: int, exclude: int = -1) -> Path | None:
            # a frame no ranked path can carry goes on a benched one that can (review D1)
            for path in ranked if size <= carry else spare:
                if budget[path.path_id] > 0 and size <= _limit(path) and path.path_id != exclude:
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
            _finish(path, now, counts[pid], budget[pid], left, out, frames[pid], repeats[pid])
        if overflow:
            self.overflow_next = _overflow(
                now, ranked, overflow, sender, rto, out, max(self.overflow_next, self.next_new)
            )
            self.next_new = max(self.next_new, self.overflow_next)
        self.reorder_spread = self._spread(ranked)
        if len(self.reinjected) > 4096:
            low = sender.acked_below
            self.reinjected = {s for s in self.reinjected if s >= low}
        return out

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
                        and len(sent.frame) <= _limit(path)
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
        fastest_owd = _owd(ranked[0]) if ranked else 0.0
        for path in ranked:
            seq = self._take_new(path, sender, seq, budget, take, faster=(faster_rate, fastest_owd))
            faster_rate += _rate(path)
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
        would: the frame is left to their queues. A path whose budget ran out first starves."""
        end, frames = sender.next_seq, sender.frames
        pid, owd, limit = path.path_id, _owd(path), _limit(path)
        faster_rate, fastest_owd = faster
        while seq < end and budget[pid] > 0:
            if faster_rate and (end - seq) / faster_rate + fastest_owd <= owd:
                break
            sent = frames.get(seq)
            if sent is not None and not shortest <= len(sent.frame) <= limit:
                break
            seq += 1
            if sent is not None:
                take(path, sent, True)
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
            mine, limit = owd[pid], _limit(path)
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
