"""Client-side path transports: one UDP socket or one TCP connection per path.

A transport only moves whole frames and reports what happened to its owner; it never
interprets a frame. Stream paths (TCP here, SSH in `sshpath`) reconnect with exponential
backoff for as long as they live (`streampath.StreamPath`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from dupsession.aio import framing
from dupsession.aio.bind import make_socket
from dupsession.aio.owner import PathOwner
from dupsession.aio.sockets import (
    CONNECT_TIMEOUT,
    READ_BATCH,
    WRITE_HIGH_WATER,
    resolve,
    tune_buffers,
)
from dupsession.aio.streampath import RECONNECT_MAX, StreamLink, StreamPath
from dupsession.aio.udp import BatchSocket
from dupsession.failures import reason as failure_reason
from dupsession.pathspec import PathSpec

log = logging.getLogger(__name__)

#: A UDP path that could not open retries this often (s).
RETRY_INTERVAL = RECONNECT_MAX
#: A UDP path whose sends fail (its uplink's address changed) gets a new socket this soon (s).
REOPEN_DELAY = 0.2


class UdpPath:
    """One connected UDP socket; reads are drained in batches from the loop's reader callback."""

    datagram = True

    def __init__(self, path_id: int, spec: PathSpec, owner: PathOwner) -> None:
        self.path_id = path_id
        self.spec = spec
        self.owner = owner
        self._sock: socket.socket | None = None
        self._io: BatchSocket | None = None
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        family, addr = await resolve(self.spec.host, self.spec.port, socket.SOCK_DGRAM)
        sock = make_socket(family, socket.SOCK_DGRAM, self.spec.uplink)
        tune_buffers(sock)
        sock.connect(addr)
        self._sock = sock
        self._io = BatchSocket(sock)
        self._loop.add_reader(sock.fileno(), self._readable)
        self.owner.path_open(self.path_id, self)

    def is_open(self) -> bool:
        return self._sock is not None

    def retry_later(self) -> None:
        """A UDP path that could not open (no route, uplink absent) retries on a timer."""
        if self._retry is None:
            self._retry = self._loop.call_later(RETRY_INTERVAL, self._retry_open)

    def _retry_open(self) -> None:
        self._retry = None
        self._task = self._loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            await self.open()
        except OSError as exc:
            log.debug("udp path %d reopen failed: %s", self.path_id, exc)
            self.retry_later()

    def _readable(self) -> None:
        """Drain up to READ_BATCH datagrams and hand them to the owner as one batch (one
        `frames_received`: one clock read and one run through the session), not one call
        per datagram: without GRO (the netlab's veths, most NICs' UDP) every read is one
        datagram, and a download's client made 5,800 calls a second of one frame each."""
        io = self._io
        if io is None:
            return
        owner, path_id = self.owner, self.path_id
        batch: list[bytes] = []
        try:
            io.read_connected(batch, READ_BATCH)
        except OSError as exc:  # ICMP unreachable and friends: the path is just silent
            if batch:
                owner.path_frames(path_id, batch)
            owner.path_error(path_id, failure_reason(exc))
            # uvloop stops polling a socket after an error event: watch it afresh.
            fd = io.sock.fileno()
            self._loop.remove_reader(fd)
            self._loop.add_reader(fd, self._readable)
            return
        if batch:
            owner.path_frames(path_id, batch)

    def send_frames(self, frames: list[bytes]) -> None:
        # A full socket buffer is loss; the core resends what matters.
        if self._io is None:
            return
        try:
            self._io.send_frames(frames)
        except OSError as exc:
            # The uplink's address changed or vanished (ENETUNREACH, EADDRNOTAVAIL, EINVAL):
            # a connected socket keeps its old source address forever, so make a new one.
            log.info("udp path %d: %s; reopening the socket", self.path_id, exc)
            self._drop_socket()
            if self._retry is None and (self._task is None or self._task.done()):
                self._retry = self._loop.call_later(REOPEN_DELAY, self._retry_open)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self._io = None

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self._io = None


class _TcpProtocol(StreamLink, asyncio.BufferedProtocol):
    """The transport reads into a shared buffer and frames are cut from it with one copy
    (`framing.BufferedDeframer`)."""

    def __init__(self, path: StreamPath) -> None:
        super().__init__(path)
        self.reader = framing.BufferedDeframer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass
        self.transport = writer
        writer.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.cut(self.reader.buffer_updated, nbytes)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.release()
        super().connection_lost(exc)


class TcpPath(StreamPath):
    """A TCP connection carrying length-prefixed frames, reconnected while the path lives."""

    kind = "tcp"

    async def _connect(self) -> StreamLink:
        family, addr = await resolve(self.spec.host, self.spec.port, socket.SOCK_STREAM)
        sock = make_socket(family, socket.SOCK_STREAM, self.spec.uplink)
        try:
            tune_buffers(sock)
            await asyncio.wait_for(self._loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            _, protocol = await self._loop.create_connection(lambda: _TcpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        return protocol


def open_path(path_id: int, spec: PathSpec, owner: PathOwner) -> UdpPath | StreamPath:
    if spec.scheme == "ssh":
        from dupsession.aio.sshpath import SshPath  # asyncssh loads only when used

        return SshPath(path_id, spec, owner)
    return UdpPath(path_id, spec, owner) if spec.datagram else TcpPath(path_id, spec, owner)
