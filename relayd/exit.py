"""One session at the exit: the sans-IO session, its paths' reply sinks, the target connection."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from dupsession.aio.driver import SessionDriver
from dupsession.aio.udp import BatchSocket
from dupsession.core import events, wire
from dupsession.core.addresses import PathAddresses
from dupsession.core.handshake import Accepted

log = logging.getLogger("relayd")

TARGET_CONNECT_TIMEOUT = 10.0
#: Above this many bytes queued toward the target, stop opening the client's window.
TARGET_HIGH_WATER = 1024 * 1024


class DatagramSender(Protocol):
    """Where a datagram path's frames go out: the listener's `BatchSocket`, or a session
    worker's per-address sockets (relayd/worker.py)."""

    def send_frames(self, frames: list[bytes], addr: tuple[str, int] | None = None) -> None: ...


class UdpPathReply:
    """A datagram path's sink: frames go where the session's address book says (the validated
    address, or within the anti-amplification budget an unvalidated one)."""

    datagram = True

    def __init__(
        self, io: DatagramSender, book: PathAddresses[tuple[str, int]], path_id: int
    ) -> None:
        self.io = io
        self.book = book
        self.path_id = path_id

    def send_frames(self, frames: list[bytes]) -> None:
        addr, allowed = self.book.route(self.path_id, frames)
        if addr is not None and allowed:
            self.io.send_frames(allowed, addr)  # a full socket buffer is loss, as on the wire


class UdpReply:
    """Frames to one UDP path go to the latest authenticated source address (roaming)."""

    datagram = True

    def __init__(self, sock: DatagramSender | socket.socket, addr: tuple[str, int]) -> None:
        # The listener's shared socket, with GSO batching when the server set it up.
        self.io: DatagramSender = (
            BatchSocket(sock, batching=False) if isinstance(sock, socket.socket) else sock
        )
        self.addr = addr

    def send_frames(self, frames: list[bytes]) -> None:
        self.io.send_frames(frames, self.addr)  # a full socket buffer is loss, as on the wire


