"""Length-prefixed frames on a byte stream (TCP paths, SSH channels): u16 length, then frame."""

from __future__ import annotations

import struct
import threading

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


#: The most a stream connection reads at once into the shared buffer (libuv's own read buffer
#: is this size too, so a read's batch of frames is what it was with `data_received`).
READ_SIZE = 256 * 1024
#: The longest partial frame a read can leave behind: a length prefix names at most 65535.
_MAX_HELD = 2 + 0xFFFF


class _ReadArena:
    """One read buffer per thread (event loop), shared by its stream connections.

    A read and the cutting of its frames run back to back (`get_buffer`, the read, then
    `buffer_updated`), so between reads only the partial frame at the end of one must be
    kept: it stays at the buffer's front while the same connection reads next (a bulk
    transfer), and is copied out only when another connection reads in between.
    """

    __slots__ = ("buffer", "held", "owner", "view")

    def __init__(self) -> None:
        self.buffer = bytearray(_MAX_HELD + READ_SIZE)
        self.view = memoryview(self.buffer)
        self.owner: BufferedDeframer | None = None
        self.held = 0  #: the owner's partial frame, at the buffer's front


_arenas = threading.local()


class BufferedDeframer:
    """`StreamDeframer` for an `asyncio.BufferedProtocol`: the transport reads straight into
    the shared buffer, and each frame is copied once out of it, where `data_received` got a
    copy of the read (uvloop's) that was then cut up with a second copy.

    Frames are cut as immutable `bytes` (views into them outlive the read: see
    `wire.open_data`), never as views into the buffer that the next read overwrites.
    """

    __slots__ = ("_arena", "_saved")

    MIN_FRAME = StreamDeframer.MIN_FRAME

    def __init__(self) -> None:
        arena: _ReadArena | None = getattr(_arenas, "arena", None)
        if arena is None:
            arena = _arenas.arena = _ReadArena()
        self._arena = arena
        self._saved = b""  #: our partial frame while another connection has the buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        arena = self._arena
        if arena.owner is not self:
            owner, view = arena.owner, arena.view
            if owner is not None and arena.held:
                owner._saved = bytes(view[: arena.held])
            saved = self._saved
            held = len(saved)
            if held:
                view[:held] = saved
                self._saved = b""
            arena.owner, arena.held = self, held
        return arena.view[arena.held : arena.held + READ_SIZE]

    def buffer_updated(self, nbytes: int) -> list[bytes]:
        """The whole frames completed by the `nbytes` just read into `get_buffer`'s view."""
        arena = self._arena
        buffer, view = arena.buffer, arena.view
        end = arena.held + nbytes
        frames: list[bytes] = []
        append, minimum = frames.append, self.MIN_FRAME
        offset = 0
        while end - offset >= 2:
            length = (buffer[offset] << 8) | buffer[offset + 1]
            if length < minimum:
                arena.owner, arena.held = None, 0
                raise FramingError(f"frame length {length} is too short")
            stop = offset + 2 + length
            if stop > end:
                break
            append(bytes(view[offset + 2 : stop]))
            offset = stop
        held = end - offset
        if held and offset:
            view[:held] = view[offset:end]  # memoryview assignment copies with memmove
        arena.held = held
        return frames

    def pending(self) -> bytes:
        """The partial frame held after the last read (bytes of a frame not yet complete):
        what a connection passed to another process must take along."""
        arena = self._arena
        if arena.owner is self:
            return bytes(arena.view[: arena.held])
        return self._saved

    def release(self) -> None:
        """The connection is gone: its partial frame (if in the buffer) is not kept."""
        arena = self._arena
        if arena.owner is self:
            arena.owner, arena.held = None, 0
        self._saved = b""
