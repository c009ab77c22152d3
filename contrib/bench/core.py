#!/usr/bin/env python3
"""Protocol-core cost per frame, no I/O: a client and an exit session, each in the real driver.

    python3 contrib/bench/core.py            # 2 datagram + 1 stream path, 20 MB, best of 5
    python3 contrib/bench/core.py --paths d  # one datagram path; `s`: one stream path
    python3 contrib/bench/core.py --encrypt --compress auto   # `forward`'s features
    python3 contrib/bench/core.py --loss 5   # 5 % of the datagram paths' frames lost

Bytes go client -> exit in 64 KiB writes. Each side is the real glue, `SessionDriver`
(dupsession/aio/driver.py), on a virtual clock (tests/support/virtualloop.py): every frame of
every path the client's flush sends is handed to the exit 0.1 ms later, the ACKs its flush sends
back to the client at once, each path's frames as one read (`frames_received`, the batch receive
path the glue takes), and the drivers' timers fire when due. CPU time (this thread only,
so other processes on a busy machine disturb it little) is split by phase and reported in
microseconds per DATA frame, all copies of it included. This isolates what the sans-IO core and
the driver's loop cost from the event loop and the kernel (see docs/BENCHMARKS.md). With
`--loss`, that share of the frames on datagram paths, both ways, is dropped (seeded, so every run
and every tree of the same behaviour loses the same frames): the client then takes ACKs with
selective ranges and resends, as relayd does in a download at 5 % loss.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's tests/support
    sys.path.insert(0, str(ROOT))

from dupsession.aio.driver import SessionDriver  # noqa: E402
from dupsession.core import events  # noqa: E402
from dupsession.core.handshake import SessionKeys  # noqa: E402
from dupsession.core.negotiate import Compress, Features  # noqa: E402
from dupsession.core.session import Role, Session  # noqa: E402
from tests.support.session import handshake_keys  # noqa: E402
from tests.support.virtualloop import VirtualLoop  # noqa: E402

CHUNK = 64 * 1024
KINDS = {"dds": (True, True, False), "d": (True,), "s": (False,)}
TICK = 0.0002  #: virtual time between the client's writes (s)
HOP = 0.0001  #: when in a tick the exit gets the client's frames (s)
#: What each phase times: the application's write, the client's flush (its transmit), the
#: exit taking each frame, the exit's flush (delivery to its application and its ACKs), the
#: client taking the ACKs with the flush they prompt, and the timers that came due.
PHASES = ("send", "transmit", "receive", "deliver", "acks", "timers")


class Outbox:
    """One side's paths' sinks: frames wait here until the bench hands them to the peer."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[bytes]]] = []

    def sink(self, path_id: int) -> PathSink:
        return PathSink(self, path_id)


class PathSink:
    def __init__(self, outbox: Outbox, path_id: int) -> None:
        self.outbox, self.path_id = outbox, path_id

    def send_frames(self, frames: list[bytes]) -> None:
        self.outbox.batches.append((self.path_id, frames))


class Counter:
    """The exit's application: counts the bytes delivered."""

    def __init__(self) -> None:
        self.got = 0

    def on_data(self, data: bytes) -> None:
        self.got += len(data)

    def on_eof(self) -> None:
        pass

    def on_closed(self, event: events.SessionClosed) -> None:
        pass

    def on_writable(self) -> None:
        pass


def pair(
    loop: VirtualLoop,
    datagram: tuple[bool, ...],
    features: Features,
    agreed: tuple[bytes, SessionKeys] | None = None,
) -> tuple[SessionDriver, Outbox, SessionDriver, Outbox, Counter]:
    """A client and an exit driver on `loop`, keyed by `agreed` (session id, keys) or anew."""
    session_id, keys = agreed or handshake_keys()
    counter = Counter()
    client_session = Session(Role.CLIENT, session_id, keys, 0.0, None, features)
    exit_session = Session(Role.EXIT, session_id, keys, 0.0, None, features)
    client = SessionDriver(client_session, Counter(), loop.time, loop)
    exit_ = SessionDriver(exit_session, counter, loop.time, loop)
    to_exit, to_client = Outbox(), Outbox()
    for path_id, kind in enumerate(datagram):
        client.attach(path_id, to_exit.sink(path_id), kind)
        exit_.attach(path_id, to_client.sink(path_id), kind)
    return client, to_exit, exit_, to_client, counter


