"""Probe turns: one session's datagram paths take turns at their probe rounds.

Used by each datagram path's controller (`congestion.ModelRate`, its `_next_gain`); one
`ProbeTurns` per session (`session.Session._probe_turns`).
"""

from __future__ import annotations

#: A probe turn (`ProbeTurns`) covers this many of the probing path's rounds: the 1.25 round
#: that queues a quarter of its BDP and the 0.75 round that drains it.
PROBE_TURN_ROUNDS = 2
#: ...and while the holder is in its 1.25 round, another path's cruise round (or a probe round
#: the turn refused) paces at this gain: it drains what it queued, so a keystroke's copy on it
#: passes a short queue while the other's probe stands. Not during the holder's 0.75 round:
#: that one drains its own queue, and yielding through it too held 4+ paths at 0.9 nearly all
#: the time (review H3).
YIELD_GAIN = 0.9
#: A probe refused this many of the path's rounds in a row goes anyway (taking the turn): its
#: bandwidth window (congestion.BW_WINDOW_ROUNDS, 10) less its probe cycle (8 rounds), so a
#: path's probes are no further apart than the window that remembers what a probe found,
#: except beside a path with rounds over twice as long: then up to one of its rounds more (see
#: below; the window lapses, at no measured cost: c38f231, review J2).
#: Deferred without a bound, six paths of a session probed every ~2n rounds, up to 37 apart,
#: and the windowed maximum sagged between (review H3). But not before the 1.25 round of the
#: path that refused it first has ended (`refuse`): that lasts the other path's round.
PROBE_DEFER_ROUNDS = 2


class ProbeTurns:
    """One session's datagram paths take turns at their probe rounds (PROBE_GAINS' 1.25 and
    the 0.75 after it): a path whose probe is due while another path of the session holds the
    turn cruises (at YIELD_GAIN while the holder's 1.25 round lasts, else at 1.0) and asks
    again next round, for PROBE_DEFER_ROUNDS rounds and at least until that holder's 1.25
    round has ended; then it probes anyway.

    Why: each probe stands about a quarter of the path's BDP in its bottleneck queue (14-19 ms
    on the netlab's two uplinks, more when the estimate already runs at the link), and a
    keystroke of any session on those uplinks goes on every path, so its echo waits behind the
    shorter of the queues. With both uplinks probing at once (their cycles of 8 rounds of 55
    and 75 ms overlap often) the shorter queue is a probe's too: typing's p99 beside a download
    rose by the probe's queue. In turns, one uplink's queue is a cruise's at any time, and
    the cruising paths pace at YIELD_GAIN while the holder probes up, draining what they
    queued. A session with one datagram path (every fairness test) probes as before; between
    sessions only that yield is new (a session's paths keep off each other's probes, not
    another session's).
    """

    __slots__ = ("_holder", "_until", "_up_until")

    def __init__(self) -> None:
        self._holder: object = None
        self._until = float("-inf")  #: the end of the holder's turn (its 1.25 and 0.75 rounds)
        self._up_until = float("-inf")  #: the end of its 1.25 round

    @property
    def up_until(self) -> float:
        """When the holder's 1.25 round ends (s, the clock's)."""
        return self._up_until

    def refuse(self, who: object, now: float, deferred: int, wait_until: float) -> bool:
        """Whether `who`'s due probe waits: another path holds the turn, and `who` has waited
        fewer than PROBE_DEFER_ROUNDS rounds for it or `wait_until` (`up_until` when its probe
        was first refused) has not come."""
        # The holder's 1.25 round lasts the holder's round, not the waiter's: counted in the
        # waiter's rounds alone, a 15-20 ms path beside a 75-120 ms one waited its 2 rounds
        # inside that round and probed on top of it (review I5: 7.6-10.3 % of the 1.25 time
        # overlapped, more than with no turns). Only the first refuser's round: waiting out
        # the 1.25 round of each path that took the turn meanwhile too, six 30-40 ms paths
        # probed up to 13.5 rounds apart, past their bandwidth window.
        if self._holder is who or now >= self._until:
            return False
        return deferred < PROBE_DEFER_ROUNDS or now < wait_until

    def take(self, who: object, now: float, round_time: float) -> None:
        """`who` starts its probe now; its rounds are `round_time` s long."""
        self._holder, self._up_until = who, now + round_time
        self._until = now + PROBE_TURN_ROUNDS * round_time

    def yields(self, who: object, now: float) -> bool:
        """Whether `who` paces at YIELD_GAIN now: another path is in its 1.25 round."""
        return self._holder is not who and now < self._up_until

    def release(self, who: object) -> None:
        """`who` gives up the turn it holds (a re-measure resets its cycle)."""
        if self._holder is who:
            self._holder, self._until, self._up_until = None, float("-inf"), float("-inf")
