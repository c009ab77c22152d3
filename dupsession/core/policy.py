"""What a session's scheduler is told to do: the policy, best-k's k and each path's tier.

The client chooses (command line, config) and tells the exit in the authenticated HELLO (the
SCHEDULE option, docs/PROTOCOL.md); each end then schedules its own direction by the same
rules (`core/scheduler.py`). Pure data and its wire form; no scheduling logic here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: best-k's default k: two copies survive one path's loss at half redundant's cost on 4 paths.
DEFAULT_BEST_K = 2
#: Paths are numbered in one byte on the wire, so k never needs more.
MAX_BEST_K = 255


class Policy(StrEnum):
    REDUNDANT = "redundant"  #: every frame on every path congestion control lets send
    BEST_K = "best-k"  #: every frame on the k paths with the best recent delivery
    STRIPE = "stripe"  #: each frame on the path expected to deliver it first
    AUTO = "auto"  #: duplicate while paths have spare capacity, stripe the rest


#: The client's default policy (settings, --policy). Not `Schedule`'s default, which is what
#: a HELLO without a SCHEDULE option means (redundant, as before the option existed).
DEFAULT_POLICY = Policy.AUTO


class Tier(StrEnum):
    PRIMARY = "primary"  #: carries data by the policy
    OVERFLOW = "overflow"  #: data only when the primaries are saturated, never a copy
    BACKUP = "backup"  #: data only when no primary or overflow path is up; probes otherwise


_POLICY_BYTE = {Policy.REDUNDANT: 0, Policy.BEST_K: 1, Policy.STRIPE: 2, Policy.AUTO: 3}
_BYTE_POLICY = {v: k for k, v in _POLICY_BYTE.items()}
_TIER_BYTE = {Tier.PRIMARY: 0, Tier.OVERFLOW: 1, Tier.BACKUP: 2}
_BYTE_TIER = {v: k for k, v in _TIER_BYTE.items()}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A session's scheduling choice; the same value at both ends."""

    policy: Policy = Policy.REDUNDANT
    best_k: int = DEFAULT_BEST_K
    #: (path id, tier) for every path that is not primary, in path id order.
    tiers: tuple[tuple[int, Tier], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.best_k <= MAX_BEST_K:
            raise ValueError(f"best-k needs 1 <= k <= {MAX_BEST_K}, not {self.best_k}")

    def tier_of(self, path_id: int) -> Tier:
        return dict(self.tiers).get(path_id, Tier.PRIMARY)

    def encode(self) -> bytes:
        """SCHEDULE option value: policy, k, then (path id, tier) pairs for non-primary paths."""
        out = bytearray((_POLICY_BYTE[self.policy], self.best_k))
        for path_id, tier in self.tiers:
            if tier is not Tier.PRIMARY:
                out += bytes((path_id, _TIER_BYTE[tier]))
        return bytes(out)

    @classmethod
    def decode(cls, value: bytes) -> Schedule:
        """The inverse of `encode`; ValueError for anything it could not have produced."""
        if len(value) < 2 or len(value) % 2 or value[0] not in _BYTE_POLICY:
            raise ValueError("bad SCHEDULE option")
        tiers: dict[int, Tier] = {}
        for i in range(2, len(value), 2):
            path_id, tier = value[i], value[i + 1]
            if tier not in _BYTE_TIER or path_id in tiers or _BYTE_TIER[tier] is Tier.PRIMARY:
                raise ValueError("bad SCHEDULE option")
            tiers[path_id] = _BYTE_TIER[tier]
        return cls(_BYTE_POLICY[value[0]], value[1], tuple(sorted(tiers.items())))
