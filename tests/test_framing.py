"""Stream framing: frames cut back out of a byte stream however it is split into reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dupsession.aio import framing

frame_lists = st.lists(st.binary(min_size=framing.StreamDeframer.MIN_FRAME, max_size=3000))


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
