"""Probe turns: one session's datagram paths take turns at their probe rounds.

Used by each datagram path's controller (`congestion.ModelRate`, its `_next_gain`); one
`ProbeTurns` per session (`session.Session._probe_turns`).
"""

from __future__ import annotations

#: A probe turn (`ProbeTurns`) covers this many of the probing path's rounds: the 1.25 round
#: that queues a quarter of its BDP and the 0.75 round that drains it.
PROBE_TURN_ROUNDS = 2
#: ...and a path cruising while another holds the turn paces at this gain: it drains what it
#: queued, so a keystroke's copy on it passes a short queue while the other's probe stands.
YIELD_GAIN = 0.9


class ProbeTurns:
    """One session's datagram paths take turns at their probe rounds (PROBE_GAINS' 1.25 and
    the 0.75 after it): a path whose probe is due while another path of the session holds the
    turn cruises on and asks again next round.

    Why: each probe stands about a quarter of the path's BDP in its bottleneck queue (14-19 ms
    on the netlab's two uplinks, more when the estimate already runs at the link), and a
    keystroke of any session on those uplinks goes on every path, so its echo waits behind the
    shorter of the queues. With both uplinks probing at once (their cycles of 8 rounds of 55
    and 75 ms overlap often) the shorter queue is a probe's too: typing's p99 beside a download
    rose by the probe's queue. In turns, one uplink's queue is a cruise's at any time, and
    the cruising paths pace at YIELD_GAIN meanwhile, draining what they queued. A session with
    one datagram path (every fairness test) probes as before; between sessions only that
    yield is new (a session's paths keep off each other's probes, not another session's).
    """

    __slots__ = ("_holder", "_until")

    def __init__(self) -> None:
        self._holder: object = None
        self._until = float("-inf")

    def held(self, who: object, now: float) -> bool:
        """Whether another path holds the turn now (it is probing or draining its probe)."""
        return self._holder is not who and now < self._until

    def claim(self, who: object, now: float, span: float) -> bool:
        """Whether `who` may start its probe now, holding the turn for `span` s if so."""
        if self._holder is not who and now < self._until:
            return False
        self._holder, self._until = who, now + span
        return True
