"""Scheduling: which DATA frame goes on which path, and when. One interface, several policies.

A policy sees the paths (state, RTT, controller), the sender's shared buffer of unacked frames
and the frames recovery wants resent, and returns the DATA frames per path for this transmit.
It never builds ACKs (the session adds those) and never decides that a frame is lost
(`core/recovery.py` does). Each path keeps its own cursor into the shared buffer and skips
frames already acknowledged, so a slow path never holds anything back.

`Redundant` is the first policy: every frame on every path its controller lets send. Policies
that pick a subset of paths (best-k), one path per frame (stripe) or switch between the two
(auto) implement the same `Scheduler.schedule`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dupsession.core import wire
from dupsession.core.paths import Path, PathState
from dupsession.core.sender import Sender, SentFrame


class Scheduler(Protocol):
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


class Redundant:
    """Every frame on every usable path (the `redundant` policy)."""

    __slots__ = ()

    def schedule(
        self,
        now: float,
        paths: Iterable[Path],
        sender: Sender,
        resend: list[SentFrame],
        rto: float,
    ) -> dict[int, list[bytes]]:
        paths = list(paths)
        out: dict[int, list[bytes]] = {}
        # A stream path delivers what it was given unless its connection dies (and a new one
        # rewinds its cursor), so a frame's first resend goes on the datagram paths only when
        # there are any: resending into a deep TCP queue only lengthens it.
        stream_resend = resend
        datagram_up = bool(resend) and any(
            p.datagram and p.writable and p.state is not PathState.DOWN for p in paths
        )
        if datagram_up:
            stream_resend = [
                sent
                for sent in resend
                if sent.sends > 1 or len(sent.frame) > wire.MAX_DATAGRAM_FRAME
            ]
        for path in paths:
            if path.state is PathState.DOWN or not path.writable:
                continue
            frames: list[bytes] = []
            limit = wire.MAX_DATAGRAM_FRAME if path.datagram else wire.MAX_STREAM_FRAME
            cc = path.cc
            budget = cc.budget(now, path.rtt.srtt)
            cursor = path.cursor
            sent_here = 0
            for sent in resend if path.datagram else stream_resend:
                if sent.seq >= cursor or len(sent.frame) > limit:
                    continue  # not sent here yet (the cursor will reach it), or too big
                if budget is not None:
                    if budget <= 0:
                        break  # resends count against the controller like new frames
                    budget -= 1
                frames.append(sent.frame)
                sender.sent(sent, now, rto)
                sent_here += 1
            sent_here += _send_new(path, frames, sender, now, rto, limit, budget)
            if sent_here:
                path.data_sent += sent_here
                cc.on_sent(now, sent_here)
            if frames:
                out[path.path_id] = frames
        for sent in resend:
            if not sent.armed:  # no path took it (controllers, cursors): offer it again later
                sender.defer(sent, now + rto)
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
                mark(sent, now, rto)
    path.cursor = seq
    return count