class _TargetProtocol(asyncio.Protocol):
    def __init__(self, exit_session: ExitSession) -> None:
        self.exit = exit_session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport = writer
        writer.set_write_buffer_limits(high=TARGET_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        driver = self.exit.driver
        driver.send(data)
        if not driver.writable() and self.transport is not None:
            self.transport.pause_reading()
        self.exit.after_input()  # an echo leaves now, not after the next turn's timers

    def eof_received(self) -> bool:
        self.exit.driver.close_stream()
        return True  # keep our write side open: half-close

    def pause_writing(self) -> None:
        self.exit.driver.pause_receiving(True)

    def resume_writing(self) -> None:
        self.exit.driver.pause_receiving(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.exit.abort(wire.CloseCode.TARGET_UNREACHABLE, f"target connection lost: {exc}")


class ExitSession:
    """Endpoint for a `SessionDriver`: session bytes go to the target, target bytes back."""

    def __init__(
        self,
        accepted: Accepted,
        driver_factory: Callable[[ExitSession], SessionDriver],
        host: str,
        port: int,
    ) -> None:
        self.accepted = accepted
        self.host = host
        self.port = port
        self.target_name = accepted.hello.target
        self.label = accepted.hello.session_id.hex()
        #: Reply addresses of the datagram paths: moved only by validated addresses.
        self.addresses: PathAddresses[tuple[str, int]] = PathAddresses()
        self.stream_peers: dict[int, tuple[str, int]] = {}  #: path id -> TCP peer address
        self.key_id = ""  #: which accepted key opened it (closed when that key is revoked)
        self.source = ""  #: the client's address as its first HELLO came from (per-source limit)
        self._target: _TargetProtocol | None = None
        self._early: list[bytes] = []
        self._early_eof = False
        #: The probe echo froze the session's window (its send buffer was full): only then
        #: does `on_writable` reopen it.
        self._echo_paused = False
        self.closed: events.SessionClosed | None = None
        self.driver = driver_factory(self)
        if not self.is_probe:
            # Nothing takes the bytes until the target is connected (`connect_target`, up to
            # TARGET_CONNECT_TIMEOUT): the frozen window bounds `_early` in bytes (review H1).
            self.driver.pause_receiving(True)
        self.on_finished: Callable[[ExitSession], None] | None = None
        #: Called at the end of each read from the target (the server's `prompt`).
        self.after_input: Callable[[], None] = self._prompt

    def _prompt(self) -> None:
        self.driver.prompt()

    def orphaned(self) -> bool:
        """Every path is a TCP connection and none is open: the client closed them all."""
        kinds = self.driver.path_kinds()
        return bool(kinds) and not any(kinds.values()) and not self.driver.sinks

    @property
    def is_probe(self) -> bool:
        return self.target_name == wire.PROBE_TARGET

    async def connect_target(self) -> None:
        if self.is_probe:
            for chunk in self._early:
                self.driver.send(chunk)
            self._early.clear()
            return
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _TargetProtocol(self), self.host, self.port),
                TARGET_CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            reason = f"exit cannot connect to {self.target_name}: {exc or 'timed out'}"
            log.warning("session %s: %s", self.label, reason)
            self.abort(wire.CloseCode.TARGET_UNREACHABLE, reason)
            return
        if self.closed is not None:
            if protocol.transport is not None:
                protocol.transport.close()
            return
        self._target = protocol
        assert protocol.transport is not None
        # Reopened before the early bytes go out: if they fill the target's buffer, its
        # `pause_writing` freezes the window again.
        self.driver.pause_receiving(False)
        for chunk in self._early:
            protocol.transport.write(chunk)
        self._early.clear()
        if self._early_eof:
            protocol.transport.write_eof()
        log.info("session %s: connected to target %s", self.label, self.target_name)

    def abort(self, code: int, reason: str) -> None:
        self.driver.abort(code, reason)

    # -- Endpoint ----------------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self.is_probe:
            # The echo obeys backpressure: once the send buffer is full (a client that does not
            # read), the client's window freezes, so it cannot push more in (bounded memory).
            self.driver.send(data)
            if not self.driver.writable():
                self._echo_paused = True
                self.driver.pause_receiving(True)
            return
        target = self._target
        if target is None or target.transport is None:
            self._early.append(data)  # bounded: paused until connected, window_bytes at most
            return
        target.transport.write(data)

    def on_data_parts(self, parts: list[bytes]) -> None:
        """`on_data` for several pieces: one `writev` to the target, not a join first."""
        target = self._target
        if self.is_probe or target is None or target.transport is None:
            self.on_data(b"".join(parts))
            return
        target.transport.writelines(parts)

    def on_eof(self) -> None:
        if self.is_probe:
            self.driver.close_stream()
            return
        target = self._target
        if target is None or target.transport is None:
            self._early_eof = True
        elif target.transport.can_write_eof() and not target.transport.is_closing():
            target.transport.write_eof()

    def on_closed(self, event: events.SessionClosed) -> None:
        self.closed = event
        if self._target is not None and self._target.transport is not None:
            self._target.transport.close()
        snap = self.driver.snapshot()
        who = "client" if event.by_peer else "exit"
        log.info(
            "session %s: closed by %s: %s (to target %d B, from target %d B)",
            self.label,
            who,
            event.reason,
            snap.bytes_in,
            snap.bytes_out,
        )
        if self.on_finished is not None:
            self.on_finished(self)

    def on_writable(self) -> None:
        if self.is_probe:
            # Only a window we froze: the driver calls this after every flush the session is
            # writable, and reopening pokes a flush, so unconditionally it was a busy loop
            # (relayd at 100 % of a core while any probe session was open).
            if self._echo_paused:
                self._echo_paused = False
                self.driver.pause_receiving(False)
            return
        target = self._target
        if (
            target is not None
            and target.transport is not None
            and not target.transport.is_reading()
        ):
            target.transport.resume_reading()
