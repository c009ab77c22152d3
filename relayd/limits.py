"""The exit's limits, with safe defaults, and the small rate limiters that enforce them.

Every limit protects the other sessions: a source that opens silent connections, a key holder
that fills the session table or pins buffers, a scanner that floods the log. At each limit
relayd logs one clear line (rate-limited) and the client gets a clear refusal.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable in the TOML file (`[limits]`) and by flags; see docs/SECURITY.md."""

    #: Sessions in the table (live and lingering tombstones).
    max_sessions: int = 1024
    #: Sessions opened from one client source address (its IP) at once.
    max_sessions_per_source: int = 64
    #: TCP connections not yet bound to a session (silent, or mid-handshake), in total...
    max_pending: int = 256
    #: ...and from one source address.
    max_pending_per_source: int = 16
    #: A TCP connection must bind to a session (verified HELLO or fresh ACK) within this (s).
    handshake_timeout: float = 10.0
    #: Per-session buffering: unacked bytes toward the client, and the receive window (in
    #: datagram-sized frames, this many bytes' worth) from it.
    session_buffer: int = 8 * MiB
    #: No new session while sessions x the worst case of one (2 x session_buffer + the target's
    #: write buffer) would exceed this: the exit's memory is bounded in total.
    memory_limit: int = 8 * 1024 * MiB
    #: A session whose every path is a TCP connection, all closed by the client, is freed after
    #: this long (s) instead of the full grace period: a live client reconnects within seconds.
    orphan_grace: float = 60.0
    #: Serve each new session in a worker process of its own, at most this many at once
    #: (beyond: in the main process); 0: every session in the main process (relayd/workers.py).
    session_processes: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first limit that makes no sense."""
        for name in (
            "max_sessions",
            "max_sessions_per_source",
            "max_pending",
            "max_pending_per_source",
            "session_buffer",
            "memory_limit",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be at least 1")
        for name in ("handshake_timeout", "orphan_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"limit {name} must be above 0 seconds")
        if self.session_processes < 0:
            raise ValueError("limit session_processes must be at least 0")
        if self.session_buffer < 64 * 1024:
            raise ValueError("limit session_buffer must be at least 65536 bytes")


class TokenBucket:
    """`rate` events per second with bursts up to `burst`; time is passed in or read."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def refund(self) -> None:
        """Give back the token of an event a later check refused (it did not happen)."""
        self._tokens = min(self.burst, self._tokens + 1)


class PerSourceBuckets:
    """A `TokenBucket` per source address, the `capacity` most recent sources only (LRU): one
    source's flood spends its own budget, not everyone's."""

    def __init__(self, rate: float, burst: float, capacity: int = 1024) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, source: str, now: float | None = None) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now)

    def refund(self, source: str) -> None:
        bucket = self._buckets.get(source)
        if bucket is not None:
            bucket.refund()


class RateLimitedLog:
    """Warning lines at most `rate` per second; the count of suppressed ones follows later.

    One line per event, with the source address first-class, so fail2ban-style tools can
    match them: `refused handshake from 203.0.113.7 port 4242: bad key or garbage`.
    """

    def __init__(self, logger: logging.Logger, rate: float = 10.0, burst: float = 20.0) -> None:
        self._log = logger
        self._bucket = TokenBucket(rate, burst)
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        if not self._bucket.take():
            self.suppressed += 1
            return
        if self.suppressed:
            self._log.warning("(%d similar lines suppressed)", self.suppressed)
            self.suppressed = 0
        self._log.warning(message, *args)
