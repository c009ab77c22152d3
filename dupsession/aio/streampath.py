"""What every stream path shares: length-prefixed frames, the reconnect loop, flow control.

A stream path (TCP, or a `direct-tcpip` channel through an SSH server) is one byte stream at a
time, replaced by a new one whenever it breaks, for as long as the path lives. `StreamPath`
owns that life cycle; a subclass only says how to connect (`_connect`) and what else to drop
with a connection (`_released`). `StreamLink` is one connection's receiving end: it cuts the
stream into frames and tells the path when it is lost or full.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from dupsession.aio import framing
from dupsession.aio.owner import PathOwner
from dupsession.pathspec import PathSpec

log = logging.getLogger(__name__)

_In = TypeVar("_In")

#: Reconnect backoff bounds (s): doubled after every failed attempt.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0


class ByteChannel(Protocol):
    """The writing side of one connection: an asyncio transport or an SSH channel."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, data: list[bytes]) -> None: ...
    def close(self) -> None: ...


class StreamLink:
    """One connection of a stream path: deframes what arrives, reports loss and pressure."""

    #: The reason given when the far end closed the connection cleanly.
    closed_reason = "connection closed by peer"

    def __init__(self, path: StreamPath) -> None:
        self.path = path
        self.deframer = framing.StreamDeframer()
        self.transport: ByteChannel | None = None

    def feed(self, data: bytes) -> None:
        self.cut(self.deframer.feed, data)

    def cut(self, deframe: Callable[[_In], list[bytes]], read: _In) -> None:
        """Hand the frames `deframe` cuts from `read` to the owner; drop a broken stream."""
        try:
            frames = deframe(read)
        except framing.FramingError as exc:
            log.warning("%s path %d: %s; reconnecting", self.path.kind, self.path.path_id, exc)
            self.drop()
            return
        if frames:
            self.path.owner.path_frames(self.path.path_id, frames)

    def drop(self) -> None:
        """End this connection at once (the path reconnects)."""
        transport = self.transport
        if transport is not None:
            getattr(transport, "abort", transport.close)()

    def pause_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, False)

    def resume_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.path.lost(self, self.closed_reason if exc is None else str(exc))


class StreamPath(abc.ABC):
    """A path over one byte stream at a time, reconnected with backoff while the path lives."""

    datagram = False
    kind = "stream"  #: for log lines

    def __init__(self, path_id: int, spec: PathSpec, owner: PathOwner) -> None:
        self.path_id = path_id
        self.spec = spec
        self.owner = owner
        self._link: StreamLink | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._reconnect: asyncio.Task[None] | None = None
        self._backoff = RECONNECT_MIN

    @abc.abstractmethod
    async def _connect(self) -> StreamLink:
        """Make a new connection and return its link, connected; raise OSError if not."""

    def _released(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """The current connection is gone: drop whatever else belongs to it."""

    async def open(self) -> None:
        link = await self._connect()
        if self._closed:
            if link.transport is not None:
                link.transport.close()
            self._released()
            return
        self._link = link
        self._backoff = RECONNECT_MIN
        self.owner.path_open(self.path_id, self)

    def is_open(self) -> bool:
        return self._link is not None

    def retry_later(self) -> None:
        if not self._closed and self._reconnect is None:
            self._reconnect = self._loop.create_task(self._reconnect_loop())

    def send_frames(self, frames: list[bytes]) -> None:
        link = self._link
        if link is not None and link.transport is not None:
            link.transport.writelines(framing.pieces(frames))

    def reconnect(self) -> None:
        """Drop the connection and make a new one: after the path went silent, the old one
        may sit on a vanished address or deep in TCP's retransmission backoff."""
        if self._link is not None:
            self._link.drop()

    def lost(self, link: StreamLink, reason: str) -> None:
        if link is not self._link:
            return
        self._released()
        self._link = None
        self.owner.path_lost(self.path_id, reason)
        self.retry_later()

    async def _reconnect_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)
            try:
                await self.open()
            except (OSError, TimeoutError) as exc:
                log.debug("%s path %d reconnect failed: %s", self.kind, self.path_id, exc)
            else:
                self._reconnect = None
                return

    def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
        self._link = None
        self._released()
