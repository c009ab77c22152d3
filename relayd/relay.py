"""`relayd relay`: forward frames of authenticated sessions to one configured exit.

A relay is a second route to the exit, never an open proxy:
- each listening port forwards to exactly one exit, fixed by configuration;
- a client is forwarded once the relay has verified a HELLO of its session with the
  pre-shared key (the relay cannot check later frames: their keys are forward-secret between
  client and exit), or when its frame names a session the relay has verified before (roaming);
- a session the relay never saw the HELLO of (the relay restarted, the HELLO was lost, or the
  path joined the session later) is put on probation: its ACK and CLOSE frames -- small, and
  what makes the exit bind a path -- are forwarded within a small budget per session and
  overall, and the session is verified as soon as the exit answers it over UDP, since the
  exit answers only frames that authenticate with the session's keys (over TCP, the exit
  closes a connection whose first frame does not authenticate);
- anything else is dropped without an answer, and forwarding is 1:1, so nothing amplifies.

UDP: each client source address gets its own upstream socket, so the exit sees one stable
source per (client address, relay) and replies map back to the client's current address.
TCP: each client connection gets its own upstream connection, spliced once its first frame
passes the check above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from dupsession.aio import framing
from dupsession.aio.sockets import READ_BATCH, RECV_SIZE, WRITE_HIGH_WATER, bind_udp
from dupsession.core import wire
from dupsession.core.handshake import HandshakeError, ServerHandshake

log = logging.getLogger("relayd")

#: A verified session or a client mapping unused this long (s) is forgotten.
IDLE_EXPIRY = 900.0
#: Bound on verified sessions and on UDP client mappings per listener.
MAX_SESSIONS = 4096
MAX_UDP_CLIENTS = 8192
CONNECT_TIMEOUT = 10.0
#: Probation (see the module docstring): frames forwarded per unverified session per window,
#: the window (s), the overall rate (frames/s, also the burst) and the sessions tracked at once.
PROBATION_FRAMES = 8
PROBATION_WINDOW = 5.0
PROBATION_RATE = 64.0
MAX_PROBATION = 1024
_PROBATION_TYPES = (wire.FrameType.ACK, wire.FrameType.CLOSE)


@dataclass(frozen=True, slots=True)
class Forward:
    listen: tuple[str, int]
    exit: tuple[str, int]


class SessionGate:
    """Which session ids this relay has seen a valid HELLO for (shared by UDP and TCP).

    It owns the relay's clocks (injected for tests): `clock` (monotonic s) for every `now`
    the relay passes in, `wall_clock` (Unix s) for the HELLO's replay window."""

    def __init__(
        self,
        psk: bytes,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._wall_clock = wall_clock
        self._handshake = ServerHandshake(psk)
        self._sessions: dict[bytes, float] = {}
        self._probation: dict[bytes, list[float]] = {}  #: sid -> [window start, frames]
        self._tokens = PROBATION_RATE
        self._refilled = 0.0
        self.dropped = 0

    def admit(self, frame: bytes | memoryview, now: float) -> bool:
        if len(frame) < wire.PREFIX.size + wire.TAG_SIZE or frame[0] != wire.VERSION:
            self.dropped += 1
            return False
        sid = bytes(frame[4:12])
        if frame[1] == wire.FrameType.HELLO:
            try:
                self._handshake.verify_hello(bytes(frame), self._wall_clock())
            except (wire.FrameError, HandshakeError):
                self.dropped += 1
                return False
            if not self._remember(sid, now):
                self.dropped += 1
                return False
            return True
        seen = self._sessions.get(sid)
        if seen is None:
            if (
                frame[1] in _PROBATION_TYPES
                and len(frame) <= wire.MAX_DATAGRAM_FRAME
                and self._on_probation(sid, now)
            ):
                return True
            self.dropped += 1
            return False
        if now - seen > 1.0:  # refresh at most once a second: cheap on the hot path
            self._sessions[sid] = now
        return True

    def vouch(self, frame: bytes | memoryview) -> None:
        """The exit sent a frame of a session on probation: the exit answers only frames that
        authenticate, so the session is genuine and its frames pass from now on."""
        # A RESET answers frames of sessions the exit does *not* know: it vouches for nothing.
        if self._probation and len(frame) >= wire.PREFIX.size and frame[1] != wire.FrameType.RESET:
            sid = bytes(frame[4:12])
            if self._probation.pop(sid, None) is not None:
                self._remember(sid, self.clock())

    def _remember(self, sid: bytes, now: float) -> bool:
        if sid not in self._sessions and len(self._sessions) >= MAX_SESSIONS:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:
                return False
        self._sessions[sid] = now
        return True

    def _on_probation(self, sid: bytes, now: float) -> bool:
        """Whether this frame of an unverified session may go to the exit (within budget)."""
        entry = self._probation.get(sid)
        if entry is None or now - entry[0] > PROBATION_WINDOW:
            if entry is None and len(self._probation) >= MAX_PROBATION:
                self._probation = {
                    s: e for s, e in self._probation.items() if now - e[0] <= PROBATION_WINDOW
                }
                if len(self._probation) >= MAX_PROBATION:
                    return False
            entry = self._probation[sid] = [now, 0.0]
        if entry[1] >= PROBATION_FRAMES:
            return False
        self._tokens = min(PROBATION_RATE, self._tokens + (now - self._refilled) * PROBATION_RATE)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        entry[1] += 1
        return True

    def _expire(self, now: float) -> None:
        self._sessions = {s: t for s, t in self._sessions.items() if now - t < IDLE_EXPIRY}


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket toward the exit; replies go to the client's latest address."""

    def __init__(self, relay: UdpRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = relay.gate.clock()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.gate.vouch(data)
        self.relay.to_client(data, self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("relay upstream for %s: %s", self.client, exc)


class UdpRelay:
    def __init__(self, forward: Forward, gate: SessionGate) -> None:
        self.forward = forward
        self.gate = gate
        self._sock: socket.socket | None = None
        self._clients: dict[tuple[str, int], _Upstream] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._loop = asyncio.get_running_loop()
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        sock = await bind_udp(*self.forward.listen)
        self._sock = sock
        self.address = sock.getsockname()[:2]
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        now = self.gate.clock()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.gate.admit(data, now):
                self._to_exit(data, addr[:2], now)

    def _to_exit(self, data: bytes, client: tuple[str, int], now: float) -> None:
        upstream = self._clients.get(client)
        if upstream is not None and upstream.transport is not None:
            upstream.last_used = now
            upstream.transport.sendto(data)
            return
        pending = self._pending.get(client)
        if pending is not None:
            if len(pending) < 64:
                pending.append(data)
            return
        if len(self._clients) >= MAX_UDP_CLIENTS:
            self._expire(now)
            if len(self._clients) >= MAX_UDP_CLIENTS:
                return
        self._pending[client] = [data]
        self._loop.create_task(self._open_upstream(client))

    async def _open_upstream(self, client: tuple[str, int]) -> None:
        try:
            _, upstream = await self._loop.create_datagram_endpoint(
                lambda: _Upstream(self, client), remote_addr=self.forward.exit
            )
        except OSError as exc:
            log.warning("relay: cannot reach exit %s:%d: %s", *self.forward.exit, exc)
            self._pending.pop(client, None)
            return
        self._clients[client] = upstream
        assert upstream.transport is not None
        for data in self._pending.pop(client, []):
            upstream.transport.sendto(data)

    def to_client(self, data: bytes, client: tuple[str, int]) -> None:
        if self._sock is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self._sock.sendto(data, client)

    def _expire(self, now: float) -> None:
        for client, upstream in list(self._clients.items()):
            if now - upstream.last_used > IDLE_EXPIRY and upstream.transport is not None:
                upstream.transport.close()
                del self._clients[client]

    def close(self) -> None:
        for upstream in self._clients.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._clients.clear()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


class _Splice(asyncio.Protocol):
    """One side of a spliced TCP pair; pauses its reader while the other side is full."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Splice | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def eof_received(self) -> bool:
        peer = self.peer.transport if self.peer is not None else None
        if peer is not None and peer.can_write_eof():
            peer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _ClientSide(_Splice):
    """The client's connection: held until its first frame passes the gate."""

    def __init__(self, relay: TcpRelay) -> None:
        super().__init__()
        self.relay = relay
        self._deframer: framing.StreamDeframer | None = framing.StreamDeframer()
        self._held = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._deframer is None:
            super().data_received(data)
            return
        self._held += data
        if len(self._held) > framing.LENGTH.size + wire.MAX_STREAM_FRAME:
            self._drop()
            return
        try:
            frames = self._deframer.feed(data)
        except framing.FramingError:
            self._drop()
            return
        if not frames:
            return
        gate = self.relay.gate
        if not gate.admit(frames[0], gate.clock()):
            self._drop()
            return
        self._deframer = None
        assert self.transport is not None
        self.transport.pause_reading()
        held, self._held = bytes(self._held), bytearray()
        asyncio.get_running_loop().create_task(self.relay.connect_exit(self, held))

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class TcpRelay:
    def __init__(self, forward: Forward, gate: SessionGate) -> None:
        self.forward = forward
        self.gate = gate
        self._server: asyncio.AbstractServer | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ClientSide(self), self.forward.listen[0], port, reuse_address=True
        )

    async def connect_exit(self, client: _ClientSide, held: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, exit_side = await asyncio.wait_for(
                loop.create_connection(_Splice, *self.forward.exit), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.warning("relay: cannot reach exit %s:%d: %s", *self.forward.exit, exc)
            client._drop()
            return
        if client.transport is None or client.transport.is_closing():
            if exit_side.transport is not None:
                exit_side.transport.close()
            return
        client.peer, exit_side.peer = exit_side, client
        assert exit_side.transport is not None
        exit_side.transport.write(held)
        client.transport.resume_reading()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class Relay:
    """Every forward of one `relayd relay` process: UDP and TCP on each listening port."""

    def __init__(self, forwards: list[Forward], psk: bytes) -> None:
        self.gate = SessionGate(psk)
        self.udp = [UdpRelay(f, self.gate) for f in forwards]
        self.tcp = [TcpRelay(f, self.gate) for f in forwards]

    async def start(self) -> None:
        for udp, tcp in zip(self.udp, self.tcp, strict=True):
            await udp.start()
            assert udp.address is not None
            await tcp.start(udp.address[1])
            log.info(
                "relay listening on %s:%d (udp+tcp) -> exit %s:%d",
                *udp.address,
                *udp.forward.exit,
            )

    def close(self) -> None:
        parts: list[UdpRelay | TcpRelay] = [*self.udp, *self.tcp]
        for part in parts:
            part.close()
