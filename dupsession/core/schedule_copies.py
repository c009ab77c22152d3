"""Handing frames to paths, as the copying policies (`redundant`, `best_k`) do, plus what
every policy does once a path's frames are chosen: each path from its own cursor within its
budget (`copy_everything`), overflow paths once the primaries are saturated (`fill_overflow`),
and the accounting of what a path took (`hand_out`).
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.paths import Path
from dupsession.core.schedule_paths import budget_now, frame_limit, one_way_delay, path_rto
from dupsession.core.sender import Sender, SentFrame

#: A datagram path whose own measured outbound loss is at least this carries a small new frame
#: twice (`doubles`)...
TWICE_LOSS = 0.01
#: ...a frame this small (bytes on the wire: a keystroke, an echo, an ssh window update)...
TWICE_FRAME = 256
#: ...when at most this many new frames wait for the path: interactive, not a transfer.
TWICE_WAITING = 2


def doubles(path: Path, waiting: int, budget: int | None) -> bool:
    """Whether a small new frame goes twice on `path`: a datagram path whose own measured
    outbound loss is at least TWICE_LOSS, with at most TWICE_WAITING new frames waiting for it
    (typing, not a transfer) and budget for both copies. Every policy asks this of the primary
    path a new frame goes on (`_send_new`; `Stripe._take_new`, for `auto` and `stripe`);
    overflow paths take single copies (`fill_overflow`), and only while the primaries are
    saturated, which typing never makes them.

    Why: a keystroke whose copies on the fast uplink were lost (its UDP copy, while that
    uplink's TCP path waited out a retransmission) came home by the slow uplink, 20-25 ms
    later: on the netlab at 5 % loss, the typing p99 idle and during a download
    (docs/BENCHMARKS.md "Twins for `auto`"). The twin is a copy like a resend: in the path's
    `data sent` (which the peer's inbound loss holds its arrivals against), a repeat to the
    controller (left out of its loss measure), and in `Path.twins_sent` (`note_twin`), which
    our own outbound loss measure leaves out; the peer delivers the first. Gated on our own
    measure, which a replay cannot lower (SECURITY.md); on a doubling path it stays near p in
    the simulator (tests/core/test_twice.py), though on the netlab a loss-free stretch can
    take it under the gate for a while (BENCHMARKS, the OR gate tried)."""
    return (
        path.datagram
        and waiting <= TWICE_WAITING
        and path.own_outbound.loss >= TWICE_LOSS
        and (budget is None or budget >= 2 * waiting)
    )


def note_twin(path: Path) -> None:
    """Count a twin the path carries: in `data_sent` like any copy (`hand_out`), and apart, so
    that our own loss measure leaves it out (`acks.make_ack`, `Path.twins_sent`)."""
    path.twins_sent += 1
    path.batch_twins += 1


def hand_out(
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
        limit = frame_limit(path)
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
        twins = path.twins_sent
        sent_here += _send_new(path, frames, sender, now, rto, limit, budget)
        repeats += path.twins_sent - twins  # a twin is a copy the path carried a moment before
        left = path.cursor >= sender.next_seq
        hand_out(path, now, sent_here, budget, left, out, frames, repeats)
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
    twice = doubles(path, end - seq, budget)  # a twin is in `count`, like any copy
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
            if twice and len(sent.frame) <= TWICE_FRAME:
                append(sent.frame)
                count += 1
                note_twin(path)
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


def fill_overflow(
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
    if seq >= end or any(budget_now(p, now) > 0 for p in primary):
        return max(start, seq)
    for path in sorted(overflow, key=one_way_delay):
        budget = budget_now(path, now)
        frames = out.setdefault(path.path_id, [])
        count, limit = 0, frame_limit(path)
        while seq < end and count < budget:
            sent = sender.frames.get(seq)
            seq += 1
            if sent is None or len(sent.frame) > limit:
                continue
            frames.append(sent.frame)
            sender.sent(sent, now, path_rto(path, rto))
            sent.path = path.path_id
            count += 1
        hand_out(path, now, count, budget, seq >= end, out, frames)
        if not frames:
            del out[path.path_id]
    return seq
