"""vncdotool in its own process (its Twisted reactor runs once per process).

python3 -m tests.support.vncgrab grab PORT OUT.png [--settle S]
    full framebuffer of 127.0.0.1:PORT -> OUT.png and OUT.rgb (raw RGB)
python3 -m tests.support.vncgrab interact PORT ROUNDS
    ROUNDS pointer moves; for each, seconds until a framebuffer update shows the change;
    one JSON list on stdout (contrib/bench/vnc.py uses it)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vncdotool import api

CONNECT_TIMEOUT = 30.0
#: Give up waiting for a change after this long (s): the round counts as this.
CHANGE_TIMEOUT = 10.0


def _grab(port: int, out: Path, settle: float) -> None:
    client = api.connect(f"127.0.0.1::{port}", password=None, timeout=CONNECT_TIMEOUT)
    try:
        if settle:
            time.sleep(settle)
        client.refreshScreen(incremental=False)
        image = client.screen.convert("RGB")
        image.save(out)
        out.with_suffix(".rgb").write_bytes(image.tobytes())
    finally:
        client.disconnect()


def _interact(host: str, port: int, rounds: int) -> list[float]:
    client = api.connect(f"{host}::{port}", password=None, timeout=CONNECT_TIMEOUT)
    times = []
    try:
        client.refreshScreen(incremental=False)
        for i in range(rounds):
            before = client.screen.tobytes()
            x, y = 40 + (i % 2) * 200, 40 + (i % 3) * 100  # always somewhere else
            start = time.perf_counter()
            client.mouseMove(x, y)
            while True:
                client.refreshScreen(incremental=True)
                if client.screen.tobytes() != before:
                    break
                if time.perf_counter() - start > CHANGE_TIMEOUT:
                    break
            times.append(time.perf_counter() - start)
    finally:
        client.disconnect()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    grab = sub.add_parser("grab")
    grab.add_argument("port", type=int)
    grab.add_argument("out", type=Path)
    grab.add_argument("--settle", type=float, default=0.0)
    interact = sub.add_parser("interact")
    interact.add_argument("port", type=int)
    interact.add_argument("rounds", type=int)
    interact.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    try:
        if args.what == "grab":
            _grab(args.port, args.out, args.settle)
        else:
            print(json.dumps(_interact(args.host, args.port, args.rounds)))
    finally:
        api.shutdown()


if __name__ == "__main__":
    main()
