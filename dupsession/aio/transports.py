"""Client-side path transports: one UDP socket or one TCP connection per path.

A transport only moves whole frames and reports what happened to its owner; it never
interprets a frame. TCP paths reconnect with exponential backoff for as long as they live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Protocol

from dupsession.aio import framing
from dupsession.aio.bind import make_socket
from dupsession.aio.udp import BatchSocket
from dupsession.failures import reason as failure_reason
from dupsession.pathspec import PathSpec

log = logging.getLogger(__name__)

#: Datagrams read per wake-up before yielding to the loop (fairness between paths).
READ_BATCH = 256
RECV_SIZE = 65535
#: TCP reconnect backoff bounds (s).
RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0
CONNECT_TIMEOUT = 10.0
#: A UDP path whose sends fail (its uplink's address changed) gets a new socket this soon (s).
REOPEN_DELAY = 0.2
#: Socket buffers: big enough for a burst of a bandwidth-delay product of frames.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Stream paths report "not writable" above this much queued data.
WRITE_HIGH_WATER = 1024 * 1024


class PathOwner(Protocol):
    def path_open(self, path_id: int, sink: object) -> None: ...
    def path_frame(self, path_id: int, frame: bytes) -> None: ...
    def path_writable(self, path_id: int, writable: bool) -> None: ...
    def path_lost(self, path_id: int, reason: str) -> None: ...
    def path_error(self, path_id: int, reason: str) -> None: ...


async def resolve(host: str, port: int, kind: int) -> tuple[int, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=kind)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, addr = infos[0]
    return family, addr[:2]


async def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to `host:port` with large buffers, for listeners."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _tune_buffers(sock)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def _tune_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


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
        _tune_buffers(sock)
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
            self._retry = self._loop.call_later(RECONNECT_MAX, self._retry_open)

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
        io = self._io
        if io is None:
            return
        owner, path_id = self.owner, self.path_id
        count = 0
        while count < READ_BATCH:
            try:
                frames, _ = io.recv_frames()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable and friends: the path is just silent
                owner.path_error(path_id, failure_reason(exc))
                # uvloop stops polling a socket after an error event: watch it afresh.
                fd = io.sock.fileno()
                self._loop.remove_reader(fd)
                self._loop.add_reader(fd, self._readable)
                return
            for frame in frames:
                owner.path_frame(path_id, frame)
            count += len(frames)

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


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, path: TcpPath) -> None:
        self.path = path
        self.deframer = framing.StreamDeframer()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.deframer.feed(data)
        except framing.FramingError as exc:
            log.warning("tcp path %d: %s; reconnecting", self.path.path_id, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        owner, path_id = self.path.owner, self.path.path_id
        for frame in frames:
            owner.path_frame(path_id, frame)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, False)

    def resume_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.path.lost(self, "connection closed by peer" if exc is None else str(exc))


class TcpPath:
    """A TCP connection carrying length-prefixed frames, reconnected while the path lives."""

    datagram = False

    def __init__(self, path_id: int, spec: PathSpec, owner: PathOwner) -> None:
        self.path_id = path_id
        self.spec = spec
        self.owner = owner
        self._protocol: _TcpProtocol | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._reconnect: asyncio.Task[None] | None = None
        self._backoff = RECONNECT_MIN

    async def open(self) -> None:
        family, addr = await resolve(self.spec.host, self.spec.port, socket.SOCK_STREAM)
        sock = make_socket(family, socket.SOCK_STREAM, self.spec.uplink)
        try:
            _tune_buffers(sock)
            await asyncio.wait_for(self._loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            _, protocol = await self._loop.create_connection(lambda: _TcpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        if self._closed:
            protocol.transport and protocol.transport.close()
            return
        self._protocol = protocol
        self._backoff = RECONNECT_MIN
        self.owner.path_open(self.path_id, self)

    def is_open(self) -> bool:
        return self._protocol is not None

    def retry_later(self) -> None:
        if not self._closed and self._reconnect is None:
            self._reconnect = self._loop.create_task(self._reconnect_loop())

    def send_frames(self, frames: list[bytes]) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.write(framing.pack(frames))

    def reconnect(self) -> None:
        """Drop the connection and make a new one: after the path went silent, the old one
        may sit on a vanished address or deep in TCP's retransmission backoff."""
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            transport = protocol.transport
            getattr(transport, "abort", transport.close)()

    def lost(self, protocol: _TcpProtocol, reason: str) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self.owner.path_lost(self.path_id, reason)
        self.retry_later()

    async def _reconnect_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)
            try:
                await self.open()
            except (OSError, TimeoutError) as exc:
                log.debug("tcp path %d reconnect failed: %s", self.path_id, exc)
            else:
                self._reconnect = None
                return

    def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def open_path(path_id: int, spec: PathSpec, owner: PathOwner) -> UdpPath | TcpPath:
    if spec.scheme == "ssh":
        from dupsession.aio.sshpath import SshPath  # asyncssh loads only when used

        return SshPath(path_id, spec, owner)
    return UdpPath(path_id, spec, owner) if spec.datagram else TcpPath(path_id, spec, owner)
