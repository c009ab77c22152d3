"""The exit server: UDP and TCP listeners on one port, the session table, the handshake.

Security rules applied here, each at the line that enforces it:
- A frame for an unknown session, or whose tag fails, gets no answer (no reflection, no
  oracle); a TCP connection whose first frame fails is closed without a byte sent.
- Only a HELLO that verifies gets a WELCOME, and a WELCOME is smaller than a HELLO.
- The target must be on the allow-list; the refusal is authenticated so the client can say why.
- The table is bounded (`max_sessions`); closed sessions linger briefly as tombstones that
  answer stragglers with CLOSE, then go.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from dupsession.aio import framing
from dupsession.aio.driver import SessionDriver
from dupsession.aio.sockets import READ_BATCH, WRITE_HIGH_WATER, bind_udp
from dupsession.aio.udp import BatchSocket
from dupsession.control import STATE_NAMES
from dupsession.core import negotiate, wire
from dupsession.core.handshake import KNOWN_CRITICAL, HandshakeError, ServerHandshake
from dupsession.core.session import Role, Session, SessionConfig
from dupsession.pathspec import PathSpecError, parse_hostport
from relayd.acl import AllowList
from relayd.exit import ExitSession, UdpReply

log = logging.getLogger("relayd")

#: At shutdown, CLOSE goes out this many times on every path, this far apart (s).
CLOSE_REPEATS = 3
CLOSE_REPEAT_INTERVAL = 0.02
#: A closed session answers stragglers with CLOSE for this long (s), then is forgotten.
TOMBSTONE_LINGER = 30.0


@dataclass(frozen=True, slots=True)
class ExitConfig:
    listen: tuple[str, int]
    psk: bytes
    allow: AllowList
    max_sessions: int = 1024
    session: SessionConfig = field(default_factory=SessionConfig)


class _StreamConnection(asyncio.Protocol):
    """One TCP path connection at the exit; bound to a session by its first valid frame."""

    datagram = False

    def __init__(self, server: ExitServer) -> None:
        self.server = server
        self.deframer = framing.StreamDeframer()
        self.transport: asyncio.Transport | None = None
        self.session: ExitSession | None = None
        self.path_id: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_frames(self, frames: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(framing.pack(frames))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.deframer.feed(data)
        except framing.FramingError:
            self.drop()
            return
        for frame in frames:
            if not self.server.stream_frame(self, frame):
                self.drop()
                return

    def pause_writing(self) -> None:
        self._writable(False)

    def resume_writing(self) -> None:
        self._writable(True)

    def _writable(self, writable: bool) -> None:
        if self.session is not None and self.path_id is not None:
            self.session.driver.session.set_path_writable(self.path_id, writable)
            self.session.driver.poke()

    def note_peer(self, exit_session: ExitSession, path_id: int) -> None:
        """Remember who is at the other end, for status views."""
        if self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            if peer:
                exit_session.stream_peers[path_id] = tuple(peer[:2])  # type: ignore[assignment]

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None and self.path_id is not None:
            self.session.driver.detach(self.path_id, self)
        self.transport = None


class ExitServer:
    def __init__(self, config: ExitConfig) -> None:
        self.config = config
        self.handshake = ServerHandshake(config.psk)
        self.sessions: dict[bytes, ExitSession] = {}
        self._udp: socket.socket | None = None
        self._udp_io: BatchSocket | None = None
        self._tcp: asyncio.Server | None = None
        self._loop = asyncio.get_running_loop()
        self.address: tuple[str, int] | None = None
        self.rejected_frames = 0

    async def start(self) -> None:
        host, port = self.config.listen
        udp = await bind_udp(host, port)
        self._udp = udp
        self._udp_io = BatchSocket(udp)
        bound_port = udp.getsockname()[1]
        # TCP on the same port number as UDP, so one `--listen` names both.
        self._tcp = await self._loop.create_server(
            lambda: _StreamConnection(self), host, bound_port, reuse_address=True
        )
        self._loop.add_reader(udp.fileno(), self._udp_readable)
        self.address = (udp.getsockname()[0], bound_port)
        log.info("relayd exit listening on %s:%d (udp+tcp)", *self.address)

    # -- UDP ---------------------------------------------------------------------------------

    def _udp_readable(self) -> None:
        io = self._udp_io
        if io is None:
            return
        count = 0
        while count < READ_BATCH:
            try:
                frames, addr = io.recv_frames()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for data in frames:
                self._udp_frame(data, addr)
            count += len(frames)

    def _udp_frame(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < wire.PREFIX.size + wire.TAG_SIZE or data[0] != wire.VERSION:
            self.rejected_frames += 1
            return
        assert self._udp is not None
        if data[1] == wire.FrameType.HELLO:
            self._hello(data, UdpReply(self._udp_io or self._udp, addr))
            return
        exit_session = self.sessions.get(data[4:12])
        if exit_session is None:
            self.rejected_frames += 1
            return
        driver = exit_session.driver
        path_id = exit_session.udp_paths.get(addr)
        named = driver.frame_received(data, path_id)
        if named is not None and named != path_id:
            self._attach_udp(exit_session, named, addr)
            driver.frame_received(data, named)  # first frame of a new or roamed path

    def _attach_udp(self, exit_session: ExitSession, path_id: int, addr: tuple[str, int]) -> None:
        """The latest authenticated source of a path becomes its reply address (roaming)."""
        assert self._udp is not None
        stale = [a for a, p in exit_session.udp_paths.items() if p == path_id]
        for old in stale:
            del exit_session.udp_paths[old]
            log.info("session %s: path %d moved %s -> %s", exit_session.label, path_id, old, addr)
        exit_session.udp_paths[addr] = path_id
        reply = UdpReply(self._udp_io or self._udp, addr)
        exit_session.driver.attach(path_id, reply, datagram=True)

    # -- TCP ---------------------------------------------------------------------------------

    def stream_frame(self, conn: _StreamConnection, frame: bytes) -> bool:
        """Handle one frame from a TCP path; False means drop the connection silently."""
        if frame[0] != wire.VERSION:
            return False
        if frame[1] == wire.FrameType.HELLO:
            return self._hello(frame, conn)
        exit_session = conn.session or self.sessions.get(frame[4:12])
        if exit_session is None or frame[4:12] != exit_session.accepted.hello.session_id:
            return conn.session is not None  # unknown session on a fresh connection: drop
        driver = exit_session.driver
        named = driver.frame_received(frame, conn.path_id)
        if named is not None and named != conn.path_id:
            conn.session, conn.path_id = exit_session, named
            driver.attach(named, conn, datagram=False)
            conn.note_peer(exit_session, named)
            driver.frame_received(frame, named)
        return True

    # -- handshake -----------------------------------------------------------------------------

    def _hello(self, frame: bytes, reply: UdpReply | _StreamConnection) -> bool:
        unix_now = time.time()
        existing = self.sessions.get(frame[4:12])
        try:
            hello = self.handshake.verify_hello(frame, unix_now)
        except wire.FrameError:
            self.rejected_frames += 1
            return False  # wrong key or garbage: no answer at all
        except HandshakeError as exc:
            log.warning("handshake rejected: %s", exc)
            return False
        if existing is not None:
            if existing.accepted.hello.client_nonce != hello.client_nonce:
                return False
            # Another path's copy (or a resend): same answer, and the path joins.
            reply.send_frames(
                [existing.accepted.welcome_frame(self.handshake.auth, hello.path_id, frame[-16:])]
            )
            self._join(existing, hello.path_id, reply)
            return True
        if self.handshake.seen(hello):
            # Its session is gone (closed, tombstone expired): a replay, not a new session.
            log.warning("session %s: replayed hello dropped", hello.session_id.hex())
            return False
        refusal = self._refusal(hello)
        if refusal is not None:
            status, reason = refusal
            log.warning("session %s: refused: %s", hello.session_id.hex(), reason)
            reply.send_frames([self.handshake.refusal_frame(frame, hello, status, reason)])
            return True
        host, port = (
            ("probe", 0) if hello.target == wire.PROBE_TARGET else (parse_hostport(hello.target))
        )
        welcome_options, _ = negotiate.answer(hello.options)
        accepted = self.handshake.accept(hello, unix_now, welcome_options)
        exit_session = ExitSession(accepted, self._make_driver, host, port)
        exit_session.on_finished = self._finished
        self.sessions[hello.session_id] = exit_session
        reply.send_frames([accepted.welcome_frame(self.handshake.auth, hello.path_id, frame[-16:])])
        self._join(exit_session, hello.path_id, reply)
        log.info("session %s: opened for target %s", exit_session.label, hello.target)
        self._loop.create_task(exit_session.connect_target())
        return True

    def _refusal(self, hello: wire.Hello) -> tuple[int, str] | None:
        if len(self.sessions) >= self.config.max_sessions:
            return wire.WelcomeStatus.FULL, "exit is full"
        critical = wire.unknown_critical(hello.options, KNOWN_CRITICAL)
        if critical:  # the client relies on something this exit does not do: say so, never guess
            return wire.WelcomeStatus.UNSUPPORTED, f"exit does not implement option(s) {critical}"
        if hello.target == wire.PROBE_TARGET:
            return None  # an echo inside the exit: reaches nothing, needs no allow-list entry
        try:
            host, port = parse_hostport(hello.target, "target")
        except PathSpecError as exc:
            return wire.WelcomeStatus.REFUSED, str(exc)
        if not self.config.allow.permits(host, port):
            return wire.WelcomeStatus.REFUSED, f"target {hello.target} is not allowed by this exit"
        return None

    def _join(
        self, exit_session: ExitSession, path_id: int, reply: UdpReply | _StreamConnection
    ) -> None:
        if isinstance(reply, UdpReply):
            self._attach_udp(exit_session, path_id, reply.addr)
        else:
            reply.session, reply.path_id = exit_session, path_id
            exit_session.driver.attach(path_id, reply, datagram=False)
            reply.note_peer(exit_session, path_id)

    def _make_driver(self, exit_session: ExitSession) -> SessionDriver:
        hello = exit_session.accepted.hello
        _, features = negotiate.answer(hello.options)  # the same answer its WELCOME carries
        session = Session(
            Role.EXIT,
            hello.session_id,
            exit_session.accepted.keys,
            time.monotonic(),
            self.config.session,
            features,
        )
        return SessionDriver(session, exit_session)

    def _finished(self, exit_session: ExitSession) -> None:
        sid = exit_session.accepted.hello.session_id

        def forget() -> None:
            if self.sessions.get(sid) is exit_session:
                del self.sessions[sid]
                exit_session.driver.stop()

        self._loop.call_later(TOMBSTONE_LINGER, forget)

    # -- observation ---------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every session in the table, for the control socket and the metrics."""
        now = time.monotonic()
        docs = []
        for exit_session in self.sessions.values():
            session = exit_session.driver.session
            doc = session.snapshot(now)
            doc["state"] = STATE_NAMES[session.state]
            doc["target"] = exit_session.target_name
            sources = {p: a for a, p in exit_session.udp_paths.items()}
            sources.update(exit_session.stream_peers)
            for path in doc["paths"]:
                addr = sources.get(path["id"])
                kind = "udp" if path["kind"] == "datagram" else "tcp"
                path["spec"] = f"{kind} from {addr[0]}:{addr[1]}" if addr else f"{kind} path"
                path["uplink"] = "-"
                path["via"] = "-"
            docs.append(doc)
        return docs

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self, reason: str = "exit shutting down") -> None:
        live = [s for s in self.sessions.values() if s.closed is None]
        for exit_session in live:
            exit_session.abort(wire.CloseCode.SHUTDOWN, reason)
        for _ in range(CLOSE_REPEATS - 1):  # a lost CLOSE would leave a client waiting
            await asyncio.sleep(CLOSE_REPEAT_INTERVAL)
            for exit_session in live:
                exit_session.driver.session.repeat_close()
                exit_session.driver.flush()
        for exit_session in self.sessions.values():
            exit_session.driver.stop()
        self.sessions.clear()
        if self._udp is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
            self._udp_io = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
