"""Send side of one direction: the shared buffer of unacked frames and their resend timers.

Rules:
- Bytes are cut into frames only when a path can take them (no Nagle: a keystroke becomes a
  frame at once), and a frame never changes once made: every copy is byte-identical.
- The buffer is bounded in bytes (`window_bytes`) and by the peer's advertised window; when
  full, or while `PENDING_LIMIT` bytes wait to be cut, `writable()` is false and the glue
  stops reading its source.
- Each frame has one resend deadline; paths keep their own cursors (see `Path.cursor`), so a
  slow path skips whatever the peer already acknowledged.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dupsession.core.errors import LocalProtocolError

#: The peer's window before its first ACK says otherwise (frames).
INITIAL_PEER_WINDOW = 1024
#: Resend backoff doubles per resend up to this many doublings.
MAX_BACKOFF_EXPONENT = 5
#: Bytes the buffer takes that are not cut into frames yet: beyond this `writable()` is 0 and
#: the glue pauses its source until the next transmit has cut them. So one event-loop turn
#: reads, cuts and sends about this much, and the peer gets to work on it at once. Without
#: it, one turn read a busy pipe up to 32 times (8 MB, the whole window), and cutting and
#: sealing all of it took 50 ms of CPU before the first frame reached the socket: the peer
#: idled, then we did (loopback, 2 UDP + 1 TCP, this and FLUSH_AFTER_BYTES together, c0fcc47:
#: see docs/BENCHMARKS.md "Loopback bulk: the two ends took turns" for the side-by-side runs).
PENDING_LIMIT = 256 * 1024
#: Pushed pieces shorter than this are joined onto a short last piece: each held piece costs
#: ~40-220 bytes of objects (a view, its bytes), so a trickle of tiny reads held as pieces
#: made PENDING_LIMIT of pending bytes take 5-55 MB (2-byte pushes) instead of 256 KiB.
SMALL_PIECE = 512


@dataclass(slots=True)
class SentFrame:
    seq: int
    frame: bytes
    payload_len: int
    fin: bool
    sent_at: float = 0.0  #: when this round's first copy went out
    sends: int = 0  #: rounds: copies on several paths at once count as one
    armed: bool = False  #: a resend deadline is pending
    deadline: float = 0.0  #: that deadline (a stale heap entry for an older round is skipped)
    path: int = -1  #: the path of its latest single copy (striping policies); -1: several
    backoff: int = 0  #: resend rounds in a row with no ACK progress in between
    #: Copies of its next resend a datagram path carrying it sends (recovery's call, every
    #: policy honours it; a stream path never loses one: one copy there).
    copies: int = 1
    on_paths: int = 0  #: bit i: a copy went on path i (striping policies; see `_finish`)


class Sender:
    def __init__(self, window_bytes: int, max_delay: float = float("inf")) -> None:
        self.window_bytes = window_bytes
        self.max_delay = max_delay  #: cap on one resend delay after backoff (s)
        self.frames: dict[int, SentFrame] = {}
        self.next_seq = 0
        self.acked_below = 0  #: peer's cumulative ack
        self.peer_window_end = INITIAL_PEER_WINDOW
        self._peer_window_known = False
        self.unacked_bytes = 0  #: payload bytes at or above the peer's cumulative ack
        #: seq -> payload length of frames acked only selectively: the peer holds them behind a
        #: hole, so their bytes keep counting against `window_bytes` (bounds its memory too).
        self._sacked: dict[int, int] = {}
        #: The runs the last ACK took (each clipped to what was sent), and its runs as they
        #: came (None when any was clipped): see `on_ack`.
        self._ranges_taken: tuple[tuple[int, int], ...] = ()
        self._ranges_known: set[tuple[int, int]] = set()  #: the same runs, to look up
        self._ranges_seen: tuple[tuple[int, int], ...] | None = ()
        #: Bytes pushed and not cut into frames yet, as the pieces they came in (immutable
        #: bytes or read-only views): a frame's payload is a view into one of them, or a join
        #: where it spans two, so each byte is copied once here, into its frame, where a
        #: bytearray copied it in first (and again as it grew: docs/BENCHMARKS.md, "Loopback
        #: 1 TCP: fewer copies per byte").
        self._pending: deque[bytes | memoryview] = deque()
        self._pending_size = 0
        self._fin_requested = False
        self.fin_seq: int | None = None
        #: Resend deadlines as a heap of (deadline, tie-break, frame numbers): frames armed
        #: together (one transmit, same RTO) share one entry, so a bulk transfer costs one heap
        #: operation per batch rather than one push and one pop per frame.
        self._deadlines: list[tuple[float, int, deque[int]]] = []
        self._group: deque[int] | None = None  #: newest entry's frames, while it can grow
        self._group_deadline = 0.0
        self._entries = 0
        self.bytes_in = 0
        self.retransmissions = 0
        #: RACK (RFC 8985): the send time of the most recently sent frame the peer has
        #: acknowledged, and the highest frame number acknowledged. A frame sent earlier than
        #: that, by more than the reorder window, and still unacknowledged, is lost.
        self.rack_sent_at = float("-inf")
        self.largest_acked = -1
        self.lost_detected = 0
        #: When an ACK last acknowledged anything new (the session sets it): a resend after
        #: that is not backed off, since the path is delivering.
        self.progress_at = float("-inf")

    # -- application side --------------------------------------------------------------------

    def writable(self) -> int:
        """How many more bytes the buffer takes now (0: push back on the source)."""
        if self._fin_requested:
            return 0
        room = min(self.window_bytes - self.unacked_bytes, PENDING_LIMIT)
        return max(0, room - self._pending_size)

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Take `data` as the stream's next bytes. Held, not copied, until cut into frames:
        anything but bytes or a view of bytes (a buffer its owner may reuse, read-only views of
        one included) is copied first, and a short piece is joined onto a short last one
        (`SMALL_PIECE`: memory stays bounded by the pending bytes)."""
        if self._fin_requested:
            raise LocalProtocolError("stream already closed for sending")
        size = len(data)
        if size:
            pending = self._pending
            if size < SMALL_PIECE and pending and len(pending[-1]) < SMALL_PIECE:
                pending[-1] = b"".join((pending[-1], data))
            else:
                if type(data) is not bytes and not (
                    type(data) is memoryview and type(data.obj) is bytes
                ):
                    data = bytes(data)
                pending.append(data)
            self._pending_size += size
        self.bytes_in += size

    def close(self) -> None:
        self._fin_requested = True

    @property
    def fin_acked(self) -> bool:
        return self.fin_seq is not None and self.acked_below > self.fin_seq

    def backlog(self) -> int:
        """Bytes of ours not acknowledged yet: framed and unacked, or waiting to be framed."""
        return self.unacked_bytes + self._pending_size

    def has_pending(self) -> bool:
        return self._pending_size > 0 or (self._fin_requested and self.fin_seq is None)

    def make_frames(
        self, max_payload: int, encode: Callable[[int, bytes | memoryview, bool], bytes]
    ) -> None:
        """Cut pending bytes into frames while the peer's window and our buffer allow.

        `encode` gets a view into a pushed piece (or the join of the pieces a frame spans):
        the payload is copied once, into its frame.
        """
        pieces = self._pending
        seq, limit, frames = self.next_seq, self.peer_window_end, self.frames
        fin_requested = self._fin_requested
        left = total = self._pending_size
        while seq < limit and (left or (fin_requested and self.fin_seq is None)):
            size = max_payload if left > max_payload else left
            if size:
                head = pieces[0]
                have = len(head)
                if have > size:  # the common case: the frame lies inside one piece
                    view = head if type(head) is memoryview else memoryview(head)
                    pieces[0] = view[size:]
                    payload: bytes | memoryview = view[:size]
                elif have == size:
                    payload = pieces.popleft()
                else:
                    payload = self._join(size)
                left -= size
            else:
                payload = b""  # a FIN alone
            fin = fin_requested and not left
            frames[seq] = SentFrame(seq, encode(seq, payload, fin), size, fin)
            if fin:
                self.fin_seq = seq
            seq += 1
        self._pending_size = left
        self.unacked_bytes += total - left
        self.next_seq = seq

    def _join(self, size: int) -> bytes:
        """The next `size` pending bytes, which span several pieces, joined (one copy)."""
        pieces = self._pending
        parts: list[bytes | memoryview] = []
        got = 0
        while got < size:
            piece = pieces.popleft()
            have = len(piece)
            if got + have > size:
                cut = size - got
                view = piece if type(piece) is memoryview else memoryview(piece)
                pieces.appendleft(view[cut:])
                piece = view[:cut]
                have = cut
            parts.append(piece)
            got += have
        return b"".join(parts)

    # -- acks and timers ---------------------------------------------------------------------

    def on_ack(
        self,
        cumulative: int,
        ranges: tuple[tuple[int, int], ...],
        ambiguous_after: float = float("-inf"),
    ) -> int:
        """Forget acknowledged frames; return how many were newly acknowledged.

        A frame resent after `ambiguous_after` (less than the best path's minimum RTT ago) is
        acknowledged by an earlier copy, not by its resend, so its resend time does not move
        the RACK line (RFC 8985, 6.2 step 2). It did: one spurious resend acknowledged by its
        first copy moved the line to the resend's time, every frame sent before it was "lost"
        and resent, and those resends' acks did the same again (the seed-like simulation at
        5 % loss: 7,144 resends per 20 MB, 3/4 of them spurious; the netlab 13,457 per 60 MB).
        """
        if cumulative <= self.acked_below and ranges == self._ranges_seen:
            return 0  # another path's copy of the last ACK (see `_take_ranges`)
        freed = (
            self._take_below(cumulative, ambiguous_after) if cumulative > self.acked_below else 0
        )
        return freed + self._take_ranges(ranges, ambiguous_after)

    def _take_below(self, cumulative: int, ambiguous_after: float) -> int:
        """The cumulative part of an ACK, which frees a bulk transfer's frames: one pass,
        locals only."""
        freed = 0
        pop, unacked, sacked = self.frames.pop, self.unacked_bytes, self._sacked
        rack = self.rack_sent_at
        for seq in range(self.acked_below, min(cumulative, self.next_seq)):
            sent = pop(seq, None)
            if sent is not None:
                unacked -= sent.payload_len
                freed += 1
                at = sent.sent_at
                if at > rack and (sent.sends < 2 or at <= ambiguous_after):
                    rack = at
            elif sacked:
                unacked -= sacked.pop(seq, 0)
        self.rack_sent_at = rack
        self.unacked_bytes = unacked
        self.acked_below = min(cumulative, self.next_seq)
        self.largest_acked = max(self.largest_acked, self.acked_below - 1)
        return freed

    def _take_ranges(self, ranges: tuple[tuple[int, int], ...], ambiguous_after: float) -> int:
        """The selective part of an ACK.

        The ranges repeat from ACK to ACK (every path's copy of an ACK lists the same lowest
        runs; at 5 % loss 32 runs over hundreds of frames), and every frame in a run the last
        ACK took is gone already (a frame number is never reused). So a copy that moves
        nothing is known by one comparison (`on_ack`), a run the last ACK took whole by one
        look-up, and otherwise only what lies outside the last ACK's runs is walked: per ACK,
        work in the newly acknowledged frames, not in the runs' length. (Remembered by run
        start only, a resend that filled the hole below a run walked the whole run above
        again: 2/3 of Sender.on_ack in relayd's py-spy of the netlab's download at 5 % loss.)
        """
        freed = 0
        taken, known = self._ranges_taken, self._ranges_known
        next_seq, acked_below = self.next_seq, self.acked_below
        at, count, clipped = 0, len(taken), False
        for run in ranges:
            if run in known:
                continue  # taken whole by the last ACK
            start, stop = run
            if stop > next_seq:  # frames not sent yet (only a forged ACK names them)
                stop, clipped = next_seq, True
            seq = max(start, acked_below)
            while at < count and taken[at][1] <= seq:
                at += 1
            skip = at
            while seq < stop:
                if skip < count and taken[skip][0] <= seq:  # inside a run taken last time
                    seq = max(seq, taken[skip][1])
                    skip += 1
                    continue
                upto = stop if skip == count else min(stop, taken[skip][0])
                freed += self._take_run(seq, upto, ambiguous_after)
                seq = upto
        if clipped:
            self._ranges_taken = tuple((start, min(end, next_seq)) for start, end in ranges)
            self._ranges_seen = None
        else:
            self._ranges_taken = self._ranges_seen = ranges
        self._ranges_known = set(self._ranges_taken)
        return freed

    def _take_run(self, seq: int, stop: int, ambiguous_after: float) -> int:
        """Frames [seq, stop) acknowledged selectively: held by the peer behind a hole."""
        freed = 0
        pop, sacked = self.frames.pop, self._sacked
        rack, largest = self.rack_sent_at, self.largest_acked
        for each in range(seq, stop):
            sent = pop(each, None)
            if sent is not None:
                sacked[each] = sent.payload_len
                freed += 1
                at = sent.sent_at
                if at > rack and (sent.sends < 2 or at <= ambiguous_after):
                    rack = at
                largest = each
        self.rack_sent_at, self.largest_acked = rack, max(largest, self.largest_acked)
        return freed

    def detect_lost(
        self, now: float, reorder: float, rack_rtt: float
    ) -> tuple[list[SentFrame], float | None]:
        """RACK: unacknowledged frames below the highest acknowledged one that were sent at
        least `reorder` seconds before the most recently sent acknowledged frame are lost.

        Returns the lost frames (their resend deadline disarmed: the caller resends them) and
        when the next frame would cross that line (`rack_rtt` after the acknowledged frame's
        send, plus `reorder`), if any is waiting for it.
        """
        lost: list[SentFrame] = []
        wake: float | None = None
        largest, rack = self.largest_acked, self.rack_sent_at
        for seq, sent in self.frames.items():  # in frame-number order; acked ones are gone
            if seq >= largest:
                break
            if not sent.armed or sent.sent_at > rack:
                continue  # already queued for a resend, or resent after the acked frame
            if sent.sent_at + reorder <= rack:
                sent.armed = False
                lost.append(sent)
            else:
                at = sent.sent_at + rack_rtt + reorder
                if at <= now:
                    sent.armed = False
                    lost.append(sent)
                elif wake is None or at < wake:
                    wake = at
        self.lost_detected += len(lost)
        return lost, wake

    def on_peer_window(self, window_end: int, cumulative: int) -> bool:
        """The peer's advertised window end from an ACK (with its cumulative point); True when
        the ACK reopened a window the peer had frozen.

        The first ACK replaces the initial guess, which may be wider than the peer's real
        window: frames past that are dropped unacked and resent with ever longer backoff. Later
        ACKs only widen it, since a reordered older ACK must not shrink it.

        A frozen window (the peer's consumer paused) stops moving while frames are still
        delivered, so the room it leaves past the cumulative point shrinks; the ACK sent as
        the consumer resumes widens it and leaves more room than the window known left past
        ours. A moving window leaves the same room on every ACK.
        """
        if not self._peer_window_known:
            self.peer_window_end = window_end
            self._peer_window_known = True
            return False
        end = self.peer_window_end
        if window_end <= end:
            return False
        self.peer_window_end = window_end
        return window_end - cumulative > end - self.acked_below

    def sent(self, frame: SentFrame, now: float, rto: float) -> None:
        """Note a send; the first copy of a round arms the frame's resend deadline.

        Copies sent later on slower paths do not re-arm it: the timer measures the round.
        """
        if frame.armed:
            return
        sends, last_sent = frame.sends, frame.sent_at
        frame.sends = sends + 1
        frame.sent_at = now
        frame.armed = True
        if sends:
            self.retransmissions += 1
            # Back off only while nothing gets through (RFC 9002 resets its PTO count on any
            # ACK): a resend lost at random on a path that acknowledges later frames is
            # resent one timeout later, not two, four, eight.
            if self.progress_at > last_sent:
                frame.backoff = 0
                deadline = now + rto
            else:
                frame.backoff += 1
                deadline = now + self.backed_off(rto, frame.backoff)
        else:
            deadline = now + rto  # a first send: no backoff (the common case, kept cheap)
        frame.deadline = deadline
        group = self._group
        if group is not None and deadline == self._group_deadline:
            group.append(frame.seq)
        else:
            self._arm(frame.seq, deadline)

    def backed_off(self, rto: float, rounds: int) -> float:
        """`rto` doubled per round with no ACK progress, never beyond `max_delay` (nor below
        `rto`): a frame's resend, and recovery's probe timeout across frames."""
        return min(rto * (1 << min(rounds, MAX_BACKOFF_EXPONENT)), max(rto, self.max_delay))

    def sent_first(self, frames: list[SentFrame], now: float, rto: float) -> None:
        """`sent` for frames never sent before, at once (a transmit's new frames on a path):
        one deadline for all, and one heap entry, or the newest one's if it has that deadline."""
        deadline = now + rto
        for frame in frames:
            frame.sends = 1
            frame.sent_at = now
            frame.armed = True
            frame.deadline = deadline
        self._arm_all([frame.seq for frame in frames], deadline)

    def defer(self, frame: SentFrame, deadline: float) -> None:
        """Re-arm an expired frame that no path could take yet (rate-capped, busy), without
        counting a round: it expires again at `deadline` and is offered to the paths anew."""
        if not frame.armed:
            frame.armed = True
            frame.deadline = deadline
            self._arm(frame.seq, deadline)

    def _arm(self, seq: int, deadline: float) -> None:
        self._arm_all((seq,), deadline)

    def _arm_all(self, seqs: list[int] | tuple[int], deadline: float) -> None:
        group = self._group
        if group is not None and deadline == self._group_deadline:
            group.extend(seqs)
            return
        group = self._group = deque(seqs)
        self._group_deadline = deadline
        self._entries += 1
        heapq.heappush(self._deadlines, (deadline, self._entries, group))

    def next_deadline(self) -> float | None:
        deadlines, frames = self._deadlines, self.frames
        while deadlines:
            deadline, _, group = deadlines[0]
            # skip acknowledged frames and stale entries (resent or deferred since: a newer
            # entry holds their deadline), or the session wakes for nothing at the old one
            while group and (
                (frame := frames.get(group[0])) is None
                or not frame.armed
                or frame.deadline != deadline
            ):
                group.popleft()
            if group:
                return deadline
            if heapq.heappop(deadlines)[2] is self._group:
                self._group = None
        return None

    def expired(self, now: float) -> list[SentFrame]:
        """Frames whose resend deadline passed, oldest first (their deadlines are consumed)."""
        out = []
        frames, heap = self.frames, self._deadlines
        while heap and heap[0][0] <= now:
            group = heapq.heappop(heap)[2]
            if group is self._group:
                self._group = None
            for seq in group:
                frame = frames.get(seq)
                if frame is not None and frame.armed and frame.deadline <= now:
                    frame.armed = False
                    out.append(frame)
        return out
