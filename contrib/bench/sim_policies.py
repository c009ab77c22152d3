#!/usr/bin/env python3
"""Each scheduling policy in the simulator: no CPU limit, the aggregation bench's routes.

    python3 contrib/bench/sim_policies.py            # 10 MB download, 0 % and 5 % loss
    python3 contrib/bench/sim_policies.py --policies auto --busy   # + typing beside it

Two paths as in contrib/bench/aggregation.py (8 + 4 Mbit/s down, 10 and 25 ms one way, 60 ms
tail-drop queues), the real sessions on virtual time (tests/sim). Prints when the download's
session closed (handshake excluded, FIN exchange included) against the ideal, size / 12 Mbit/s,
and the longest queueing delay each route's download queue saw after the first second.
With `--busy`: a second `auto` session on the same routes echoes a keystroke every 50 ms
(the exit sends a byte, the client receives it: the download's direction), alone (idle) and
beside the download; its p99 one-way delay is the lab's typing p99 less the upward half.
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
from tests.sim.network import (
    START,
    Bottleneck,
    LinkSpec,
    PathSpec,
    Simulation,
    run_together,
)

#: (one-way delay s, upload bit/s, download bit/s), as in aggregation.py
ROUTES = ((0.010, 4e6, 8e6), (0.025, 2e6, 4e6))
QUEUE = 0.06
#: Keystrokes: one byte every KEY_EVERY s from KEY_START s on.
KEY_EVERY = 0.05
KEY_START = 1.0


def routes(loss: float) -> tuple[list[PathSpec], list[Bottleneck]]:
    """The two routes, each direction with its own bottleneck (shareable across sessions)."""
    specs, downs = [], []
    for delay, up, down in ROUTES:
        up_port, down_port = Bottleneck(up / 8, QUEUE), Bottleneck(down / 8, QUEUE)
        specs.append(
            PathSpec(
                LinkSpec(delay=delay, loss=loss, bottleneck=up_port),
                LinkSpec(delay=delay, loss=loss, bottleneck=down_port),
            )
        )
        downs.append(down_port)
    return specs, downs


def arrivals(sim: Simulation) -> list[tuple[float, int]]:
    """(time, bytes received so far) at the client, recorded as the session delivers."""
    seen: list[tuple[float, int]] = []
    client = sim.client
    on_data = client.on_data

    def record(data: bytes) -> None:
        on_data(data)
        seen.append((sim.now - START, len(client.received)))

    client.on_data = record  # type: ignore[method-assign]
    return seen


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def typing_delays(seen: list[tuple[float, int]], count: int) -> list[float]:
    """One-way delay (ms) of each keystroke byte: when the client had received it."""
    out, i = [], 0
    for at, total in seen:
        while i < count and total > i:
            out.append((at - (KEY_START + i * KEY_EVERY)) * 1000)
            i += 1
    return out


def download(
    policy: Policy, data: bytes, loss: float, typing: float | None = None
) -> tuple[float, list[float], list[float]]:
    """(close time s, max queue per route after 1 s in ms, keystroke delays in ms)."""
    specs, downs = routes(loss)
    sims = []
    if data:
        sims.append(Simulation(specs, 1, [], [data], features=Features(schedule=Schedule(policy))))
    seen: list[tuple[float, int]] = []
    count = 0
    if typing is not None:
        count = int(typing / KEY_EVERY)
        keys = [(KEY_START + i * KEY_EVERY, b"k") for i in range(count)]
        typist = Simulation(specs, 2, [], keys, features=Features(schedule=Schedule(Policy.AUTO)))
        seen = arrivals(typist)
        sims.append(typist)
    starts = [0] * len(downs)
    if len(sims) == 1:
        sims[0].run(1.0)
    else:
        run_together(sims, until=1.0)
    starts = [len(port.waits) for port in downs]
    if len(sims) == 1:
        sims[0].run(600)
    else:
        run_together(sims, until=(typing or 0) + KEY_START + 1 if not data else 600)
    if data:
        assert sims[0].client.received == data
    end = sims[0].client.closed_at or float("nan") if data else 0.0
    queues = [
        max(port.waits[s:], default=0.0) * 1000 for port, s in zip(downs, starts, strict=True)
    ]
    return end, queues, typing_delays(seen, count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10)
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 5.0], help="percent")
    parser.add_argument("--policies", nargs="+", default=[p.value for p in Policy])
    parser.add_argument("--busy", action="store_true", help="also typing beside an auto download")
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    data = random.Random(1).randbytes(size)
    ideal = size * 8 / sum(r[2] for r in ROUTES)
    for loss in (x / 100 for x in args.loss):
        for policy in (Policy(p) for p in args.policies):
            end, queues, _ = download(policy, data, loss)
            print(
                f"loss {loss:.0%} {policy:>9}: {end:.2f} s, {end / ideal:.2f}x of the ideal "
                f"{ideal:.2f} s ({size * 8 / end / 1e6:.2f} Mbit/s); max queue after 1 s "
                + " / ".join(f"{q:.0f}" for q in queues)
                + " ms",
                flush=True,
            )
        if args.busy:
            _, _, idle = download(Policy.AUTO, b"", loss, typing=10.0)
            end, queues, busy = download(Policy.AUTO, data, loss, typing=ideal)
            print(
                f"loss {loss:.0%} typing one-way p99: idle {p99(idle):.1f} ms, beside an auto "
                f"download {p99(busy):.1f} ms ({len(busy)} keys); the download {end:.2f} s, "
                f"{end / ideal:.2f}x of the ideal; max queue "
                + " / ".join(f"{q:.0f}" for q in queues)
                + " ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
