"""Receive side of one direction: dedup, reorder, in-order delivery, who-arrived-first.

Rules:
- A frame number below the cumulative point or already held is a duplicate: it could not
  change the stream, so it is never hashed. It is believed (counted, acked, fed to the path's
  delivery count) only if its tag equals the one the first, verified copy carried (every copy
  of a frame is byte-identical), and on each path only once: a forged copy cannot inflate the
  `data_recv` the peer's congestion controller trusts, nor can a replayed genuine one.
- Frames at or beyond the advertised window end are dropped unacked: the sender retransmits
  them once the window opens, so memory stays bounded whatever the sender does.
"""

from __future__ import annotations

from dupsession.core.ranges import RangeSet

#: How many recent frame numbers keep their first-arrival record (lag, genuine copies).
ARRIVAL_MEMORY = 8192

#: (seq, time, path id, tag, bit mask of the paths whose delivery count took this frame)
Arrival = tuple[int, float, int, bytes, int]
#: A verified frame's payload: a view into the frame, copied once when it is delivered.
Payload = bytes | memoryview


class Receiver:
    __slots__ = (
        "_frozen_end",
        "advertised_end",
        "arrivals",
        "cumulative",
        "fin_delivered",
        "held",
        "held_bytes",
        "ranges",
        "window_frames",
    )

    def __init__(self, window_frames: int) -> None:
        self.window_frames = window_frames
        self.cumulative = 0  #: every frame number below this has been delivered
        self.ranges = RangeSet()  #: frame numbers held above the cumulative point
        #: Frames above a hole: seq -> (payload, fin). Read by the session's inlined hot path.
        self.held: dict[int, tuple[Payload, bool]] = {}
        self.held_bytes = 0
        self.fin_delivered = False
        self._frozen_end: int | None = None
        self.advertised_end = window_frames
        #: A ring indexed by frame number (seq % ARRIVAL_MEMORY): the `Arrival` record of each
        #: recent first copy. The session marks copies counted in it (its hot path, inlined).
        self.arrivals: list[Arrival | None] = [None] * ARRIVAL_MEMORY

    def is_duplicate(self, seq: int) -> bool:
        return seq < self.cumulative or seq in self.held

    def in_window(self, seq: int) -> bool:
        return seq < self.advertised_end

    def first_arrival(self, seq: int) -> Arrival | None:
        """The record of a recent frame's first copy: (seq, time, path id, tag, counted paths);
        None once it has left the ring (such a late copy is dropped uncounted)."""
        entry = self.arrivals[seq % ARRIVAL_MEMORY]
        if entry is None or entry[0] != seq:
            return None
        return entry

    def accept(
        self, seq: int, fin: bool, payload: Payload, now: float, path_id: int, tag: bytes
    ) -> list[Payload]:
        """Take the first valid copy of frame `seq` (its verified `tag` is kept to recognise
        genuine copies); return the payloads now deliverable.

        The caller checked `is_duplicate` and `in_window`. A FIN frame's payload comes out
        with the rest; `fin_delivered` turns true once the FIN frame itself is delivered.
        """
        counted = 1 << path_id if path_id >= 0 else 0
        self.arrivals[seq % ARRIVAL_MEMORY] = (seq, now, path_id, tag, counted)
        if seq != self.cumulative:
            self.held[seq] = (payload, fin)
            self.held_bytes += len(payload)
            self.ranges.add(seq)
            return []
        out = [payload] if payload else []
        self.cumulative = seq + 1
        self.fin_delivered = fin
        if self.held:
            self._release_held(out)
        return out

    def accept_run(
        self, first: int, tags: list[bytes], fin: bool, now: float, path_id: int
    ) -> list[Payload]:
        """Take the first valid copies of frames `first` (the cumulative point) onwards, one
        per verified tag in `tags`, their payloads delivered by the caller; `fin`: the last
        one is the FIN frame. Returns the held payloads they make deliverable."""
        arrivals, counted, seq = self.arrivals, 1 << path_id, first
        for tag in tags:
            arrivals[seq % ARRIVAL_MEMORY] = (seq, now, path_id, tag, counted)
            seq += 1
        self.cumulative = seq
        self.fin_delivered = fin
        out: list[Payload] = []
        if self.held:
            self._release_held(out)
        return out

    def _release_held(self, out: list[Payload]) -> None:
        """Deliver the held frames that now follow the cumulative point (into `out`)."""
        held = self.held
        while self.cumulative in held:
            payload, fin = held.pop(self.cumulative)
            self.held_bytes -= len(payload)
            if payload:
                out.append(payload)
            self.fin_delivered = fin
            self.cumulative += 1
        if self.ranges:
            self.ranges.remove_below(self.cumulative)

    def pause(self, paused: bool) -> None:
        """Freeze the advertised window while the consumer is full: flow control end to end."""
        self._frozen_end = self.window_end() if paused else None

    def window_end(self) -> int:
        end = self._frozen_end
        if end is None:
            end = self.cumulative + self.window_frames
        self.advertised_end = max(self.advertised_end, end)
        return end
