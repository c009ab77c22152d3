#!/usr/bin/env python3
"""Receive-side cost per DATA frame, no I/O: the exit's driver alone, fed a stream path's reads.

    python3 contrib/bench/receive.py                              # 20 MB, 220-frame reads
    python3 contrib/bench/receive.py --encrypt --compress auto    # `forward`'s features

A client session (the real `SessionDriver`, tests/support/virtualloop.py's clock, as in
contrib/bench/core.py) writes random bytes (none repeated) in 64 KiB writes on a datagram path;
its frames are recorded once, each with the virtual time it was sent at. Each run then hands
them to a fresh exit driver (a datagram and a stream path) as the stream path's reads of
`--batch` frames, two ways side by side: `SessionDriver.frames_received` (a read's in-order DATA
frames as one run: one delivery, decryption and ACK update per read, what relayd's stream paths
do) and `frame_received` once per frame (the per-frame path, what every read took before
05efa68). The two ways take turns, per-frame then batched, `--repeat` times, so both see the
same phases of a shared machine. CPU time (this thread only) covers the receive and the exit's
flush (delivery to its application, ACKs out, not fed back); each way's cheapest run is
reported in microseconds per DATA frame, with the ratio of the two, all from the one call.
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

from contrib.bench.core import CHUNK, TICK, add_feature_flags, features_from, pair  # noqa: E402
from dupsession.core.handshake import SessionKeys  # noqa: E402
from dupsession.core.negotiate import Features  # noqa: E402
from tests.support.session import handshake_keys  # noqa: E402
from tests.support.virtualloop import VirtualLoop  # noqa: E402

#: The client sends on one datagram path, so its frames are datagram-sized, as in any session
#: with a UDP path (`Session.max_payload`); the exit has that path and a stream path, and the
#: recorded frames reach it as the stream path's reads.
CLIENT_PATHS = (True,)
EXIT_PATHS = (True, False)
STREAM_PATH = 1
#: A recorded frame: the virtual time it was sent at and its bytes.
Recorded = tuple[float, bytes]
Agreed = tuple[bytes, SessionKeys]  #: session id and keys, shared by the recording and the runs


def record(total: int, features: Features, agreed: Agreed) -> list[Recorded]:
    """The client's frames for `total` bytes, taken by an exit that ACKs them at once."""
    loop = VirtualLoop(0.0)
    client, to_exit, exit_, to_client, counter = pair(loop, CLIENT_PATHS, features, agreed)
    data = os.urandom(total)  # incompressible, no repeats: `auto` finds nothing
    frames: list[Recorded] = []
    now, sent = 0.001, 0
    while counter.got < total:
        now += TICK
        loop.now = now
        if sent < total and client.writable() >= CHUNK:
            client.send(data[sent : sent + CHUNK])
            sent += CHUNK
        loop.run_soon()
        for _, batch in to_exit.batches:
            frames += ((now, frame) for frame in batch)
            exit_.frames_received(batch, 0)
        to_exit.batches.clear()
        loop.run_soon()
        for path_id, batch in to_client.batches:
            for frame in batch:
                client.frame_received(frame, path_id)
        to_client.batches.clear()
        loop.run_soon()
        loop.run_due()
    return frames


def feed(
    frames: list[Recorded], batch: int, features: Features, agreed: Agreed, batched: bool
) -> float:
    """CPU seconds a fresh exit driver takes for `frames`, read `batch` at a time."""
    loop = VirtualLoop(0.0)
    _, _, exit_, to_client, _ = pair(loop, EXIT_PATHS, features, agreed)

    def per_frame(read: list[bytes]) -> None:
        for frame in read:
            exit_.frame_received(frame, STREAM_PATH)

    take = (lambda read: exit_.frames_received(read, STREAM_PATH)) if batched else per_frame
    spent = 0.0
    clock = time.thread_time
    for start in range(0, len(frames), batch):
        reads = frames[start : start + batch]
        loop.now = reads[-1][0]
        t0 = clock()
        take([frame for _, frame in reads])
        loop.run_soon()  # the exit's flush
        spent += clock() - t0
        to_client.batches.clear()  # its ACKs: not fed back
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--batch", type=int, default=220, help="frames per read")
    parser.add_argument(
        "--repeat", type=int, default=7, help="rounds of both ways in turn; each way's cheapest"
    )
    add_feature_flags(parser)
    args = parser.parse_args()
    features = features_from(args)
    agreed = handshake_keys()
    frames = record(args.mb * 1_000_000, features, agreed)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):  # interleaved: both ways see the same phases of the machine
        for batched in (False, True):
            runs[batched].append(feed(frames, args.batch, features, agreed, batched))
    cost = {batched: min(spent) / len(frames) * 1e6 for batched, spent in runs.items()}
    size = sum(len(frame) for _, frame in frames) / len(frames)
    label = "encrypted" if args.encrypt else "plain"
    label += f", compress {args.compress}"
    print(
        f"{label}, {len(frames)} frames of {size:.0f} B on average in reads of {args.batch}: "
        f"per frame {cost[False]:.2f} us CPU per DATA frame, batched {cost[True]:.2f} us "
        f"({cost[False] / cost[True]:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
