"""Where a datagram path's frames go: reply addresses that an observer cannot move. Sans-IO.

A path is named inside the authenticated frame, not by its source address, so a client that
roams (new NAT mapping, new uplink address) keeps its paths. That makes the source address
the weak spot: an observer can replay a captured frame from an address of its choosing, and a
key holder can forge frames naming any path from a spoofed address. Rules, QUIC-style
(RFC 9000 §8, §9), each with its reason:

- An address is only ever considered for a path on a *fresh* authenticated frame (the session
  core returns a path id only for an ACK newer than any seen on that path, or a verified
  HELLO): a replayed frame never even makes an address a candidate.
- A candidate address becomes the path's reply address only after it echoed a challenge: an
  unpredictable 62-bit token sent *to that address* comes back in an authenticated frame *from
  that address*. Until then the path's frames keep going to the validated address.
- A path with no validated address yet (its first address, from the HELLO or the first ACK)
  may send its frames to its newest candidate, but never more than `AMPLIFICATION` times the
  bytes that address sent us in authenticated frames: relayd is useless as a reflector, for
  observers and key holders alike, however many path ids they name.

Addresses are opaque hashable values (the glue uses `(host, port)` tuples).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

A = TypeVar("A", bound=Hashable)

#: An unvalidated address gets at most this many bytes per byte it sent (QUIC's factor).
AMPLIFICATION = 3
#: At most one challenge per candidate per this many seconds.
CHALLENGE_INTERVAL = 0.02
#: Budget an unvalidated address keeps for challenges: its path's frames never use it up.
CHALLENGE_RESERVE = 256
#: Candidates kept per path (the newest win), and challenge tokens remembered per candidate.
MAX_CANDIDATES = 4
MAX_TOKENS = 8
#: Tokens are drawn from [2**62, 2**63): above any clock value in µs, so an echoed token is
#: never mistaken for an RTT sample (nor for one of our timestamps, `acks.on_path_ack`), and
#: 62 bits no one can guess.
TOKEN_BASE = 1 << 62


def random_token() -> int:
    return TOKEN_BASE + secrets.randbits(62)


class Verdict(Enum):
    KNOWN = "known"  #: the path's validated address: nothing to do
    CHALLENGE = "challenge"  #: send a challenge to this address now
    WAIT = "wait"  #: a candidate, challenged recently or out of budget
    VALIDATED = "validated"  #: this address echoed a challenge: it is the reply address now


@dataclass(slots=True)
class _Candidate:
    received: int = 0  #: bytes of authenticated frames from this address
    sent: int = 0  #: bytes sent to it
    tokens: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_TOKENS))
    challenged_at: float = float("-inf")

    def budget(self) -> int:
        return AMPLIFICATION * self.received - self.sent


class PathAddresses(Generic[A]):
    """The reply address of each datagram path of one session, and its candidates."""

    def __init__(self, token_source: Callable[[], int] = random_token) -> None:
        self._token = token_source
        self.validated: dict[int, A] = {}
        self._candidates: dict[int, dict[A, _Candidate]] = {}
        #: Frames withheld from unvalidated addresses (anti-amplification), for statistics.
        self.withheld = 0

    def path_of(self, addr: A) -> int | None:
        """The path an incoming datagram from `addr` belongs to (validated or candidate)."""
        for path_id, known in self.validated.items():
            if known == addr:
                return path_id
        for path_id, candidates in self._candidates.items():
            if addr in candidates:
                return path_id
        return None

    def is_validated(self, path_id: int, addr: A) -> bool:
        return self.validated.get(path_id) == addr

    def heard(self, path_id: int, addr: A, size: int, echo: int, now: float) -> Verdict:
        """A fresh authenticated frame of `size` bytes for `path_id` came from `addr`; `echo`
        is the echo ts it carried (0 for a HELLO). Says what the glue must do."""
        if self.validated.get(path_id) == addr:
            return Verdict.KNOWN
        candidates = self._candidates.setdefault(path_id, {})
        candidate = candidates.get(addr)
        if candidate is None:
            if len(candidates) >= MAX_CANDIDATES:
                del candidates[next(iter(candidates))]  # the oldest goes
            candidate = candidates[addr] = _Candidate()
        candidate.received += size
        if echo and echo in candidate.tokens:
            self.validated[path_id] = addr
            del self._candidates[path_id]  # the old address and every other candidate go
            return Verdict.VALIDATED
        if now - candidate.challenged_at < CHALLENGE_INTERVAL:
            return Verdict.WAIT
        return Verdict.CHALLENGE

    def challenge(self, path_id: int, addr: A, now: float) -> int:
        """A fresh token for a challenge to `addr`; call `spend` with the frame made from it."""
        candidate = self._candidates[path_id][addr]
        token = self._token()
        candidate.tokens.append(token)
        candidate.challenged_at = now
        return token

    def spend(self, path_id: int, addr: A, size: int) -> bool:
        """Whether `size` more bytes may go to the unvalidated `addr`; counts them if so."""
        candidate = self._candidates.get(path_id, {}).get(addr)
        if candidate is None or candidate.budget() < size:
            self.withheld += 1
            return False
        candidate.sent += size
        return True

    def route(self, path_id: int, frames: list[bytes]) -> tuple[A | None, list[bytes]]:
        """Where the path's `frames` go, and which of them: all to the validated address;
        with none yet, to the oldest candidate (the HELLO's source: an attacker racing a fresh
        frame only adds newer ones), within its anti-amplification budget."""
        addr = self.validated.get(path_id)
        if addr is not None:
            return addr, frames
        candidates = self._candidates.get(path_id)
        if not candidates:
            self.withheld += len(frames)
            return None, []
        addr, candidate = next(iter(candidates.items()))
        allowed: list[bytes] = []
        for frame in frames:
            if candidate.budget() - CHALLENGE_RESERVE < len(frame):
                self.withheld += 1
                continue
            candidate.sent += len(frame)
            allowed.append(frame)
        return addr, allowed

    def addresses(self) -> dict[int, A]:
        """Each path's current reply address (validated, else its oldest candidate)."""
        out = {p: next(iter(c)) for p, c in self._candidates.items() if c}
        out.update(self.validated)
        return out
