"""Events the session core hands to its I/O glue (`Session.next_event`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamData:
    """In-order bytes from the peer, each byte exactly once."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed: no more bytes will come (propagate as EOF / shutdown(SHUT_WR))."""


@dataclass(frozen=True, slots=True)
class PathUp:
    path_id: int


@dataclass(frozen=True, slots=True)
class PathDown:
    path_id: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over. `code` is a `wire.CloseCode`; `reason` is one line for humans."""

    code: int
    reason: str
    by_peer: bool


Event = StreamData | StreamEnded | PathUp | PathDown | SessionClosed
