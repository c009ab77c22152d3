#!/usr/bin/env python3
"""CPU of the sending exit's core in sim_under_load's download, per MB sent.

    python3 contrib/bench/send_cost.py                  # 20 MB at 0 % loss, seed 1
    python3 contrib/bench/send_cost.py --mb 20 --loss 5 --repeat 3

relayd's part of the netlab download (issue 9: 49-55 % of a core) less its sockets and event
loop: the download's exit session in the simulator (4 paths, `auto`, virtual time, so a tree
of unchanged behaviour makes the same calls), its core calls timed with this thread's CPU
clock: `transmit` (cutting, sealing, scheduling, ACKs), `get_timer`, `handle_timer`, and
input (`receive_frame(s)`: the client's ACKs). Printed: each part's microseconds per call and
milliseconds per MB of the download, the cheapest of `--repeat` runs by total, with the call
counts (a tree that changes behaviour changes them).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for where in (ROOT, ROOT / "contrib" / "bench"):
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))

import sim_under_load  # noqa: E402

from dupsession.core.session import Session  # noqa: E402

PARTS = ("transmit", "get_timer", "handle_timer", "receive_frame", "receive_frames")


class Meter:
    """Times one exit session's core calls."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(PARTS, 0.0)
        self.calls = dict.fromkeys(PARTS, 0)
        self.frames = 0  #: frames its transmits sent

    @staticmethod
    def install(meters: list[Meter]) -> None:
        """Meter every exit session made from now on (the download's is the busiest)."""
        init = Session.__init__

        def tracked(session: Session, *args: Any, **kwargs: Any) -> None:
            init(session, *args, **kwargs)
            if session.role.name == "EXIT":
                meter = Meter()
                meters.append(meter)
                for part in PARTS:
                    setattr(session, part, meter.wrap(part, getattr(session, part)))

        Session.__init__ = tracked  # type: ignore[method-assign,assignment]

    def wrap(self, part: str, call: Callable[..., Any]) -> Callable[..., Any]:
        clock, cpu, calls = time.thread_time, self.cpu, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            out = call(*args, **kwargs)
            cpu[part] += clock() - start
            calls[part] += 1
            if part == "transmit":
                self.frames += sum(map(len, out.values()))
            return out

        return timed


def main() -> int:
    args = sim_under_load.cost_arguments(__doc__, loss=0.0)
    best: Meter | None = None
    for _ in range(args.repeat):
        meters: list[Meter] = []
        init = Session.__init__
        Meter.install(meters)
        try:
            sim_under_load.run(args.seed, args.mb, 0.5, args.loss / 100)
        finally:
            Session.__init__ = init  # type: ignore[method-assign]
        meter = max(meters, key=lambda m: m.frames)
        if best is None or sum(meter.cpu.values()) < sum(best.cpu.values()):
            best = meter
    assert best is not None
    total = sum(best.cpu.values())
    parts = ", ".join(
        f"{part} {best.calls[part]:,} x {best.cpu[part] / best.calls[part] * 1e6:.1f} us "
        f"({best.cpu[part] * 1e3 / args.mb:.2f} ms/MB)"
        for part in PARTS
        if best.calls[part]
    )
    print(
        f"{args.mb:g} MB at {args.loss:g} % loss: the download's exit core "
        f"{total * 1e3 / args.mb:.2f} ms CPU per MB ({best.frames:,} frames sent); {parts}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
