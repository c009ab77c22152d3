#!/usr/bin/env python3
"""Keystroke echo tails on one lossy UDP path, in the simulator (virtual time, exact).

    python3 contrib/bench/sim_tails.py              # 20 seeds x 400 keystrokes per case
    python3 contrib/bench/sim_tails.py --policy auto  # the scheduler policy (redundant)

A keystroke every 50 ms, echoed by the exit (tests/sim/echo.py), 5 % random loss each way.
Cases: issue 9's target path (25 ms each way: p99 within 3x the RTT) and the demo's best
single path (lte-udp, 35/12 ms: p99 within 3.5x). Prints p50, p99, max and p99 / RTT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from tests.sim.echo import echo_tail
from tests.sim.network import LinkSpec, PathSpec

#: (name, one-way delay out, back (s), loss each way, target p99 in RTTs)
CASES = (
    ("udp 25/25 ms, 5 % loss", 0.025, 0.025, 0.05, 3.0),
    ("demo lte-udp 35/12 ms, 5 % loss", 0.035, 0.012, 0.05, 3.5),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--keystrokes", type=int, default=400)
    parser.add_argument("--policy", choices=[p.value for p in Policy], default="redundant")
    args = parser.parse_args()
    features = Features(schedule=Schedule(policy=Policy(args.policy)))
    for name, up, down, loss, target in CASES:
        spec = PathSpec(LinkSpec(delay=up, loss=loss), LinkSpec(delay=down, loss=loss))
        tail = echo_tail(spec, range(1, args.seeds + 1), args.keystrokes, features=features)
        rtt = up + down
        verdict = "met" if tail.p99 <= target * rtt else "MISSED"
        print(
            f"{args.policy}, {name}: {tail.count} echoes, p50 {tail.p50 * 1e3:.1f} ms, "
            f"p99 {tail.p99 * 1e3:.1f} ms ({tail.p99 / rtt:.2f}x RTT, target {target}x: "
            f"{verdict}), max {tail.max * 1e3:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
