"""Receive side of one direction: dedup, reorder, in-order delivery, who-arrived-first.

Rules:
- A frame number below the cumulative point or already held is a duplicate: it is dropped
  before its tag is checked (it could not change the stream), and only counted.
- Frames at or beyond the advertised window end are dropped unacked: the sender retransmits
  them once the window opens, so memory stays bounded whatever the sender does.
"""

from __future__ import annotations

from dupsession.core.ranges import RangeSet

#: How many recent frame numbers keep their first-arrival record, for lag measurement.
ARRIVAL_MEMORY = 8192


class Receiver:
    __slots__ = (
        "_arrivals",
        "_frozen_end",
        "_held",
        "advertised_end",
        "cumulative",
        "fin_delivered",
        "held_bytes",
        "ranges",
        "window_frames",
    )

    def __init__(self, window_frames: int) -> None:
        self.window_frames = window_frames
        self.cumulative = 0  #: every frame number below this has been delivered
        self.ranges = RangeSet()  #: frame numbers held above the cumulative point
        self._held: dict[int, tuple[bytes, bool]] = {}
        self.held_bytes = 0
        self.fin_delivered = False
        self._frozen_end: int | None = None
        self.advertised_end = window_frames
        #: A ring indexed by frame number: (seq, time, path id) of each recent first copy.
        self._arrivals: list[tuple[int, float, int] | None] = [None] * ARRIVAL_MEMORY

    def is_duplicate(self, seq: int) -> bool:
        return seq < self.cumulative or seq in self._held

    def in_window(self, seq: int) -> bool:
        return seq < self.advertised_end

    def first_arrival(self, seq: int) -> tuple[float, int] | None:
        """(time, path id) of the first copy of a recent frame, for duplicate-lag stats."""
        entry = self._arrivals[seq % ARRIVAL_MEMORY]
        if entry is None or entry[0] != seq:
            return None
        return entry[1], entry[2]

    def accept(self, seq: int, fin: bool, payload: bytes, now: float, path_id: int) -> list[bytes]:
        """Take the first valid copy of frame `seq`; return the payloads now deliverable.

        The caller checked `is_duplicate` and `in_window`. A FIN frame's payload comes out
        with the rest; `fin_delivered` turns true once the FIN frame itself is delivered.
        """
        self._arrivals[seq % ARRIVAL_MEMORY] = (seq, now, path_id)
        if seq != self.cumulative:
            self._held[seq] = (payload, fin)
            self.held_bytes += len(payload)
            self.ranges.add(seq)
            return []
        out = [payload] if payload else []
        self.cumulative = seq + 1
        self.fin_delivered = fin
        held = self._held
        while held and self.cumulative in held:
            payload, fin = held.pop(self.cumulative)
            self.held_bytes -= len(payload)
            if payload:
                out.append(payload)
            self.fin_delivered = fin
            self.cumulative += 1
        if self.ranges:
            self.ranges.remove_below(self.cumulative)
        return out

    def pause(self, paused: bool) -> None:
        """Freeze the advertised window while the consumer is full: flow control end to end."""
        self._frozen_end = self.window_end() if paused else None

    def window_end(self) -> int:
        end = self._frozen_end
        if end is None:
            end = self.cumulative + self.window_frames
        self.advertised_end = max(self.advertised_end, end)
        return end
