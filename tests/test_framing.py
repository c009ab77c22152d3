"""Stream framing: frames cut back out of a byte stream however it is split into reads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.aio import framing

frame_lists = st.lists(st.binary(min_size=framing.StreamDeframer.MIN_FRAME, max_size=3000))


# No per-example deadline: the bodies take 0-11 ms, but one stall of the shared VM
# (100+ ms seen beside other work) would fail the run as Flaky (review L16).
@settings(deadline=None)
@given(frame_lists, st.lists(st.integers(1, 4000), min_size=1), st.booleans())
def test_frames_come_back_whole_and_in_order(
    frames: list[bytes], cuts: list[int], bytearrays: bool
) -> None:
    stream = framing.pack(frames)
    deframer, out, start, i = framing.StreamDeframer(), [], 0, 0
    while start < len(stream):
        piece = stream[start : start + cuts[i % len(cuts)]]
        out += deframer.feed(bytearray(piece) if bytearrays else piece)
        start += len(piece)
        i += 1
    assert out == frames
    assert all(type(frame) is bytes for frame in out)


def test_a_large_frame_uses_a_computed_prefix() -> None:
    frame = bytes(range(256)) * 200  # above the table of ready-made prefixes
    assert framing.pack([frame])[:2] == len(frame).to_bytes(2, "big")
    assert framing.StreamDeframer().feed(framing.pack([frame, b"x" * 40])) == [frame, b"x" * 40]


def test_a_length_no_frame_can_have_is_an_error() -> None:
    with pytest.raises(framing.FramingError):
        framing.StreamDeframer().feed(b"\x00\x05abcde")


def _read_into(deframer: framing.BufferedDeframer, piece: bytes) -> list[bytes]:
    """What a BufferedProtocol transport does: read at most the buffer it is given."""
    out: list[bytes] = []
    while piece:
        buffer = deframer.get_buffer(-1)
        n = min(len(buffer), len(piece))
        buffer[:n] = piece[:n]
        piece = piece[n:]
        out += deframer.buffer_updated(n)
    return out


@settings(deadline=None)
@given(
    st.lists(frame_lists, min_size=1, max_size=3),
    st.lists(st.integers(1, 70000), min_size=1),
    st.lists(st.integers(0, 2), min_size=1),
)
def test_buffered_connections_sharing_the_read_buffer_each_get_their_frames(
    streams: list[list[bytes]], cuts: list[int], turns: list[int]
) -> None:
    """Several connections read in turns into the one shared buffer (a partial frame of one
    is kept while another reads): each gets its own frames back whole and in order, as bytes."""
    data = [framing.pack(frames) for frames in streams]
    deframers = [framing.BufferedDeframer() for _ in streams]
    outs: list[list[bytes]] = [[] for _ in streams]
    starts = [0] * len(streams)
    i = 0
    while any(start < len(stream) for start, stream in zip(starts, data, strict=True)):
        who = turns[i % len(turns)] % len(streams)
        if starts[who] >= len(data[who]):
            who = next(k for k in range(len(streams)) if starts[k] < len(data[k]))
        piece = data[who][starts[who] : starts[who] + cuts[i % len(cuts)]]
        outs[who] += _read_into(deframers[who], piece)
        starts[who] += len(piece)
        i += 1
    for deframer in deframers:
        deframer.release()
    assert outs == streams
    assert all(type(frame) is bytes for out in outs for frame in out)


def test_buffered_frames_outlive_the_next_read() -> None:
    """A frame is a copy: the next read into the shared buffer does not change it."""
    deframer = framing.BufferedDeframer()
    stream = framing.pack([b"a" * 100, b"b" * 50])
    first = _read_into(deframer, stream[:140])
    second = _read_into(deframer, stream[140:] + stream * 2)
    deframer.release()
    assert first == [b"a" * 100]
    assert second == [b"b" * 50, b"a" * 100, b"b" * 50, b"a" * 100, b"b" * 50]


def test_buffered_a_length_no_frame_can_have_is_an_error() -> None:
    deframer = framing.BufferedDeframer()
    with pytest.raises(framing.FramingError):
        _read_into(deframer, b"\x00\x05abcde")
    assert _read_into(framing.BufferedDeframer(), framing.pack([b"c" * 40])) == [b"c" * 40]
