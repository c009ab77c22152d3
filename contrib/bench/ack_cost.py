#!/usr/bin/env python3
"""CPU of ACKs in sim_under_load's download: taken at the sender, made at the receiver.

    python3 contrib/bench/ack_cost.py                 # 20 MB at 5 % loss, seed 1
    python3 contrib/bench/ack_cost.py --mb 40 --loss 5 --repeat 3

The download of `sim_under_load.py` (issue 9's seed-like network, 4 paths, virtual time, so
the same frames and ACKs in every run of a tree of the same behaviour): the exit sends, as
relayd does, and reads every ACK copy the client makes. Timed (this thread's CPU): an exit's
`Session.receive_frame` for each ACK frame (tag check, decode, `_receive_ack`: what relayd
spends per ACK copy read, less its socket and glue; the typing session's exit too) and
`make_ack` for each ACK either end makes (the downloading client's, mostly). Reported in
microseconds per ACK, the cheapest of `--repeat` runs; a tree that changes what is sent
changes the counts too, and they are printed beside the times.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for where in (ROOT, ROOT / "contrib" / "bench"):
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))

import sim_under_load  # noqa: E402

from dupsession.core import acks, wire  # noqa: E402
from dupsession.core import session as session_module  # noqa: E402
from dupsession.core.session import Role, Session  # noqa: E402

_ACK = int(wire.FrameType.ACK)


class Meter:
    """Counts and times the exit's ACK reads and the client's ACK making."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.read = self.made = 0
        self.read_cpu = self.made_cpu = 0.0

    def install(self) -> None:
        clock, meter = time.thread_time, self
        receive_frame = Session.receive_frame
        make_ack = acks.make_ack

        def timed_receive(
            self: Session, frame: bytes, now: float, path_id: int | None = None
        ) -> int | None:
            if self.role is not Role.EXIT or len(frame) < 2 or frame[1] != _ACK:
                return receive_frame(self, frame, now, path_id)
            start = clock()
            named = receive_frame(self, frame, now, path_id)
            meter.read_cpu += clock() - start
            meter.read += 1
            return named

        def timed_make(*args: object, **kwargs: object) -> bytes:
            start = clock()
            frame = make_ack(*args, **kwargs)  # type: ignore[arg-type]
            meter.made_cpu += clock() - start
            meter.made += 1
            return frame

        Session.receive_frame = timed_receive  # type: ignore[method-assign]
        session_module.make_ack = timed_make  # type: ignore[attr-defined]


def main() -> int:
    args = sim_under_load.cost_arguments(__doc__, loss=5.0)
    meter = Meter()
    meter.install()
    best: tuple[float, float, int, int] | None = None
    for _ in range(args.repeat):
        meter.reset()
        sim_under_load.run(args.seed, args.mb, 0.5, args.loss / 100)
        read_us = meter.read_cpu / max(meter.read, 1) * 1e6
        made_us = meter.made_cpu / max(meter.made, 1) * 1e6
        if best is None or read_us + made_us < best[0] + best[1]:
            best = (read_us, made_us, meter.read, meter.made)
    assert best is not None
    read_us, made_us, read, made = best
    print(
        f"{args.mb:g} MB at {args.loss:g} % loss: the exits read {read} ACKs, {read_us:.1f} us "
        f"each; both ends make {made}, {made_us:.1f} us each"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
