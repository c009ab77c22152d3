#!/usr/bin/env python3
"""A datagram path after a silence, in the simulator: a paused receiver, and an outage.

    python3 contrib/bench/sim_silence.py

Pause: a 40 Mbit/s, 40 ms download to a client whose consumer pauses at 2 s for 2.0 or 2.2 s
(the default 8 MiB / 8192-frame window: the frozen window's frames past 8 MiB are dropped
unacked). Outage: a 6 MB upload over 10 Mbit/s, 40 ms, dark both ways from 2 s for 1 or 3 s.
Printed: the sender's rate estimate and loss estimate 0.3 s after, the goodput in the second
after, the queue in that second (pause) and when the transfer completes. Virtual time: every
figure reproduces.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dupsession.core.congestion import FRAME_BITS, ModelRate
from tests.sim.network import START, Bottleneck, LinkSpec, PathSpec, Simulation

MBIT = 1e6 / 8


def run(pause: float, outage: float) -> str:
    """One run: a download paused for `pause` s, or an upload dark for `outage` s."""
    rate = (40 if pause else 10) * MBIT
    port = Bottleneck(rate, queue=0.2)
    dark = ((2.0, 2.0 + outage),) if outage else ()
    hop = LinkSpec(delay=0.02, outages=dark)
    if pause:  # the download's bottleneck is the exit's downlink
        spec = PathSpec(hop, LinkSpec(delay=0.02, bottleneck=port))
        size = 40_000_000
        sim = Simulation([spec], 1, [], [bytes(size)], client_pauses=[(2.0, 2.0 + pause)])
        sender, receiver = sim.exit, sim.client
    else:
        spec = PathSpec(LinkSpec(delay=0.02, bottleneck=port, outages=dark), hop)
        size = 6_000_000
        sim = Simulation([spec], 1, [bytes(size)], [])
        sender, receiver = sim.client, sim.exit
    back = 2.0 + (pause or outage)
    marks: dict[float, tuple[int, float, float]] = {}
    queue: list[float] = []

    def watch(s: Simulation) -> bool:
        t = s.now - START
        cc = next(iter(sender.session.paths.values())).cc
        assert isinstance(cc, ModelRate)
        for at in (back, back + 0.3, back + 1.0):
            if at not in marks and t >= at:
                marks[at] = (len(receiver.received), cc.btl_bw * FRAME_BITS / 1e6, cc.loss_rate)
        if back <= t <= back + 1.0:
            queue.append(max(0.0, port.busy_until - s.now))
        return len(receiver.received) >= size

    result = sim.run(until=120, stop=watch)
    got = (marks[back + 1.0][0] - marks[back][0]) * 8 / 1e6
    _, est, loss = marks[back + 0.3]
    queue.sort()
    what = f"pause {pause} s" if pause else f"outage {outage} s"
    return (
        f"{what}: 0.3 s after, rate estimate {est:.1f} Mbit/s, loss {loss:.3f}; the second after "
        f"{got:.2f} Mbit/s, queue p95 {queue[int(len(queue) * 0.95)] * 1000:.1f} ms; "
        f"done {result.end - back:.2f} s after"
    )


def main() -> int:
    for pause, outage in ((2.0, 0.0), (2.2, 0.0), (0.0, 1.0), (0.0, 3.0)):
        print(run(pause, outage), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
