#!/usr/bin/env python3
"""Codec benchmark: compression ratio and CPU per MB, and encryption's CPU per MB, in one run.

    python3 contrib/bench/codec.py            # 16 MB per sample
    python3 contrib/bench/codec.py --mb 4     # quicker

Compression (core/compress.py, the code sessions run) on three kinds of stream, written in
4 KiB and 64 KiB writes (every write is flushed, as in a session):
- text: this repository's Python sources and docs, concatenated and repeated;
- raw framebuffer: desktop-like 640x400 32-bit pictures (tests/support/vnc.py), a new one every
  1 MB, as a VNC server sends with the raw encoding;
- ssh stream: random bytes (an ssh stream is encrypted: it looks exactly like this).
For each: the ratio (bytes on the wire / bytes in), and CPU ms per MB of input for the sender
(`on` and `auto`) and for the receiver.

Encryption (core/seal.py): ChaCha20 over the stream in pieces of 1196 bytes (a datagram path's
frame, as a receiver decrypts what one frame delivers), 16 KiB (a stream-only session's frame)
and 64 KiB (a write), CPU ms per MB, beside the BLAKE3 tag every frame already pays.

CPU times come from `time.process_time` of this process; the machine is shared, so expect
some noise (rerun and compare).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dupsession.core import wire  # noqa: E402
from dupsession.core.compress import StreamCompressor, StreamDecompressor  # noqa: E402
from dupsession.core.negotiate import Compress  # noqa: E402
from dupsession.core.seal import CLIENT_TO_EXIT, StreamCipher  # noqa: E402
from tests.support.vnc import desktop_picture  # noqa: E402

MB = 1_000_000


def text_sample(size: int) -> bytes:
    files = sorted(ROOT.glob("**/*.py")) + sorted(ROOT.glob("docs/*.md"))
    text = b"".join(f.read_bytes() for f in files if ".git" not in f.parts)
    return (text * (size // len(text) + 1))[:size]


def framebuffer_sample(size: int) -> bytes:
    frames: list[bytes] = []
    seed = 0
    while sum(map(len, frames)) < size:
        frames.append(desktop_picture(640, 400, seed))
        seed += 1
    return b"".join(frames)[:size]


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def compression_row(name: str, data: bytes, write: int) -> str:
    cells = []
    for mode in (Compress.ON, Compress.AUTO):
        encoder = StreamCompressor(mode)
        records: list[bytes] = []

        def encode(encoder: StreamCompressor = encoder, records: list[bytes] = records) -> None:
            records.extend(encoder.encode(data[i : i + write]) for i in range(0, len(data), write))

        seconds = cpu(encode)
        ratio = sum(map(len, records)) / len(data)
        cells.append(f"{ratio:6.3f} {seconds * 1e3 / (len(data) / MB):8.2f}")
        if mode is Compress.ON:
            decoder = StreamDecompressor()

            def decode(
                records: list[bytes] = records, decoder: StreamDecompressor = decoder
            ) -> None:
                for record in records:
                    decoder.feed(record)
                    while decoder.next_chunk() is not None:
                        pass

            receive = cpu(decode) * 1e3 / (len(data) / MB)
    return f"{name:<16} {write // 1024:>5} KiB  " + "  ".join(cells) + f"  {receive:9.2f}"


def encryption_rows(size: int) -> list[str]:
    """ChaCha20 over the stream (`StreamCipher.update` per piece, as a session calls it: per
    write when sending, per delivered frame or batch when receiving), beside the BLAKE3 tag
    every frame pays, for pieces of a datagram frame's payload, a stream frame's, and a write."""
    key, sid = os.urandom(32), os.urandom(8)
    rows = []
    for piece_size in (wire.MAX_DATAGRAM_PAYLOAD, wire.MAX_STREAM_PAYLOAD, 64 * 1024):
        piece = os.urandom(piece_size)
        count = max(1, size // piece_size)

        def tag_only(count: int = count, piece: bytes = piece) -> None:
            for seq in range(count):
                wire.encode_data(key, sid, seq, piece, False)

        def cipher(count: int = count, piece: bytes = piece) -> None:
            update = StreamCipher(key, CLIENT_TO_EXIT).update
            for _ in range(count):
                update(piece)

        per_mb = (count * piece_size) / MB
        tag, enc = (cpu(f) * 1e3 / per_mb for f in (tag_only, cipher))
        rows.append(
            f"{piece_size:>6} B pieces   tag (a frame of it) {tag:6.2f}   ChaCha20 {enc:6.2f}"
            f"   ({1e3 / max(enc, 1e-9):.0f} MB/s per core, either direction)"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=16, help="megabytes per sample (default 16)")
    args = parser.parse_args()
    size = args.mb * MB
    print(
        f"dupsession codec benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.mb} MB per sample; load average {os.getloadavg()[0]:.2f} (shared machine)"
    )
    samples = {
        "text": text_sample(size),
        "raw framebuffer": framebuffer_sample(size),
        "ssh stream": os.urandom(size),
    }
    print("\ncompression: ratio (wire/in) and sender CPU ms per MB of input, per mode;")
    print("receiver CPU ms per MB of input (mode on)")
    print(f"{'stream':<16} {'write':>9}  {'on ratio':>6} {'ms/MB':>8}  "
          f"{'auto ratio':>6} {'ms/MB':>8}  {'recv ms/MB':>9}")  # fmt: skip
    for name, data in samples.items():
        for write in (4096, 65536):
            print(compression_row(name, data, write), flush=True)
    print("\nencryption: CPU ms per MB of payload (ChaCha20 via cryptography, BLAKE3 tag)")
    for row in encryption_rows(size):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
