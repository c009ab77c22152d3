"""Userspace network impairment on loopback: delay, jitter, loss, blackhole, rate, queue.

The settings' names and units are the testing vocabulary (`dupsession.testing.link`), which
the simulator and the netlab share; `LinkSettings.impairment()` makes an `Impairment`.

Why: this kernel has no netem qdisc, yet tests need paths that are slow, lossy or dead, and
need to change that while a session runs. A shim sits between a client and an upstream on
127.0.0.1 and impairs each direction on its own (routes are asymmetric).

- `UdpShim` impairs per datagram: each one is dropped or scheduled with `loop.call_at`, so
  a long delay never serializes the packets behind it.
- `TcpShim` impairs a byte stream, which must never lose or reorder bytes (that would
  corrupt the framing riding on top). Loss is ignored; a blackhole *stalls* the stream like
  a dead route does (bytes are held, up to a bound, then reading stops) and releases every
  held byte, once and in order, when the blackhole ends.

`Impairment` objects are mutable dataclasses: tests flip `blackhole` or `loss` live and the
next datagram or chunk sees the new value; a change is also announced to whoever watches the
impairment (a stalled TCP direction resumes the moment its blackhole ends, no polling).
Change them on the shim's loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self, cast

__all__ = ["Counters", "Impairment", "TcpShim", "UdpShim"]

Address = tuple[str, int]

# By default a datagram may wait at most this long for the token bucket before it is
# tail-dropped, like a router queue of bounded depth; without it a slow rate would queue
# without limit (`Impairment.queue`).
UDP_MAX_QUEUE_DELAY = 0.5  # seconds

# A client's datagrams that arrive while its upstream socket is still being opened.
UDP_MAX_PENDING = 256  # datagrams

# Bytes one TCP direction may hold (delayed or stalled) before it stops reading its
# source: beyond this the sender sees ordinary TCP backpressure, so memory stays bounded.
TCP_HIGH_WATER = 4 * 1024 * 1024  # bytes
TCP_LOW_WATER = TCP_HIGH_WATER // 2  # bytes; reading resumes below this


@dataclass
class Impairment:
    """What one direction of a path does to traffic. Mutable: changes apply at once, and
    each change is announced to the callbacks registered with `watch`."""

    delay: float = 0.0
    """One-way delay in seconds."""
    jitter: float = 0.0
    """Uniform extra delay in seconds, +/- this much (TCP: never reorders bytes)."""
    loss: float = 0.0
    """Probability (0..1) that a datagram is dropped. Ignored by TCP: a stream loses nothing."""
    blackhole: bool = False
    """A dead route: UDP drops everything, TCP stalls (holds bytes until it ends)."""
    rate_bps: float | None = None
    """Link rate in bits per second (token-bucket serialization delay); None = unlimited."""
    queue: float = UDP_MAX_QUEUE_DELAY
    """Longest wait in seconds for the rate before a datagram is tail-dropped (UDP)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_watchers", [])

    def __setattr__(self, name: str, value: object) -> None:
        changed = getattr(self, name, _UNSET) != value
        object.__setattr__(self, name, value)
        if changed:  # (__init__ sets the fields before there are any watchers)
            for callback in list(self.__dict__.get("_watchers", ())):
                callback()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` after every change; returns the function that stops that."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    _watchers: ClassVar[list[Callable[[], None]]]  # per instance, set in __post_init__


_UNSET = object()


@dataclass
class Counters:
    """What one direction of a shim did, for assertions in tests."""

    forwarded: int = 0
    """UDP: datagrams sent on. TCP: bytes sent on."""
    dropped: int = 0
    """UDP: datagrams dropped (loss, blackhole, queue full). TCP: always 0."""
    bytes: int = 0
    """Payload bytes sent on, both kinds."""


class _Direction:
    """One direction's impairment state: seeded randomness and the token bucket."""

    def __init__(self, impairment: Impairment, counters: Counters, rng: random.Random) -> None:
        self.imp = impairment
        self.counters = counters
        self.rng = rng
        self.busy_until = 0.0  # when the simulated link finishes serializing its backlog

    def departure(self, now: float, size: int) -> float:
        """When `size` bytes finish serializing onto the link, booking the link till then."""
        rate = self.imp.rate_bps
        if not rate:
            return now
        self.busy_until = max(now, self.busy_until) + size * 8 / rate
        return self.busy_until

    def latency(self) -> float:
        """Delay plus a jitter sample, never negative."""
        jitter = self.imp.jitter
        sample = self.rng.uniform(-jitter, jitter) if jitter > 0 else 0.0
        return max(0.0, self.imp.delay + sample)


class _Timers:
    """The shim's pending `call_at` handles, so `close()` can cancel every one of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._handles: set[asyncio.TimerHandle] = set()

    def call_at(self, when: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        def fire() -> None:
            self._handles.discard(handle)
            fn()

        handle = self.loop.call_at(when, fire)
        self._handles.add(handle)
        return handle

    def cancel(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()
        self._handles.discard(handle)

    def cancel_all(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()


class _ShimBase:
    """Shared shape of both shims: upstream, impairments, counters, lifecycle."""

    def __init__(
        self,
        upstream: Address,
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.up = up if up is not None else Impairment()
        self.down = down if down is not None else Impairment()
        self.up_counters = Counters()
        self.down_counters = Counters()
        self.host = host
        self.port = port
        self.seed = seed
        # Independent streams per direction: traffic in one never shifts the other's draws.
        self._up = _Direction(self.up, self.up_counters, random.Random(seed * 2))
        self._down = _Direction(self.down, self.down_counters, random.Random(seed * 2 + 1))
        self._timers: _Timers | None = None
        #: When a list, every datagram or chunk read in either direction is appended to it:
        #: what an observer on the wire sees (tests prove no plaintext is in it).
        self.capture: list[bytes] | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --------------------------------------------------------------------------------------- UDP


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, shim: UdpShim) -> None:
        self.shim = shim

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.shim._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors from a vanished client: nothing to do, as on a real link."""


class _UdpClient(asyncio.DatagramProtocol):
    """The upstream socket of one client source address, so replies map back to it."""

    def __init__(self, shim: UdpShim, addr: Address) -> None:
        self.shim = shim
        self.addr = addr
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.failed = False  # the upstream socket could not be opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: 3.11's selector datagram transport lacks the ABC as a base.
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            self.send(data)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.shim._from_upstream(data, self.addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable while the upstream is down: a lost datagram, no more."""

    def send(self, data: bytes) -> None:
        counters = self.shim.up_counters
        if self.transport is None:
            if self.failed or len(self.pending) >= UDP_MAX_PENDING:
                counters.dropped += 1
                return
            self.pending.append(data)
            return
        if self.transport.is_closing():
            counters.dropped += 1
            return
        self.transport.sendto(data)
        counters.forwarded += 1
        counters.bytes += len(data)


class UdpShim(_ShimBase):
    """Forward datagrams between clients and `upstream`, impairing each direction.

    `up` applies client -> upstream, `down` upstream -> client. Each client source address
    gets its own ephemeral upstream socket, so the upstream sees one peer per client and its
    replies find their way back. `up_counters` / `down_counters` count datagrams.
    """

    def __init__(
        self,
        upstream: Address,
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(upstream, up=up, down=down, host=host, port=port, seed=seed)
        self._listener: asyncio.DatagramTransport | None = None
        self._clients: dict[Address, _UdpClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the listening socket; `.port` is the real port afterwards."""
        loop = asyncio.get_running_loop()
        self._timers = _Timers(loop)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpListener(self), local_addr=(self.host, self.port)
        )
        self._listener = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        """Cancel every scheduled datagram and close every socket."""
        if self._timers is not None:
            self._timers.cancel_all()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        for client in self._clients.values():
            if client.transport is not None:
                client.transport.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await asyncio.sleep(0)  # let the transports' close callbacks run

    def _impair(self, direction: _Direction, size: int, send: Callable[[], None]) -> None:
        """Drop the datagram, or send it now or at its arrival time."""
        imp = direction.imp
        if imp.blackhole or (imp.loss > 0 and direction.rng.random() < imp.loss):
            direction.counters.dropped += 1
            return
        assert self._timers is not None
        now = self._timers.loop.time()
        departure = direction.departure(now, size)
        if departure - now > imp.queue:
            direction.busy_until -= size * 8 / (imp.rate_bps or 1)  # never sent: unbook it
            direction.counters.dropped += 1
            return
        due = departure + direction.latency()
        if due <= now:
            send()
        else:
            self._timers.call_at(due, send)

    def _from_client(self, data: bytes, addr: Address) -> None:
        if self.capture is not None:
            self.capture.append(data)
        client = self._clients.get(addr)
        if client is None:
            client = self._clients[addr] = _UdpClient(self, addr)
            task = asyncio.get_running_loop().create_task(self._open_upstream(client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._impair(self._up, len(data), lambda: client.send(data))

    async def _open_upstream(self, client: _UdpClient) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: client, remote_addr=self.upstream)
        except OSError:
            client.failed = True
            self.up_counters.dropped += len(client.pending)
            client.pending.clear()
            self._clients.pop(client.addr, None)  # the next datagram tries again

    def _from_upstream(self, data: bytes, addr: Address) -> None:
        if self.capture is not None:
            self.capture.append(data)

        def send() -> None:
            listener = self._listener
            if listener is None or listener.is_closing():
                self.down_counters.dropped += 1
                return
            listener.sendto(data, addr)
            self.down_counters.forwarded += 1
            self.down_counters.bytes += len(data)

        self._impair(self._down, len(data), send)


# --------------------------------------------------------------------------------------- TCP


class _Pipe:
    """One direction of one TCP connection: a queue of (due time, chunk) released in order.

    A chunk's due time is its arrival plus the direction's delay, never earlier than the
    chunk before it, so jitter cannot reorder bytes. One timer per pipe fires at the head's
    due time; under a blackhole (or before the destination connects) the pipe stalls with no
    timer, and when the route returns (announced by its `Impairment`) pushes every held
    chunk to at least now + delay, as retransmissions over a revived route would arrive.
    """

    def __init__(self, conn: _TcpConn, direction: _Direction) -> None:
        self.conn = conn
        self.direction = direction
        self.src: _TcpSide | None = None
        self.dst: _TcpSide | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.held = 0  # payload bytes in `queue`
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.stalled = False
        self.src_paused = False
        self.dst_paused = False  # the destination's write buffer is full
        self.eof_queued = False
        self.done = False  # EOF delivered, or the destination is gone
        self._unwatch: Callable[[], None] | None = direction.imp.watch(self.wake)

    @property
    def timers(self) -> _Timers:
        timers = self.conn.shim._timers
        assert timers is not None
        return timers

    def push(self, data: bytes | None) -> None:
        """Queue a chunk, or EOF (None), behind everything already queued."""
        if self.done or self.eof_queued:
            return
        capture = self.conn.shim.capture
        if capture is not None and data:
            capture.append(data)
        now = self.timers.loop.time()
        size = len(data) if data else 0
        due = self.direction.departure(now, size) + self.direction.latency()
        self.last_due = max(due, self.last_due)
        self.queue.append((self.last_due, data))
        self.held += size
        self.eof_queued = data is None
        if self.timer is None:
            self._arm(self.last_due)
        self.update_flow()

    def _arm(self, when: float) -> None:
        self.timer = self.timers.call_at(when, self._on_timer)

    def wake(self) -> None:
        """The destination connected or the impairment changed: release what is due."""
        if self.done or not self.queue:
            return
        if self.timer is not None:
            self.timers.cancel(self.timer)
        self._arm(self.queue[0][0])

    def _on_timer(self) -> None:
        self.timer = None
        now = self.timers.loop.time()
        dst = self.dst
        if self.direction.imp.blackhole or dst is None or dst.transport is None:
            self.stalled = self.stalled or self.direction.imp.blackhole
            return  # until `wake`: the destination connects or the blackhole ends
        if self.stalled:
            self.stalled = False
            floor = now + self.direction.latency()
            self.queue = collections.deque((max(due, floor), d) for due, d in self.queue)
            self.last_due = max(self.last_due, floor)
        chunks: list[bytes] = []
        eof = False
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                eof = True
                break
            chunks.append(data)
        if chunks:
            payload = b"".join(chunks)
            self.held -= len(payload)
            dst.transport.write(payload)
            self.direction.counters.forwarded += len(payload)
            self.direction.counters.bytes += len(payload)
        if eof:
            self.done = True
            if dst.transport.can_write_eof():
                dst.transport.write_eof()
            self.conn.maybe_close()
        elif self.queue:
            self._arm(self.queue[0][0])
        self.update_flow()

    def update_flow(self) -> None:
        """Stop reading the source while this pipe or its destination is full."""
        src = self.src
        if src is None or src.transport is None or src.transport.is_closing():
            return
        if not self.src_paused and (self.held > TCP_HIGH_WATER or self.dst_paused):
            self.src_paused = True
            src.transport.pause_reading()
        elif self.src_paused and self.held < TCP_LOW_WATER and not self.dst_paused:
            self.src_paused = False
            src.transport.resume_reading()

    def abort(self) -> None:
        """The destination is gone: nothing more can be delivered."""
        self.done = True
        self.queue.clear()
        self.held = 0
        if self._unwatch is not None:
            self._unwatch()  # a closed connection is no longer told about changes
            self._unwatch = None
        if self.timer is not None:
            self.timers.cancel(self.timer)
            self.timer = None


class _TcpSide(asyncio.Protocol):
    """One socket of a shimmed connection; feeds `outgoing`, drains `incoming`."""

    def __init__(self, conn: _TcpConn, outgoing: _Pipe, incoming: _Pipe) -> None:
        self.conn = conn
        self.outgoing = outgoing
        self.incoming = incoming
        self.transport: asyncio.Transport | None = None
        outgoing.src = self
        incoming.dst = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's lacks the ABC base
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Interactive bytes must not wait for Nagle; asyncio usually sets it, be sure.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.sides.add(self)
        self.incoming.wake()

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(None)
        return True  # keep the other direction open: half-close passes through

    def pause_writing(self) -> None:
        self.incoming.dst_paused = True
        self.incoming.update_flow()

    def resume_writing(self) -> None:
        self.incoming.dst_paused = False
        self.incoming.update_flow()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn.sides.discard(self)
        self.incoming.abort()
        self.outgoing.push(None)  # what was already read still goes through, then EOF
        self.conn.maybe_close()


class _TcpConn:
    """One accepted client connection and its upstream connection."""

    def __init__(self, shim: TcpShim) -> None:
        self.shim = shim
        self.up_pipe = _Pipe(self, shim._up)
        self.down_pipe = _Pipe(self, shim._down)
        self.client = _TcpSide(self, self.up_pipe, self.down_pipe)
        self.upstream = _TcpSide(self, self.down_pipe, self.up_pipe)
        self.sides: set[_TcpSide] = set()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def client_factory(self) -> _TcpSide:
        """Called by the server for each accept; opens the upstream connection alongside."""
        self.shim._conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self._connect())
        return self.client

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            host, port = self.shim.upstream
            await loop.create_connection(lambda: self.upstream, host, port)
        except OSError:
            self.close()  # upstream refused: the client sees its connection closed

    def maybe_close(self) -> None:
        """Close both sockets once both directions are finished."""
        if self.up_pipe.done and self.down_pipe.done:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up_pipe.abort()
        self.down_pipe.abort()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()  # writes what is buffered, then closes
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.shim._conns.discard(self)


class TcpShim(_ShimBase):
    """Forward TCP connections to `upstream`, delaying and stalling each direction.

    Bytes are never lost or reordered: `loss` is ignored, `blackhole` stalls. Each direction
    holds at most about `TCP_HIGH_WATER` bytes before it stops reading, so a stalled or slow
    direction pushes back on its sender. `up_counters` / `down_counters` count bytes.
    """

    def __init__(
        self,
        upstream: Address,
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(upstream, up=up, down=down, host=host, port=port, seed=seed)
        self._server: asyncio.Server | None = None
        self._conns: set[_TcpConn] = set()

    @property
    def buffered(self) -> int:
        """Bytes the shim holds right now, over all connections and both directions."""
        return sum(c.up_pipe.held + c.down_pipe.held for c in self._conns)

    @property
    def connections(self) -> int:
        """Connections currently open through the shim."""
        return len(self._conns)

    async def start(self) -> None:
        """Listen; `.port` is the real port afterwards."""
        loop = asyncio.get_running_loop()
        self._timers = _Timers(loop)
        self._server = await loop.create_server(
            lambda: _TcpConn(self).client_factory(), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, cancel every timer and close every connection at once."""
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            conn.close()
            for side in (conn.client, conn.upstream):
                if side.transport is not None:
                    side.transport.abort()  # close() means now, not after a stall drains
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._timers is not None:
            self._timers.cancel_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
