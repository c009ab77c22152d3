"""DATA tags are exactly keyed BLAKE3 (16 bytes) of the frame's header and payload, whatever
the sealer and opener reuse between frames (a keyed hasher copied, or reset, per frame).

Round trips cannot show a hasher that lost its key or kept a previous frame's input: both
ends would compute the same wrong tag. These compare every tag with a fresh keyed hash, and
check that frames tagged without the key, or with another, are refused on every receive path.
"""

from __future__ import annotations

import blake3
import pytest

from dupsession.core import wire
from dupsession.core.events import StreamData
from tests.support.session import Pair, data_frames, drain

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SID = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def keyed(key: bytes, body: bytes) -> bytes:
    return blake3.blake3(body, key=key).digest(wire.TAG_SIZE)


def test_a_reused_sealer_tags_every_frame_with_a_fresh_keyed_hash() -> None:
    seal = wire.data_sealer(KEY, SID)
    payloads = [b"", b"x", bytes(range(256)) * 4, memoryview(b"@" * 1200)[1:], b"y" * 1100]
    for seq, payload in enumerate(payloads * 3):
        fin = seq % 4 == 3
        frame = seal(seq, payload, fin)
        flags = int(wire.DataFlags.FIN) if fin else 0
        body = wire.DATA_HEADER.pack(wire.VERSION, wire.FrameType.DATA, flags, 0, SID, seq)
        body += bytes(payload)
        assert frame == body + keyed(KEY, body)


def test_a_reused_opener_refuses_tags_made_without_its_key_and_accepts_after() -> None:
    seal, open_data = wire.data_sealer(KEY, SID), wire.data_opener(KEY)
    for seq in range(6):
        frame = seal(seq, b"p" * (seq * 300), False)
        body = frame[: -wire.TAG_SIZE]
        for tag in (blake3.blake3(body).digest(wire.TAG_SIZE), keyed(OTHER_KEY, body)):
            with pytest.raises(wire.FrameError):
                open_data(body + tag)
        fin, payload = open_data(frame)  # a refused frame leaves nothing behind
        assert not fin and bytes(payload) == b"p" * (seq * 300)


def test_the_session_tags_and_verifies_with_keyed_blake3_alone() -> None:
    """Sent tags are keyed BLAKE3 with the direction's key; a run fed as one batch
    (`receive_frames`) and single frames (`receive_frame`) refuse a frame whose tag was made
    without it, and take the genuine frames around it."""
    pair = Pair(paths=1)
    now = pair.connect()
    data = bytes(range(256)) * 16  # 4 frames: the initial window
    pair.client.send(data)
    frames = data_frames(pair.client.transmit(now))
    assert len(frames) >= 4
    key = pair.key_of(pair.client)
    for frame in frames:
        assert frame[-wire.TAG_SIZE :] == keyed(key, frame[: -wire.TAG_SIZE])
    forged = [f[: -wire.TAG_SIZE] + blake3.blake3(f[: -wire.TAG_SIZE]).digest(16) for f in frames]
    exit_ = pair.exit
    bad = exit_.bad_frames
    exit_.receive_frames([frames[0], forged[1], forged[2]], now + 0.01, 0)
    exit_.receive_frame(forged[3], now + 0.01, 0)
    assert exit_.bad_frames >= bad + 3
    got = b"".join(e.data for e in drain(exit_) if isinstance(e, StreamData))
    assert got == data[: len(got)] and 0 < len(got) < len(data)
    exit_.receive_frames(frames[1:], now + 0.02, 0)
    got += b"".join(e.data for e in drain(exit_) if isinstance(e, StreamData))
    assert got == data