class Loss:
    """Drops `rate` of the frames on datagram paths, from a seeded generator."""

    def __init__(self, rate: float, datagram: tuple[bool, ...], seed: int = 1) -> None:
        self.rate, self.datagram, self.random = rate, datagram, random.Random(seed)

    def keep(self, path_id: int, frames: list[bytes]) -> list[bytes]:
        if not self.rate or not self.datagram[path_id]:
            return frames
        draw, rate = self.random.random, self.rate
        return [frame for frame in frames if draw() >= rate]


def hand_over(outbox: Outbox, driver: SessionDriver, loss: Loss | None = None) -> None:
    """Each path's frames of one flush as one read, the way the glue feeds a path's socket
    (`SessionDriver.frames_received`: the session's batch receive path)."""
    for path_id, frames in outbox.batches:
        kept = frames if loss is None else loss.keep(path_id, frames)
        if kept:
            driver.frames_received(kept, path_id)
    outbox.batches.clear()


def run(
    datagram: tuple[bool, ...], total: int, features: Features, loss: float = 0.0
) -> tuple[float, dict[str, float], float]:
    loop = VirtualLoop(0.0)
    client, to_exit, exit_, to_client, counter = pair(loop, datagram, features)
    lose = Loss(loss, datagram) if loss else None
    data = os.urandom(CHUNK)
    phases = dict.fromkeys(PHASES, 0.0)
    clock = time.thread_time
    now, sent = 0.001, 0
    while counter.got < total:
        now += TICK
        loop.now = now
        t0 = clock()
        if sent < total and client.writable() >= CHUNK:
            client.send(data)
            sent += CHUNK
        t1 = clock()
        loop.run_soon()  # the client's flush
        t2 = clock()
        loop.now = now + HOP
        hand_over(to_exit, exit_, lose)
        t3 = clock()
        loop.run_soon()  # the exit's flush
        t4 = clock()
        hand_over(to_client, client, lose)
        loop.run_soon()
        t5 = clock()
        loop.run_due()
        t6 = clock()
        spans = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        for name, spent in zip(phases, spans, strict=True):
            phases[name] += spent
    frames = client.session.sender.next_seq
    per_frame = {name: spent / frames * 1e6 for name, spent in phases.items()}
    return sum(per_frame.values()), per_frame, sum(phases.values()) / (total / 1e6) * 1e3


def add_feature_flags(parser: argparse.ArgumentParser) -> None:
    """--encrypt and --compress: the features both sessions run with (as if agreed)."""
    parser.add_argument("--encrypt", action="store_true", help="payload encryption on")
    parser.add_argument(
        "--compress", choices=[str(mode) for mode in Compress], default=str(Compress.OFF)
    )
    parser.add_argument(
        "--jumbo", action="store_true", help="JUMBO agreed: 64 KiB frames on stream-only paths"
    )


def features_from(args: argparse.Namespace) -> Features:
    return Features(encrypt=args.encrypt, compress=Compress(args.compress), jumbo=args.jumbo)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", choices=sorted(KINDS), default="dds")
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the cheapest is reported")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram paths' loss, percent")
    add_feature_flags(parser)
    args = parser.parse_args()
    features = features_from(args)
    total_bytes, loss = args.mb * 1_000_000, args.loss / 100
    results = [run(KINDS[args.paths], total_bytes, features, loss) for _ in range(args.repeat)]
    total, phases, per_mb = min(results, key=lambda result: result[0])
    detail = "  ".join(f"{name} {cost:.2f}" for name, cost in phases.items())
    label = f"paths {args.paths}" + (", encrypted" if args.encrypt else "")
    label += f", compress {args.compress}" if features.compress is not Compress.OFF else ""
    label += ", jumbo" if features.jumbo else ""
    label += f", {args.loss:g} % loss" if args.loss else ""
    print(f"{label}: {total:.2f} us CPU per DATA frame, {per_mb:.2f} ms per MB ({detail})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
