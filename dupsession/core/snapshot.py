"""What a session looks like at one instant: the one schema behind status, metrics and --json.

`Session.snapshot(now)` returns a `SessionSnapshot`; in-process readers (the exit's close log,
the demo) use its fields, and the control socket sends `as_dict()`, which is what `dupsession
status`, `dupsession probe`, relayd's metrics and `--json` read (docs/CONTROL.md). A change to
a field's meaning bumps `SCHEMA_VERSION`; adding a field does not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: The schema of `SessionSnapshot.as_dict()`, carried in it as "schema".
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class InboundStats:
    """Frames the peer sent us on one path."""

    frames: int  #: DATA copies that arrived on this path
    first: int  #: ...of which this path delivered first
    lag: float  #: smoothed delay behind the first copy when not first (s)
    loss: float  #: smoothed share of the peer's copies on this path that never arrived


@dataclass(frozen=True, slots=True)
class OutboundStats:
    """Frames we sent on one path, as the peer reported them back."""

    first: int  #: frames this path delivered first at the peer
    lag: float  #: smoothed delay behind the first copy at the peer (s)
    loss: float  #: smoothed share of our copies on this path the peer never got


@dataclass(frozen=True, slots=True)
class PathSnapshot:
    id: int
    kind: str  #: "datagram" or "stream"
    tier: str  #: "primary", "overflow" or "backup"
    state: str  #: the path's state ("probing", "up", "down")
    rtt: float | None  #: smoothed RTT (s); None before the first sample
    rtt_min: float | None  #: lowest RTT seen (s)
    rtt_recent: tuple[float, ...]  #: the last RTT samples (s), oldest first
    rtt_buckets: tuple[int, ...]  #: RTT histogram counts (the metrics' buckets)
    rtt_sum: float  #: sum of every RTT sample (s)
    rtt_count: int  #: RTT samples taken
    bytes_sent: int
    bytes_recv: int
    acks_lost: int
    acks_received: int
    congestion: dict[str, Any]  #: the path's congestion controller, its own fields
    inbound: InboundStats
    outbound: OutboundStats
    #: the access link the path leaves by, as the glue named it (`Path.link`): the scheduler
    #: keeps stream paths off bulk by it, so a glue that stopped passing it shows here
    link: str | None = None


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    session_id: str  #: hex
    role: str  #: "client" or "exit"
    state: str  #: the core's state ("open", "resuming", "closed")
    age: float  #: seconds since the session was made
    bytes_out: int  #: stream bytes the application gave us
    bytes_in: int  #: stream bytes delivered to the application
    unacked_bytes: int
    retransmissions: int
    duplicates: int  #: copies dropped because another copy came first
    bad_frames: int  #: frames that failed their tag or were malformed
    stale_frames: int  #: authenticated ACKs too old for their path (replays): dropped
    rto: float  #: the current resend timeout (s)
    encrypted: bool
    compress: str
    policy: str
    best_k: int
    compressed_out: int | None  #: compressed bytes sent; None without compression
    compressing: bool | None  #: whether compression is on now; None without compression
    paths: tuple[PathSnapshot, ...]
    schema: int = SCHEMA_VERSION

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the control socket's SESSION document (endpoints add their fields)."""
        doc = dataclasses.asdict(self)
        # asdict keeps tuples as tuples; JSON readers and endpoints extend the path list.
        doc["paths"] = list(doc["paths"])
        for path in doc["paths"]:
            path["rtt_recent"] = list(path["rtt_recent"])
            path["rtt_buckets"] = list(path["rtt_buckets"])
        return doc
