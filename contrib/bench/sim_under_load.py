#!/usr/bin/env python3
"""Typing beside a download on issue 9's seed-like network, in the simulator.

    python3 contrib/bench/sim_under_load.py                 # 40 MB, seed 1, ~80 s
    python3 contrib/bench/sim_under_load.py --mb 40 --loss 5 --seeds 1 2

The netlab's `under_load.py` scenario without its CPU: two uplinks (20 ms out / 35 back, 20 up
/ 50 down Mbit/s; 45 / 30 ms, 10 / 30 Mbit/s), each direction of each uplink one router port
with a 200 ms tail-drop queue that every path on the uplink shares; a UDP and a TCP path per
uplink (4 paths), `auto`; `--loss` random loss each way on the UDP paths (the simulator's
stream paths are reliable and have no TCP of their own). A typing session (a keystroke every 50
ms, echoed by the exit) runs through the same ports, alone for `--idle` s, then beside a second
session that downloads `--mb` MB. Printed per seed: typing p50 / p99 idle and during the
download (its first second left out, as the netlab bench does), the rise, the download's
goodput, and the downlink ports' queue waits (p50 / p95 / max) after the download's first
second. On virtual time, so every figure reproduces; what it leaves out is the netlab's CPU
(event-loop turns, the emulator's own scheduling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dupsession.aio.driver import SessionDriver
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from tests.sim.echo import EchoSimulation
from tests.sim.network import START, Bottleneck, LinkSpec, PathSpec, Simulation, run_together

MBIT = 1e6 / 8
#: uplink -> one-way delay out, back (s), rate up, down (bytes/s): tests/lab/world.py's SEED_LIKE
SEED_LIKE = {
    "up1": (0.020, 0.035, 20 * MBIT, 50 * MBIT),
    "up2": (0.045, 0.030, 10 * MBIT, 30 * MBIT),
}
ITEMS = SEED_LIKE.items()
QUEUE = 0.2
WARM = 1.0  #: s after the download starts before typing samples and queue waits count


def ports() -> dict[str, tuple[Bottleneck, Bottleneck]]:
    """Each uplink's two router ports (up, down), shared by every path on it."""
    return {u: (Bottleneck(up, QUEUE), Bottleneck(down, QUEUE)) for u, (*_, up, down) in ITEMS}


def specs(shared: dict[str, tuple[Bottleneck, Bottleneck]], loss: float) -> list[PathSpec]:
    out = []
    for uplink, (d_out, d_back, _, _) in SEED_LIKE.items():
        up, down = shared[uplink]
        for datagram in (True, False):
            out.append(
                PathSpec(
                    LinkSpec(delay=d_out, loss=loss * datagram, datagram=datagram, bottleneck=up),
                    LinkSpec(
                        delay=d_back, loss=loss * datagram, datagram=datagram, bottleneck=down
                    ),
                    link=uplink,
                )
            )
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def run(seed: int, mb: float, idle: float, loss: float) -> str:
    shared = ports()
    features = Features(schedule=Schedule(Policy.AUTO))
    start = 1.0 + idle  # the typing session starts 1 s in
    size = int(mb * 1e6)
    download = Simulation(specs(shared, loss), seed, [], [(start, bytes(size))], features=features)
    typing_keys = int((start + 40.0) / 0.05)
    typing = EchoSimulation(specs(shared, loss), seed + 1000, typing_keys, features=features)
    downs = {u: shared[u][1] for u in SEED_LIKE}
    counts = count_transmits(download.exit.driver)
    # run to the download's start + WARM, note where the waits begin, then to its end
    run_together([download, typing], until=start + WARM)
    marks = {u: len(p.waits) for u, p in downs.items()}

    def done() -> bool:
        return len(download.client.received) >= size

    while not done():
        run_together([download, typing], until=download.now - START + 0.5)
        if download.now - START > start + 120:
            break
    end = download.now - START
    typed = [at - START for at in typing.typed_at[: len(typing.rtts)]]  # echoed in order
    samples = list(zip(typed, typing.rtts, strict=True))
    idle_rtts = [r for t, r in samples if 1.0 <= t < start]
    busy_rtts = [r for t, r in samples if start + WARM <= t < end - 0.5]
    goodput = len(download.client.received) * 8 / (end - start) / 1e6
    queues = []
    for u, port in downs.items():
        waits = port.waits[marks[u] :]
        queues.append(
            f"{u} down p50/p95/max {pct(waits, 50) * 1e3:.1f}/{pct(waits, 95) * 1e3:.1f}/"
            f"{max(waits, default=0) * 1e3:.0f} ms, {port.dropped} dropped"
        )
    i50, i99 = pct(idle_rtts, 50), pct(idle_rtts, 99)
    b50, b99 = pct(busy_rtts, 50), pct(busy_rtts, 99)
    sends, timers = counts["transmits"], counts["timer"]
    rate = f"{sends / (end - start):,.0f}/s, {counts['frames'] / max(sends, 1):.1f} frames each"
    return (
        f"seed {seed}: typing idle {i50 * 1e3:.1f}/{i99 * 1e3:.1f} ms, during {b50 * 1e3:.1f}/"
        f"{b99 * 1e3:.1f} ms (n {len(busy_rtts)}), rise {(b99 - i99) * 1e3:+.1f} ms; download "
        f"{goodput:.1f} Mbit/s in {end - start:.2f} s; " + "; ".join(queues) + "; the exit's "
        f"transmits that sent {sends:,} ({rate}), {timers:,} of them its timer's"
    )


def count_transmits(driver: SessionDriver) -> dict[str, int]:
    """Counts the download's exit (relayd's part) transmits that sent frames, the frames they
    sent, and how many of them ran from its timer: each is a scheduler pass and a send per path
    on the real exit, the fixed cost pacing's wake-ups add (issue 9)."""
    counts = {"transmits": 0, "frames": 0, "timer": 0}
    session, on_timer = driver.session, driver._on_timer
    transmit, in_timer = session.transmit, [False]

    def counted(now: float) -> dict[int, list[bytes]]:
        out = transmit(now)
        if out:
            counts["transmits"] += 1
            counts["frames"] += sum(map(len, out.values()))
            counts["timer"] += in_timer[0]
        return out

    def timer() -> None:
        in_timer[0] = True
        try:
            on_timer()
        finally:
            in_timer[0] = False

    session.transmit = counted  # type: ignore[method-assign]
    driver._on_timer = timer  # type: ignore[method-assign]
    return counts


def cost_arguments(doc: str, loss: float) -> argparse.Namespace:
    """The arguments of the cost benches that time one simulated download's calls
    (ack_cost.py, send_cost.py): its size, loss and seed, and runs of which the cheapest counts."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--loss", type=float, default=loss, help="percent, each way (UDP)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs; the cheapest is reported")
    return parser.parse_args()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--idle", type=float, default=2.0, help="typing alone (s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--loss", type=float, default=0.0, help="random loss each way, percent")
    args = parser.parse_args()
    for seed in args.seeds:
        print(run(seed, args.mb, args.idle, args.loss / 100), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
