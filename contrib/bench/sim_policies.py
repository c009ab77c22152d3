#!/usr/bin/env python3
"""Each scheduling policy in the simulator: no CPU limit, the aggregation bench's routes.

    python3 contrib/bench/sim_policies.py            # 10 MB download, 0 % and 5 % loss

Two paths as in contrib/bench/aggregation.py (8 + 4 Mbit/s down, 10 and 25 ms one way, 60 ms
tail-drop queues), the real sessions on virtual time (tests/sim). Prints when the download's
session closed (handshake excluded, FIN exchange included) against the ideal, size / 12 Mbit/s.
What the lab bench loses beyond this is the machine's (CPU, ACKs delayed by a busy loop).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, Simulation

#: (one-way delay s, upload bit/s, download bit/s), as in aggregation.py
ROUTES = ((0.010, 4e6, 8e6), (0.025, 2e6, 4e6))
QUEUE = 0.06


def link(delay: float, rate: float, loss: float) -> LinkSpec:
    return LinkSpec(delay=delay, loss=loss, bottleneck=Bottleneck(rate / 8, QUEUE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10)
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    data = random.Random(1).randbytes(size)
    ideal = size * 8 / sum(r[2] for r in ROUTES)
    for loss in (0.0, 0.05):
        for policy in Policy:
            paths = [PathSpec(link(d, up, loss), link(d, down, loss)) for d, up, down in ROUTES]
            sim = Simulation(paths, 1, [], [data], features=Features(schedule=Schedule(policy)))
            result = sim.run(600)
            assert result.client.received == data
            end = result.client.closed_at or float("nan")
            print(
                f"loss {loss:.0%} {policy:>9}: {end:.2f} s, {end / ideal:.2f}x of the ideal "
                f"{ideal:.2f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
