"""Length-prefixed frames on a byte stream (TCP paths, SSH channels): u16 length, then frame."""

from __future__ import annotations

import struct

from dupsession.core import wire

LENGTH = struct.Struct("!H")


class FramingError(ValueError):
    """The stream carried a length no valid frame can have: the connection must be dropped."""


def pack(frames: list[bytes]) -> bytes:
    """Prefix each frame with its length; one buffer, so a batch is one write."""
    parts: list[bytes] = []
    for frame in frames:
        parts.append(LENGTH.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


class StreamDeframer:
    """Cuts a byte stream back into frames; holds at most one partial frame."""

    __slots__ = ("_buffer",)

    MIN_FRAME = wire.PREFIX.size + wire.TAG_SIZE

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            length = (buffer[offset] << 8) | buffer[offset + 1]
            if length < self.MIN_FRAME:
                raise FramingError(f"frame length {length} is too short")
            end = offset + 2 + length
            if end > size:
                break
            frames.append(bytes(buffer[offset + 2 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames
