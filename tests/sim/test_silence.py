"""A datagram path that hears nothing back: what a silence may cost the traffic around it.

The outage itself (a transfer through 1-3 s of dark) is `test_congestion.py`'s
`test_after_an_outage_the_path_resumes_at_its_rate`; these are review Q's two cases of the
window a silent path keeps (`ModelRate._window`): typing through an outage, and a burst after
a quiet spell, on virtual time.
"""

from __future__ import annotations

import statistics

import pytest

from tests.sim.echo import EchoSimulation
from tests.sim.network import START, Bottleneck, LinkSpec, PathSpec, Simulation

MBIT = 1e6 / 8


def test_typing_through_an_outage_comes_back_within_a_probe() -> None:
    """A keystroke every 50 ms over one 40 ms datagram path that goes dark both ways from 2 s
    to 3.0-3.44 s (twelve end times). With a silent path's window at MIN_WINDOW whatever it
    carried, recovery's two probes (twice each on a lone path) took all four places, and the
    keystrokes typed in the dark waited another stale stretch: the first echo after the light
    124.5 ms at the median, 244 at worst (99619f0). A path that was not backlogged keeps its
    window: 94 / 124 ms, a keystroke typed after the light at most 129 (before the outage fix
    89 / 89 and 94: the rest is the probe timeout backed off for the session, at most
    `max_backoff` apart)."""
    firsts, worst = [], []
    for k in range(12):
        end = 3.0 + 0.04 * k
        dark = ((2.0, end),)
        spec = PathSpec(LinkSpec(delay=0.02, outages=dark), LinkSpec(delay=0.02, outages=dark))
        sim = EchoSimulation([spec], 1, count=100, interval=0.05, start=1.0)
        sim.run(until=20)
        typed = [t - START for t in sim.typed_at]
        echoes = list(zip(typed, sim.rtts, strict=True))  # every keystroke echoed, in order
        firsts.append(min(t + r for t, r in echoes if t + r >= end) - end)
        worst.append(max(r for t, r in echoes if t >= end))
    assert statistics.median(firsts) <= 0.11 and max(firsts) <= 0.15, firsts
    assert max(worst) <= 0.15, worst


@pytest.mark.parametrize("quiet", [0.0, 0.15, 0.3, 0.45])
def test_a_burst_after_a_quiet_spell_is_not_taken_for_silence(quiet: float) -> None:
    """20 KB written 3 s + `quiet` after a first 1 KB, over a 20 Mbit/s, 40 ms path: the last
    ACK heard may be a keepalive's, up to 0.5 s old, so counted from it the burst's second
    transmit found the path silent 2 ms into the burst and wrote its first frames off, its
    window then MIN_WINDOW for a round trip: 69.9 ms for the burst instead of 28.3 in 6 of 10
    such spells (review Q1). Silence counts from the first send with nothing in flight."""
    port = Bottleneck(20 * MBIT, queue=0.2)
    spec = PathSpec(LinkSpec(delay=0.02, bottleneck=port), LinkSpec(delay=0.02))
    at, total = 3.0 + quiet, 1000 + 20_000
    sim = Simulation([spec], 1, [(0.0, bytes(1000)), (at, bytes(20_000))], [])
    done: list[float] = []

    def stop(s: Simulation) -> bool:
        if not done and len(s.exit.received) >= total:
            done.append(s.now - START)
        return bool(done)

    sim.run(until=10, stop=stop)
    assert done and done[0] - at < 0.035, (quiet, done)  # 28.3 ms each
