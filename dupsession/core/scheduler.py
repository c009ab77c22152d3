"""Scheduling: which DATA frame goes on which path, and when. One interface, several policies.

A policy sees the paths (state, RTT, controller, tier), the sender's shared buffer of unacked
frames and the frames recovery wants resent, and returns the DATA frames per path for this
transmit. It never builds ACKs (the session adds those) and never decides that a frame is lost
(`core/recovery.py` does). Each direction is scheduled by the end that sends it, by the policy
the client chose for the session (`core/policy.py`).

- `Redundant` (`redundant.py`): every frame on every usable path its controller lets send.
- `BestK` (`best_k.py`): every frame on the k paths with the best recent delivery; the
  others carry one probe copy now and then so their figures stay fresh; a degraded path is
  swapped out.
- `Stripe` (`stripe.py`): each frame once (a keystroke twice on a lossy datagram path, as in
  every policy: `schedule_copies.doubles`), on the path expected to deliver it first
  (ECF/BLEST: a slower path takes a frame only when the faster ones' queue would deliver it
  later than it would); a frame still unacknowledged when it should have been is re-sent
  once on a faster path (deadline re-injection, as xquic does), and a fast path with spare
  budget re-sends the frames in flight on slower paths that it would deliver sooner (tail
  re-injection).
- `auto` (`Stripe(copy_spare=True)`): `Stripe`, and whatever budget the paths have left
  copies the frames in flight on other paths: an idle shell gets every keystroke on every
  path, a transfer gets their sum.

Tiers (`Tier`) gate every policy the same way (`schedule_paths.roles`): backup paths carry
data only when no primary or overflow path is alive, and are kept quiet otherwise; overflow
paths carry only frames no primary path has taken, single copies, once the primaries have no
budget left. What every policy asks about a path is in `schedule_paths`, the copying they
share in `schedule_copies`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dupsession.core.best_k import BestK
from dupsession.core.paths import Path
from dupsession.core.policy import Policy, Schedule
from dupsession.core.redundant import Redundant
from dupsession.core.sender import Sender, SentFrame
from dupsession.core.stripe import Stripe


class Scheduler(Protocol):
    #: Extra reorder window recovery must allow (s): single copies on paths of different
    #: delay arrive out of order by design, not by loss.
    reorder_spread: float

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

    def wake_at(self) -> float | None:
        """When the policy wants `schedule` called again by time (None: only on input)."""
        ...

    def waiting(self, path: Path, sender: Sender) -> bool:
        """Whether `path` has frames this policy would give it as soon as its controller lets
        it: only then is the controller's pacing time a timer (else it would spin)."""
        ...


def make_scheduler(schedule: Schedule) -> Scheduler:
    if schedule.policy is Policy.BEST_K:
        return BestK(schedule.best_k)
    if schedule.policy is Policy.STRIPE:
        return Stripe()
    if schedule.policy is Policy.AUTO:
        return Stripe(copy_spare=True)
    return Redundant()
