"""A session's datagram paths take turns at their probe rounds (`core/probe_turns.py`); with
many paths the turns must cost neither rate nor the paths' own probes (review H3).
"""

from __future__ import annotations

from dupsession.core.congestion import BW_WINDOW_ROUNDS, PROBE_GAINS, ModelRate
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, Simulation

MBIT = 1e6 / 8  #: bytes per second
PAYLOAD_SHARE = 1196 / 1232  #: of a full datagram frame on the wire


def test_six_datagram_paths_keep_the_links_and_each_probes_within_its_window() -> None:
    """Six loss-free 2 Mbit/s datagram paths (30-40 ms), one striped 12 MB upload. When every
    path yielded (0.9) through the holder's whole turn and a refused probe waited without a
    bound, from four paths on the turn was always held, every other path paced at 0.9, and a
    path probed every ~2n rounds, up to 37 apart, past its 10-round bandwidth window: the
    upload made 88 % of the links' sum against 94 % with no turns (18 MB: 10.59 against 11.18
    Mbit/s). Now the yield lasts only the holder's 1.25 round and a probe waits at most
    PROBE_DEFER_ROUNDS rounds: 11.11 Mbit/s; here 95 % of the links' sum."""
    rate, count, size = 2 * MBIT, 6, 12_000_000
    paths = [
        PathSpec(
            LinkSpec(delay=0.015 + 0.002 * i, bottleneck=Bottleneck(rate, queue=0.2)),
            LinkSpec(delay=0.015 + 0.002 * i),
        )
        for i in range(count)
    ]
    sim = Simulation(
        paths, 5, [bytes(size)], [], features=Features(schedule=Schedule(Policy.STRIPE))
    )
    gaps: list[list[float]] = [[] for _ in range(count)]  #: between probes, in min RTTs
    since: list[float | None] = [None] * count  #: the last probe's start (None: not yet)
    last = [0.0] * count

    def watch(s: Simulation) -> bool:
        for i, path in enumerate(s.client.session.paths.values()):
            cc = path.cc
            assert isinstance(cc, ModelRate)
            if cc.mode != "probe":  # a min-RTT re-measure holds every round: start afresh
                since[i], last[i] = None, 0.0
                continue
            start = since[i]
            if cc.pacing_gain >= PROBE_GAINS[0] and last[i] < PROBE_GAINS[0]:
                if start is not None:
                    gaps[i].append((s.now - start) / cc.min_rtt)
                since[i] = s.now
            last[i] = cc.pacing_gain
        return len(s.exit.received) >= size

    result = sim.run(until=60, stop=watch)
    assert result.exit.received == result.client.sent, result.describe()
    share = size / (result.end * count * rate * PAYLOAD_SHARE)
    assert share >= 0.92, share
    for i in range(count):
        assert len(gaps[i]) >= 12, (i, gaps[i])
        # at most BW_WINDOW_ROUNDS rounds apart (the cycle's 8 + PROBE_DEFER_ROUNDS), where a
        # round ends on the first ACK after a min RTT: up to an ACK interval (4 ms) longer
        assert max(gaps[i]) <= BW_WINDOW_ROUNDS * 1.15, (i, max(gaps[i]))
