#!/usr/bin/env python3
"""Two uploads sharing one bottleneck in the simulator: how fairly they split it.

    python3 contrib/bench/sim_fairness.py

Each scenario runs two sessions (one datagram path each, different RTTs) through one uplink
with a 200 ms tail-drop queue (tests/sim), on virtual time, and measures the second half of
the run: each session's goodput, Jain's index of the two, the link's use and the shared
queue's wait (p50, p95). Issue 9 asks for a fair share (Jain >= 0.9) with a bounded queue.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.sim.network import share_bottleneck

MBIT = 1e6 / 8
#: (uplink bit/s, seconds, one-way delays of the two sessions' paths, when each starts (s))
SCENARIOS: tuple[tuple[float, float, tuple[float, float], tuple[float, float]], ...] = (
    (2e6, 12.0, (0.02, 0.03), (0.0, 0.0)),  # the test's (tests/sim/test_congestion.py)
    (2e6, 20.0, (0.02, 0.03), (0.0, 0.0)),
    (2e6, 12.0, (0.01, 0.05), (0.0, 0.0)),
    (5e6, 10.0, (0.025, 0.025), (0.0, 0.0)),
    (10e6, 8.0, (0.02, 0.04), (0.0, 0.0)),
    # the second session joins a busy uplink: its first RTT samples carry the first's queue
    (5e6, 16.0, (0.025, 0.025), (0.0, 4.3)),
    (2e6, 16.0, (0.03, 0.02), (0.0, 4.3)),
)


def main() -> int:
    for bits, total, delays, starts in SCENARIOS:
        rate = bits / 8
        run = share_bottleneck(rate, total, delays, starts)
        got, waits = run.got, run.waits
        rtts = "/".join(f"{2 * d * 1e3:.0f}" for d in delays)
        shares = ", ".join(f"{g * 8 / (total / 2) / 1e6:.2f}" for g in got)
        late = f", second from {starts[1]:g} s" if starts[1] else ""
        print(
            f"{bits / 1e6:.0f} Mbit/s, RTT {rtts} ms, {total:.0f} s{late}: goodput {shares} "
            f"Mbit/s, Jain {run.jain:.3f}, link use {sum(got) / (rate * total / 2):.0%}, queue p50 "
            f"{statistics.median(waits) * 1e3:.0f} ms p95 "
            f"{statistics.quantiles(waits, n=20)[18] * 1e3:.0f} ms, drops {run.dropped}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
