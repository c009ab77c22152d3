#!/usr/bin/env python3
"""Protocol-core cost per frame, no I/O: a client and an exit `Session` joined by hand.

    python3 contrib/bench/core.py            # 2 datagram + 1 stream path, 20 MB, best of 5
    python3 contrib/bench/core.py --paths d  # one datagram path; `s`: one stream path

Bytes go client -> exit in 64 KiB writes; every frame of every path is handed to the exit,
the exit's ACKs back to the client, timers are run. CPU time (this thread only, so other
processes on a busy machine disturb it little) is split by phase and reported in
microseconds per DATA frame, all copies of it included. This isolates what the sans-IO core
costs from the event loop and the kernel (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's tests/support
    sys.path.insert(0, str(ROOT))

from dupsession.core import events  # noqa: E402
from dupsession.core.session import Role, Session  # noqa: E402
from tests.support.session import handshake_keys  # noqa: E402

CHUNK = 64 * 1024
KINDS = {"dds": (True, True, False), "d": (True,), "s": (False,)}


def pair(datagram: tuple[bool, ...]) -> tuple[Session, Session]:
    session_id, keys = handshake_keys()
    client = Session(Role.CLIENT, session_id, keys, 0.0)
    exit_ = Session(Role.EXIT, session_id, keys, 0.0)
    for path_id, kind in enumerate(datagram):
        client.add_path(path_id, kind, 0.0)
        exit_.add_path(path_id, kind, 0.0)
    return client, exit_


def run(datagram: tuple[bool, ...], total: int) -> tuple[float, dict[str, float]]:
    client, exit_ = pair(datagram)
    data = os.urandom(CHUNK)
    phases = dict.fromkeys(("send", "transmit", "receive", "events", "acks", "timers"), 0.0)
    clock = time.thread_time
    now, sent, got = 0.001, 0, 0
    while got < total:
        now += 0.0002
        t0 = clock()
        if sent < total and client.writable() >= CHUNK:
            client.send(data)
            sent += CHUNK
        t1 = clock()
        out = client.transmit(now)
        t2 = clock()
        for path_id, frames in out.items():
            for frame in frames:
                exit_.receive_frame(frame, now, path_id)
        t3 = clock()
        while (event := exit_.next_event()) is not None:
            if type(event) is events.StreamData:
                got += len(event.data)
        t4 = clock()
        for path_id, frames in exit_.transmit(now + 0.0001).items():
            for frame in frames:
                client.receive_frame(frame, now + 0.0001, path_id)
        t5 = clock()
        client.handle_timer(now)
        client.get_timer()
        exit_.get_timer()
        t6 = clock()
        spans = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        for name, spent in zip(phases, spans, strict=True):
            phases[name] += spent
    frames = client.sender.next_seq
    per_frame = {name: spent / frames * 1e6 for name, spent in phases.items()}
    return sum(per_frame.values()), per_frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", choices=sorted(KINDS), default="dds")
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the cheapest is reported")
    args = parser.parse_args()
    results = [run(KINDS[args.paths], args.mb * 1_000_000) for _ in range(args.repeat)]
    total, phases = min(results, key=lambda result: result[0])
    detail = "  ".join(f"{name} {cost:.2f}" for name, cost in phases.items())
    print(f"paths {args.paths}: {total:.2f} us CPU per DATA frame ({detail})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
