"""Length-prefixed frames on a byte stream (TCP paths, SSH channels): u16 length, then frame."""

from __future__ import annotations

import struct

from dupsession.core import wire

LENGTH = struct.Struct("!H")


class FramingError(ValueError):
    """The stream carried a length no valid frame can have: the connection must be dropped."""


#: Length prefixes made once: a bulk transfer's frames share a handful of sizes.
_PREFIXES = [LENGTH.pack(n) for n in range(2048)]


def pieces(frames: list[bytes]) -> list[bytes]:
    """Each frame after its length prefix, not joined: for `writelines`, which hands the
    whole batch to one `writev` without copying it (uvloop), where a join copies every byte."""
    parts: list[bytes] = []
    add, prefixes, prefix = parts.extend, _PREFIXES, LENGTH.pack
    for frame in frames:
        size = len(frame)
        add((prefixes[size] if size < 2048 else prefix(size), frame))
    return parts


def pack(frames: list[bytes]) -> bytes:
    """Prefix each frame with its length; one buffer, so a batch is one write."""
    return b"".join(pieces(frames))


class StreamDeframer:
    """Cuts a byte stream back into frames; holds at most one partial frame."""

    __slots__ = ("_buffer",)

    MIN_FRAME = wire.PREFIX.size + wire.TAG_SIZE

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The whole frames completed by `data`; each is cut from the bytes read with one copy."""
        if type(data) is not bytes:
            data = bytes(data)
        frames: list[bytes] = []
        append, minimum = frames.append, self.MIN_FRAME
        offset = 0
        buffer = self._buffer
        if buffer:  # complete the partial frame from the head of `data`, then go on in it
            if len(buffer) < 2:
                offset = 2 - len(buffer)
                buffer += data[:offset]
                if len(buffer) < 2:
                    return frames
            length = (buffer[0] << 8) | buffer[1]
            if length < minimum:
                raise FramingError(f"frame length {length} is too short")
            missing = 2 + length - len(buffer)
            buffer += data[offset : offset + missing]
            offset += missing
            if len(buffer) < 2 + length:
                return frames
            with memoryview(buffer) as view:
                append(bytes(view[2:]))
            buffer.clear()
        size = len(data)
        while size - offset >= 2:
            start = offset + 2
            length = (data[offset] << 8) | data[offset + 1]
            if length < minimum:
                raise FramingError(f"frame length {length} is too short")
            offset = start + length
            if offset > size:
                offset = start - 2
                break
            append(data[start:offset])
        if offset < size:
            buffer += memoryview(data)[offset:]
        return frames
