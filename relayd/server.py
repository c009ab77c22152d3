"""The exit server: UDP and TCP listeners on one port, the session table, the handshake.

Security rules applied here, each at the line that enforces it:
- A frame for an unknown session, or whose tag fails, gets no answer (no reflection, no
  oracle); a TCP connection whose first frame fails is closed without a byte sent.
- Only a HELLO that verifies gets a WELCOME, and a WELCOME is smaller than a HELLO.
- The target must be on the allow-list; the refusal is authenticated so the client can say why.
- The table is bounded (`Limits`: in total, per client source, by memory); closed sessions
  linger briefly as tombstones that answer stragglers with CLOSE, then go.
- A path's reply address moves only to an address that sent a fresh authenticated frame and
  then echoed a challenge; until then it gets at most 3x what it sent (core/addresses.py). A
  HELLO copy never takes over a path the session already has.
- A TCP connection must bind to a session within the handshake timeout; unbound ones are
  capped per source and in total.
- A frame for an unknown session that looks like a session frame gets a stateless RESET,
  smaller than the frame and rate-limited, so a client of a restarted exit learns it at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from dupsession.aio import framing
from dupsession.aio.bind import tune_stream
from dupsession.aio.driver import SessionDriver
from dupsession.aio.sockets import READ_BATCH, WRITE_HIGH_WATER, bind_udp
from dupsession.aio.udp import BatchSocket
from dupsession.control import STATE_NAMES
from dupsession.core import negotiate, wire
from dupsession.core.addresses import Verdict
from dupsession.core.handshake import (
    KNOWN_CRITICAL,
    HandshakeError,
    ServerHandshake,
    replay_expiry,
    reset_token,
)
from dupsession.core.session import Role, Session, SessionConfig, SessionState
from dupsession.pathspec import PathSpecError, parse_hostport
from dupsession.report import PathReport, SessionReport
from relayd import channel
from relayd.acl import AllowList
from relayd.exit import TARGET_HIGH_WATER, ExitSession, UdpPathReply, UdpReply
from relayd.limits import Limits, PerSourceBuckets, RateLimitedLog, TokenBucket
from relayd.replay import ReplayJournal
from relayd.workers import Worker, WorkerPool

log = logging.getLogger("relayd")
_DATA = int(wire.FrameType.DATA)
_DATA_MIN = wire.DATA_HEADER.size + wire.TAG_SIZE

#: At shutdown, CLOSE goes out this many times on every path, this far apart (s).
CLOSE_REPEATS = 3
CLOSE_REPEAT_INTERVAL = 0.02
#: A closed session answers stragglers with CLOSE for this long (s), then is forgotten.
TOMBSTONE_LINGER = 30.0
#: A datagram this short (bytes) is a keystroke, an echo or an ACK, not a transfer's frame
#: (1232): an interactive session fed one flushes at once (`SessionDriver.prompt`), not at
#: the end of the read, which drains up to READ_BATCH datagrams of every session (another
#: session's ACKs: 5-12 ms of CPU per read, up to 30 ms of wall time on the busy netlab).
PROMPT_INPUT = 512


#: Paths per session: M uplinks x (N relays + direct) stays well below this.
MAX_PATHS = 32
#: RESET answers: at most this many per second overall (bursts of as many).
RESET_RATE = 50.0
#: RESETs per second (burst twice that) for one source address, before the global budget: a
#: junk flood from one source cannot starve the clients of a restarted exit (review A14).
RESET_RATE_PER_SOURCE = 5.0


@dataclass(frozen=True, slots=True)
class ExitConfig:
    listen: tuple[str, int]
    psk: bytes
    allow: AllowList
    max_sessions: int | None = None  #: shorthand for `limits.max_sessions`
    session: SessionConfig = field(default_factory=SessionConfig)
    #: More accepted keys (rotation: old and new at once); `psk` is the first.
    extra_keys: tuple[bytes, ...] = ()
    limits: Limits = field(default_factory=Limits)
    #: Where the replay memory lives (None: RAM only, lost on restart).
    state_dir: Path | None = None

    @property
    def keys(self) -> tuple[bytes, ...]:
        return (self.psk, *(k for k in self.extra_keys if k != self.psk))

    def effective_limits(self) -> Limits:
        if self.max_sessions is None:
            return self.limits
        return replace(self.limits, max_sessions=self.max_sessions)

    def session_config(self) -> SessionConfig:
        """The exit's sessions buffer at most `session_buffer` each way."""
        buffer = self.effective_limits().session_buffer
        return replace(
            self.session,
            window_bytes=min(self.session.window_bytes, buffer),
            window_frames=min(self.session.window_frames, buffer // wire.MAX_DATAGRAM_PAYLOAD),
        )


def _fit_descriptors(limits: Limits) -> Limits:
    """Check the limits and fit them to the descriptor limit: unbound connections may take a
    quarter of the descriptors and sessions (a target connection each, plus paths) half, so
    neither can starve the other or the listeners."""
    limits.check()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return limits
    pending = max(1, min(limits.max_pending, soft // 4))
    # One source may hold at most a quarter of the unbound slots, so it cannot take them all.
    per_source = max(1, min(limits.max_pending_per_source, pending // 4))
    sessions = max(1, min(limits.max_sessions, soft // 2))
    if (pending, per_source, sessions) != (
        limits.max_pending,
        limits.max_pending_per_source,
        limits.max_sessions,
    ):
        log.info(
            "descriptor limit %d: at most %d unauthenticated connections (%d per source) and "
            "%d sessions",
            soft,
            pending,
            per_source,
            sessions,
        )
        limits = replace(
            limits, max_pending=pending, max_pending_per_source=per_source, max_sessions=sessions
        )
    return limits


class _StreamConnection(asyncio.BufferedProtocol):
    """One TCP path connection at the exit; bound to a session by its first valid frame.

    The transport reads into a shared buffer and frames are cut from it with one copy
    (`framing.BufferedDeframer`)."""

    datagram = False

    def __init__(self, server: ExitServer, initial: bytes = b"") -> None:
        self.server = server
        self.deframer = framing.BufferedDeframer()
        self.transport: asyncio.Transport | None = None
        self.session: ExitSession | None = None
        self.path_id: int | None = None
        #: A session worker's: what the dispatcher read before it passed the connection on.
        self.initial = initial
        #: Set by `ExitServer.stream_frame`: the session is a worker's, pass the connection on.
        self.handoff: Worker | None = None
        #: Passed on to this worker under this token, not yet SETTLED (`_hand_over`).
        self.away: tuple[Worker, int] | None = None

        self.peer: tuple[str, int] = ("?", 0)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport = writer
        writer.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_stream(sock)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        # Unbound until its first valid frame: capped and timed (a silent connection must not
        # pin a descriptor and a buffer forever).
        if not self.server.admit_pending(self):
            self.drop()
            return
        self._deadline = asyncio.get_running_loop().call_later(
            self.server.limits.handshake_timeout, self._handshake_timeout
        )
        initial, self.initial = self.initial, b""
        for start in range(0, len(initial), framing.READ_SIZE):
            chunk = initial[start : start + framing.READ_SIZE]
            self.get_buffer(len(chunk))[: len(chunk)] = chunk
            self.buffer_updated(len(chunk))
            if self.transport is None or self.transport.is_closing():
                break

    def _handshake_timeout(self) -> None:
        self._deadline = None
        if self.away is not None:
            self.bound()  # its worker's own deadline drops it now: its slot here is free
            return
        if self.session is None:
            self.server.refused_log.warning(
                "handshake timeout from %s port %d: no valid frame in %.0f s",
                *self.peer,
                self.server.limits.handshake_timeout,
            )
            self.drop()

    def bound(self) -> None:
        """The connection carries a session path now (or, passed on, its worker's): no longer
        pending."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.away is not None:
            worker, token = self.away
            self.away = None
            worker.handed.pop(token, None)
        self.server.release_pending(self)

    def send_frames(self, frames: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(framing.pieces(frames))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.deframer.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self.deframer.buffer_updated(nbytes)
        except framing.FramingError:
            self.drop()
            return
        session, path_id = self.session, self.path_id
        if session is not None and path_id is not None and frames:
            # A bound connection: its DATA frames of this read go to the session in one batch
            # (one clock read, one flush). Any other frame, or one naming another session or
            # version, takes the full path below, in order.
            sid, batch = session.accepted.hello.session_id, []
            for i, frame in enumerate(frames):
                if frame[1] == _DATA and frame[0] == wire.VERSION and frame.startswith(sid, 4):
                    batch.append(frame)
                    continue
                frames = frames[i:]
                break
            else:
                frames = []
            if batch:
                session.driver.frames_received(batch, path_id)
        for i, frame in enumerate(frames):
            if not self.server.stream_frame(self, frame):
                if self.handoff is not None:
                    self._hand_over(self.handoff, frames[i:])
                else:
                    self.drop()
                break
        self.server.prompt()

    def _hand_over(self, worker: Worker, frames: list[bytes]) -> None:
        """Pass the connection to the session's worker with every byte read and not yet
        handled (these frames, then the partial one): the worker reads on where we stop, so
        no byte is lost or read twice. If the channel cannot take it, the connection is
        dropped (the client's path reconnects)."""
        data = framing.pack(frames) + self.deframer.pending()
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        token = None
        if sock is not None:
            fd = os.dup(sock.fileno())
            try:
                token = worker.send_stream(fd, self.peer, data, self.bound)
            finally:
                os.close(fd)  # the worker holds its own copy now (or none: dropped)
            if token is None:
                log.warning("session worker %d: cannot pass a connection on", worker.pid)
        if token is None:
            self.bound()  # gone: no longer ours to time or count
        else:
            # Security: its first frame only named a worker's session (an id anyone on the
            # path sees), nothing is verified yet: it stays counted against its source's and
            # the total unauthenticated limits until its worker says it bound or closed
            # (SETTLED), or our handshake deadline passes, so those limits bound the
            # hand-overs in flight as they bound our own unbound connections.
            self.away = (worker, token)
        if transport is not None:
            # Closes our descriptor only: the connection lives on in the worker.
            transport.abort()

    def pause_writing(self) -> None:
        self._writable(False)

    def resume_writing(self) -> None:
        self._writable(True)

    def _writable(self, writable: bool) -> None:
        if self.session is not None and self.path_id is not None:
            self.session.driver.set_path_writable(self.path_id, writable)

    def note_peer(self, exit_session: ExitSession, path_id: int) -> None:
        """Remember who is at the other end, for status views."""
        exit_session.stream_peers[path_id] = self.peer

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deframer.release()
        if self.away is None:  # one passed on stays counted until it is SETTLED
            self.bound()
        if self.session is not None and self.path_id is not None:
            self.session.driver.detach(self.path_id, self)
            self.server.stream_closed(self.session)
        self.transport = None


class _UdpBatch:
    """Consecutive DATA datagrams for one session's path, fed to its driver together."""

    __slots__ = ("addr", "driver", "frames", "path_id", "session_id")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.driver: SessionDriver | None = None
        self.session_id, self.path_id, self.addr = b"", 0, ("", 0)

    def take(self, sessions: dict[bytes, ExitSession], data: bytes, addr: tuple[str, int]) -> bool:
        """Add `data` if it is a DATA frame from the address of a path of a known session
        (the batch's own, or a new batch's once this one is flushed); False: not batched."""
        if len(data) < _DATA_MIN or data[1] != _DATA or data[0] != wire.VERSION:
            return False
        if self.frames and addr == self.addr and data.startswith(self.session_id, 4):
            self.frames.append(data)
            return True
        exit_session = sessions.get(data[4:12])
        if exit_session is None:
            return False
        path_id = exit_session.addresses.path_of(addr)
        if path_id is None:
            return False  # an unknown source: `_udp_frame` feeds it as of no path
        self.flush()
        self.frames.append(data)
        self.driver, self.path_id, self.addr = exit_session.driver, path_id, addr
        self.session_id = data[4:12]
        return True

    def flush(self) -> None:
        if self.frames and self.driver is not None:
            frames, self.frames = self.frames, []
            self.driver.frames_received(frames, self.path_id)
            if len(frames) == 1 and len(frames[0]) <= PROMPT_INPUT:
                self.driver.prompt()


class ExitServer:
    #: False in a session worker (relayd/worker.py), which never starts workers itself.
    spawns_workers = True

    def __init__(self, config: ExitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock  #: monotonic seconds, for every session's driver and the tables
        self.limits = _fit_descriptors(config.effective_limits())
        self.handshakes = [ServerHandshake(psk) for psk in config.keys]
        self.session_config = config.session_config()
        self.sessions: dict[bytes, ExitSession] = {}
        #: Drivers whose flush the current input callback made pending (`prompt`).
        self._poked: list[SessionDriver] = []
        self._udp: socket.socket | None = None
        self._udp_io: BatchSocket | None = None
        self._tcp: asyncio.Server | None = None
        self._loop = asyncio.get_running_loop()
        self.address: tuple[str, int] | None = None
        self.rejected_frames = 0
        self.stale_frames = 0
        self.resets_sent = 0
        self._pending: set[_StreamConnection] = set()
        self._pending_by_source: dict[str, int] = {}
        self._reset_bucket = TokenBucket(RESET_RATE, RESET_RATE)
        self._reset_sources = PerSourceBuckets(RESET_RATE_PER_SOURCE, 2 * RESET_RATE_PER_SOURCE)
        self.refused_log = RateLimitedLog(log)
        self._journal: ReplayJournal | None = None
        if config.state_dir is not None:
            self._journal = ReplayJournal(config.state_dir)
        #: `--session-processes N`: sessions served by worker processes (relayd/workers.py).
        self.workers: WorkerPool | None = None

    @property
    def handshake(self) -> ServerHandshake:
        """The handshake of the first key (what a single-key exit uses)."""
        return self.handshakes[0]

    async def start(self) -> None:
        if self._journal is not None:
            now = time.time()
            remembered = self._journal.load(now)
            for nonce, expiry, sid in remembered:
                for handshake in self.handshakes:
                    handshake.remember(nonce, expiry, sid)
            log.info(
                "replay memory %s: %d nonce(s) of still valid HELLOs",
                self._journal.path,
                len(remembered),
            )
        host, port = self.config.listen
        if self.limits.session_processes > 0 and self.spawns_workers:
            udp = await self._group_listener(host, port)
        else:
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
        if self.limits.session_processes > 0 and self.spawns_workers:
            self.workers = WorkerPool(
                self._worker_config, self.limits.session_processes, self._udp_frame
            )
            self.workers.start()
            log.info("sessions in worker processes: at most %d", self.limits.session_processes)
        log.info("relayd exit listening on %s:%d (udp+tcp)", *self.address)

    async def _group_listener(self, host: str, port: int) -> socket.socket:
        """The UDP listener as the first socket of a reuseport group (relayd/reuseport.py)."""
        from relayd import reuseport

        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return reuseport.listener(str(infos[0][4][0]), port)

    def _worker_config(self) -> bytes:
        """The CONFIG message for a session worker: this configuration without the state
        directory (the replay journal is the dispatcher's alone), and the listen address."""
        config = replace(self.config, state_dir=None)
        level = logging.getLogger().getEffectiveLevel()
        return channel.CONFIG + pickle.dumps((config, self.address, level))

    def reconfigure(self, config: ExitConfig) -> None:
        """SIGHUP: new allow-list, limits and keys; live sessions stay (but those of a key no
        longer listed are closed: that is what revoking a key means)."""
        limits = _fit_descriptors(config.effective_limits())
        old = {h.psk_id: h for h in self.handshakes}
        self.handshakes = [
            old.get(ServerHandshake.key_id(k)) or ServerHandshake(k) for k in config.keys
        ]
        kept = {h.psk_id for h in self.handshakes}
        for exit_session in list(self.sessions.values()):
            if exit_session.key_id not in kept and exit_session.closed is None:
                exit_session.abort(wire.CloseCode.SHUTDOWN, "the exit revoked this session's key")
        self.config = config
        self.limits = limits
        self.session_config = config.session_config()
        if self.workers is not None:
            self.workers.reconfigure(limits.session_processes)
        elif limits.session_processes > 0 and self.spawns_workers:
            log.warning("reload: session_processes takes a restart to turn on; ignored")
        log.info(
            "configuration reloaded: %d allow entr%s, %d key(s), %d session(s) kept",
            len(config.allow.entries),
            "y" if len(config.allow.entries) == 1 else "ies",
            len(self.handshakes),
            sum(1 for s in self.sessions.values() if s.closed is None)
            + (len(self.workers.sessions) if self.workers is not None else 0),
        )

    # -- unbound TCP connections -----------------------------------------------------------

    def admit_pending(self, conn: _StreamConnection) -> bool:
        source = conn.peer[0]
        limits = self.limits
        count = self._pending_by_source.get(source, 0)
        if len(self._pending) >= limits.max_pending:
            self.refused_log.warning(
                "refused connection from %s port %d: %d unauthenticated connections in total",
                *conn.peer,
                limits.max_pending,
            )
            return False
        if count >= limits.max_pending_per_source:
            self.refused_log.warning(
                "refused connection from %s port %d: %d unauthenticated connections from it",
                *conn.peer,
                limits.max_pending_per_source,
            )
            return False
        self._pending.add(conn)
        self._pending_by_source[source] = count + 1
        return True

    def release_pending(self, conn: _StreamConnection) -> None:
        if conn in self._pending:
            self._pending.discard(conn)
            source = conn.peer[0]
            left = self._pending_by_source.get(source, 1) - 1
            if left > 0:
                self._pending_by_source[source] = left
            else:
                self._pending_by_source.pop(source, None)

    def stream_closed(self, exit_session: ExitSession) -> None:
        """A session's TCP connection closed: if it has no path left at all (every path a TCP
        connection, each one closed), the client is most likely gone for good; give it
        `orphan_grace` to reconnect, not the whole grace period."""
        if exit_session.closed is not None or not exit_session.orphaned():
            return
        grace = self.limits.orphan_grace

        def check() -> None:
            if exit_session.closed is None and exit_session.orphaned():
                exit_session.abort(
                    wire.CloseCode.TIMEOUT, f"every connection closed for {grace:.0f} s"
                )

        self._loop.call_later(grace, check)

    # -- UDP ---------------------------------------------------------------------------------

    def _udp_readable(self) -> None:
        """Drain the socket: up to READ_BATCH datagrams per wake-up. A run of DATA frames of
        one session from one known path address goes to its session as one batch
        (`SessionDriver.frames_received`: one clock read and one flush, and the session takes
        in-order frames as one run), across reads; anything else ends the run and is handled
        alone, in arrival order (`_udp_frame`)."""
        io = self._udp_io
        if io is None:
            return
        batch = _UdpBatch()
        count = 0
        while count < READ_BATCH:
            try:
                frames, addr = io.recv_frames()
            except OSError:  # BlockingIOError included: the socket is drained
                break
            if addr is not None:  # always, on this unconnected socket
                self._udp_input(frames, addr, batch)
            count += len(frames)
        batch.flush()
        self.prompt()

    def _udp_input(self, frames: list[bytes], addr: tuple[str, int], batch: _UdpBatch) -> None:
        for data in frames:
            if not batch.take(self.sessions, data, addr):
                batch.flush()
                self._udp_frame(data, addr)

    def prompt(self) -> None:
        """At the end of every input callback (a UDP read, a TCP path's read, a target's):
        the sessions it poked flush now if they are interactive (`SessionDriver.prompt`), so
        a keystroke or its echo does not wait for the next loop turn's timers (another
        session's paced bursts) and ready callbacks. A transfer's flush stays where it was."""
        poked = self._poked
        if poked:
            drivers = poked[:]
            poked.clear()  # what these flushes poke goes in the list again, for the next one
            for driver in drivers:
                driver.prompt()

    def _udp_frame(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < wire.PREFIX.size + wire.TAG_SIZE or data[0] != wire.VERSION:
            self.rejected_frames += 1
            return
        io = self._udp_io
        assert io is not None
        if data[1] == wire.FrameType.HELLO:
            self._hello(data, UdpReply(io, addr), addr)
            return
        exit_session = self.sessions.get(data[4:12])
        if exit_session is None:
            workers = self.workers
            worker = workers.worker_of(data[4:12]) if workers is not None else None
            if workers is not None and worker is not None:
                workers.forward(worker, data, addr)  # no socket for this address there (yet)
                return
            self.rejected_frames += 1
            self._reset(data, UdpReply(io, addr), addr[0])
            return
        book = exit_session.addresses
        driver = exit_session.driver
        named = driver.frame_received(data, book.path_of(addr))
        if len(data) <= PROMPT_INPUT:
            driver.prompt()
        if named is None or driver.state is SessionState.CLOSED:
            return  # not a fresh authenticated ACK: it moves nothing
        paths = driver.path_kinds()
        if named not in paths:  # first frame of a path the session had not joined
            if len(paths) >= MAX_PATHS:
                return  # bounded work per session: a key holder cannot name 255 paths
            driver.attach(named, UdpPathReply(io, book, named), datagram=True, link=addr[0])
            if driver.frame_received(data, named) is None:
                return
        self._validate(exit_session, named, addr, len(data), driver.path_echo(named))

    def _validate(
        self, exit_session: ExitSession, path_id: int, addr: tuple[str, int], size: int, echo: int
    ) -> None:
        """A fresh authenticated frame for a datagram path came from `addr`: challenge the
        address, or make it the path's reply address once it echoed a challenge."""
        book = exit_session.addresses
        before = book.validated.get(path_id)
        now = self.clock()
        verdict = book.heard(path_id, addr, size, echo, now)
        if verdict is Verdict.VALIDATED:
            log.debug("session %s: path %d validated at %s:%d", exit_session.label, path_id, *addr)
            if before is not None:
                log.info(
                    "session %s: path %d moved %s:%d -> %s:%d",
                    exit_session.label,
                    path_id,
                    *before,
                    *addr,
                )
            exit_session.driver.poke()
        elif verdict is Verdict.CHALLENGE:
            self._challenge(exit_session, path_id, addr, now)

    def _challenge(
        self, exit_session: ExitSession, path_id: int, addr: tuple[str, int], now: float
    ) -> None:
        """Send `addr` a challenge for the path, within its anti-amplification budget."""
        book = exit_session.addresses
        frame = exit_session.driver.challenge_frame(path_id, book.challenge(path_id, addr, now))
        if frame is not None and book.spend(path_id, addr, len(frame)):
            assert self._udp_io is not None
            self._udp_io.send_frames([frame], addr)

    # -- stateless reset -------------------------------------------------------------------------

    def _reset(self, frame: bytes, reply: UdpReply | _StreamConnection, source: str) -> None:
        """Tell a client its session is unknown here (the exit restarted or dropped it).

        Only for frames that look like a session's (DATA or ACK) and are larger than every
        RESET sent in answer (one per accepted key), at most `RESET_RATE_PER_SOURCE` per second
        per source and `RESET_RATE` in all: a RESET never amplifies, a flood of triggers gets a
        trickle, and one source's flood leaves the others theirs.
        """
        if frame[1] not in (wire.FrameType.DATA, wire.FrameType.ACK):
            return
        keys = self.config.keys
        if len(frame) <= wire.RESET_SIZE * len(keys):
            return
        if not self._reset_sources.take(source) or not self._reset_bucket.take():
            return
        sid, path_id = frame[4:12], frame[3]
        reply.send_frames([wire.encode_reset(reset_token(psk, sid), sid, path_id) for psk in keys])
        self.resets_sent += 1

    # -- TCP ---------------------------------------------------------------------------------

    def stream_frame(self, conn: _StreamConnection, frame: bytes) -> bool:
        """Handle one frame from a TCP path; False means drop the connection silently."""
        if frame[0] != wire.VERSION:
            return False
        if frame[1] == wire.FrameType.HELLO:
            return self._hello(frame, conn, conn.peer)
        exit_session = conn.session or self.sessions.get(frame[4:12])
        if exit_session is None:
            if conn.session is None:
                worker = self.workers.worker_of(frame[4:12]) if self.workers is not None else None
                if worker is not None:  # a worker's session: the connection goes there
                    conn.handoff = worker
                    return False
                self._reset(frame, conn, conn.peer[0])  # unknown session, fresh connection
                return False
            return True
        if frame[4:12] != exit_session.accepted.hello.session_id:
            return conn.session is not None
        driver = exit_session.driver
        named = driver.frame_received(frame, conn.path_id)
        # Only a fresh authenticated ACK binds a connection to a path: a replayed one (or a
        # replayed HELLO) on another connection never takes a live path over.
        if named is not None and named != conn.path_id and driver.state is not SessionState.CLOSED:
            paths = driver.path_kinds()
            new_path = named not in paths
            if new_path and len(paths) >= MAX_PATHS:
                return True
            conn.session, conn.path_id = exit_session, named
            conn.bound()
            driver.attach(named, conn, datagram=False, link=conn.peer[0])
            conn.note_peer(exit_session, named)
            if new_path:
                driver.frame_received(frame, named)
        return True

    # -- handshake -----------------------------------------------------------------------------

    def _verify_hello(
        self, frame: bytes, unix_now: float, source: tuple[str, int]
    ) -> tuple[ServerHandshake, wire.Hello] | None:
        """The HELLO verified under one of the accepted keys, or None (logged, rate-limited)."""
        for handshake in self.handshakes:
            try:
                return handshake, handshake.verify_hello(frame, unix_now)
            except wire.FrameError:
                continue  # wrong key for this one: try the next
            except HandshakeError as exc:
                self.refused_log.warning("refused handshake from %s port %d: %s", *source, exc)
                return None
        self.rejected_frames += 1
        self.refused_log.warning("refused handshake from %s port %d: bad key or garbage", *source)
        return None

    def _hello(
        self, frame: bytes, reply: UdpReply | _StreamConnection, source: tuple[str, int]
    ) -> bool:
        unix_now = time.time()
        verified = self._verify_hello(frame, unix_now, source)
        if verified is None:
            return False  # wrong key, garbage, stale or replayed: no answer at all
        handshake, hello = verified
        existing = self.sessions.get(hello.session_id)
        if existing is not None:
            if existing.accepted.hello.client_nonce != hello.client_nonce:
                return False
            # Another path's copy (or a resend): the same answer, smaller than the HELLO.
            # A path the session already has is never taken over by a HELLO (it may be a
            # replay from elsewhere): only a fresh ACK, and for UDP a validated address, moves
            # a path. A path id new to the session joins.
            reply.send_frames(
                [existing.accepted.welcome_frame(handshake.auth, hello.path_id, frame[-16:])]
            )
            paths = existing.driver.path_kinds()
            if hello.path_id not in paths and len(paths) < MAX_PATHS:
                self._join(existing, hello.path_id, reply, len(frame))
            return True
        remote = self.workers.session(hello.session_id) if self.workers is not None else None
        if remote is not None:  # a resend or a JOIN of a worker's session: its worker answers
            same = remote.client_nonce == hello.client_nonce
            return same and self._to_worker(remote.worker, frame, reply)
        if handshake.seen(hello):
            # Its session is gone (closed, tombstone expired, or before a restart): a replay.
            self.refused_log.warning(
                "refused handshake from %s port %d: replayed hello (session %s)",
                *source,
                hello.session_id.hex(),
            )
            return False
        refusal = self._refusal(hello, source)
        if refusal is not None:
            status, reason = refusal
            self.refused_log.warning(
                "refused session %s from %s port %d: %s", hello.session_id.hex(), *source, reason
            )
            reply.send_frames([handshake.refusal_frame(frame, hello, status, reason)])
            return True
        handed = self._new_remote(handshake, hello, frame, reply, source, unix_now)
        if handed is not None:
            return handed  # a worker's now (None: no workers, or none to be had)
        host, port = (
            ("probe", 0) if hello.target == wire.PROBE_TARGET else (parse_hostport(hello.target))
        )
        welcome_options, _ = negotiate.answer(hello.options)
        try:
            accepted = handshake.accept(hello, unix_now, welcome_options)
        except HandshakeError as exc:
            self.refused_log.warning("refused handshake from %s port %d: %s", *source, exc)
            return False
        if self._journal is not None:
            try:
                expiry = replay_expiry(hello, unix_now)  # as long as the HELLO is valid
                self._journal.append(hello.client_nonce, expiry, hello.session_id, unix_now)
            except OSError as exc:
                log.warning("replay memory not written (%s): %s", self._journal.path, exc)
        exit_session = ExitSession(accepted, self._make_driver, host, port)
        exit_session.key_id = handshake.psk_id
        exit_session.source = source[0]
        exit_session.on_finished = self._finished
        exit_session.after_input = self.prompt
        self.sessions[hello.session_id] = exit_session
        welcome = accepted.welcome_frame(handshake.auth, hello.path_id, frame[-16:])
        self._join(exit_session, hello.path_id, reply, len(frame), welcome)
        log.info(
            "session %s: opened for target %s from %s", exit_session.label, hello.target, source[0]
        )
        self._loop.create_task(exit_session.connect_target())
        return True

    def _new_remote(
        self,
        handshake: ServerHandshake,
        hello: wire.Hello,
        frame: bytes,
        reply: UdpReply | _StreamConnection,
        source: tuple[str, int],
        unix_now: float,
    ) -> bool | None:
        """A verified, permitted new session goes to a worker, which re-runs the handshake
        on the HELLO and answers it. Its nonce is remembered and journaled here first, as for
        a session of our own: the worker's death never makes the HELLO replayable. None: no
        worker could be had (the caller serves the session itself)."""
        if self.workers is None or not self.workers.available():
            return None
        try:
            # Only for what it records (the nonce, within the replay memory's bound): the
            # worker makes the session's keys.
            handshake.accept(hello, unix_now)
        except HandshakeError as exc:
            self.refused_log.warning("refused handshake from %s port %d: %s", *source, exc)
            return False
        if self._journal is not None:
            try:
                expiry = replay_expiry(hello, unix_now)
                self._journal.append(hello.client_nonce, expiry, hello.session_id, unix_now)
            except OSError as exc:
                log.warning("replay memory not written (%s): %s", self._journal.path, exc)
        worker = self.workers.assign(
            hello.session_id, hello.client_nonce, source[0], handshake.psk_id
        )
        if worker is None:
            return None
        log.info(
            "session %s: for target %s from %s, to worker %d",
            hello.session_id.hex(),
            hello.target,
            source[0],
            worker.pid,
        )
        return self._to_worker(worker, frame, reply, fresh=True)

    def _to_worker(
        self,
        worker: Worker,
        frame: bytes,
        reply: UdpReply | _StreamConnection,
        fresh: bool = False,
    ) -> bool:
        """A HELLO for a worker's session: a datagram goes there with its source address, a
        TCP connection is passed on by its caller (False here: `handoff` is set)."""
        if isinstance(reply, UdpReply):
            assert self.workers is not None
            if fresh:
                # Security: the first HELLO of a session just assigned bypasses the forwarding
                # rate limits: it is verified, its nonce fresh and now remembered (a resend
                # would be refused as a replay once the worker exits), and it is bounded by
                # the session limits. Defence in depth: a just-assigned worker's buckets are
                # fresh and no junk can name its session before this HELLO, so no test can
                # make the limits refuse it; the per-(worker, source) buckets that keep other
                # sessions' junk off it are test_a_verified_hello_passes_a_flooded_source's.
                worker.send_datagram(frame, reply.addr)
            else:
                self.workers.forward(worker, frame, reply.addr)
            return True
        if reply.session is not None:
            return True  # a connection bound to a session here stays with it
        reply.handoff = worker
        return False

    def _refusal(self, hello: wire.Hello, source: tuple[str, int]) -> tuple[int, str] | None:
        limits = self.limits
        remote = self.workers.sessions if self.workers is not None else {}
        if len(self.sessions) + len(remote) >= limits.max_sessions:
            return wire.WelcomeStatus.FULL, "exit is full"
        critical = wire.unknown_critical(hello.options, KNOWN_CRITICAL)
        if critical:  # the client relies on something this exit does not do: say so, never guess
            return wire.WelcomeStatus.UNSUPPORTED, f"exit does not implement option(s) {critical}"
        mine = sum(1 for s in self.sessions.values() if s.source == source[0])
        mine += sum(1 for r in remote.values() if r.source == source[0])
        if mine >= limits.max_sessions_per_source:
            return wire.WelcomeStatus.FULL, (
                f"exit is full for {source[0]}: {limits.max_sessions_per_source} sessions"
            )
        worst = 2 * self.session_config.window_bytes + 2 * TARGET_HIGH_WATER
        if (len(self.sessions) + len(remote) + 1) * worst > limits.memory_limit:
            return wire.WelcomeStatus.FULL, "exit is full: memory limit reached"
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
        self,
        exit_session: ExitSession,
        path_id: int,
        reply: UdpReply | _StreamConnection,
        hello_size: int,
        welcome: bytes | None = None,
    ) -> None:
        """A HELLO's path joins the session (its WELCOME, if given, goes out first)."""
        if isinstance(reply, UdpReply):
            assert self._udp_io is not None
            book = exit_session.addresses
            exit_session.driver.attach(
                path_id, UdpPathReply(self._udp_io, book, path_id), True, link=reply.addr[0]
            )
            # The HELLO's source is not validated either: it gets at most 3x the HELLO until
            # it echoes a challenge (a key holder could have spoofed it).
            now = self.clock()
            verdict = book.heard(path_id, reply.addr, hello_size, 0, now)
            if welcome is not None and book.spend(path_id, reply.addr, len(welcome)):
                reply.send_frames([welcome])
            if verdict is Verdict.CHALLENGE:
                self._challenge(exit_session, path_id, reply.addr, now)
        else:
            if welcome is not None:
                reply.send_frames([welcome])
            reply.session, reply.path_id = exit_session, path_id
            reply.bound()
            exit_session.driver.attach(path_id, reply, datagram=False, link=reply.peer[0])
            reply.note_peer(exit_session, path_id)

    def _make_driver(self, exit_session: ExitSession) -> SessionDriver:
        hello = exit_session.accepted.hello
        _, features = negotiate.answer(hello.options)  # the same answer its WELCOME carries
        session = Session(
            Role.EXIT,
            hello.session_id,
            exit_session.accepted.keys,
            self.clock(),
            self.session_config,
            features,
        )
        return SessionDriver(session, exit_session, self.clock, poked=self._poked)

    def _finished(self, exit_session: ExitSession) -> None:
        sid = exit_session.accepted.hello.session_id

        def forget() -> None:
            if self.sessions.get(sid) is exit_session:
                del self.sessions[sid]
                exit_session.driver.stop()

        self._loop.call_later(TOMBSTONE_LINGER, forget)

    # -- observation ---------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every session in the table, for the control socket (SESSION documents)."""
        return [report.as_dict() for report in self.reports()]

    def reports(self) -> list[SessionReport]:
        """Every session in the table, for the control socket and the metrics (a worker's
        as it last pushed them)."""
        reports = self.workers.reports() if self.workers is not None else []
        for exit_session in self.sessions.values():
            driver = exit_session.driver
            core = replace(driver.snapshot(), state=STATE_NAMES[driver.state])
            sources = exit_session.addresses.addresses()
            sources.update(exit_session.stream_peers)
            paths = []
            for path in core.paths:
                addr = sources.get(path.id)
                kind = "udp" if path.kind == "datagram" else "tcp"
                spec = f"{kind} from {addr[0]}:{addr[1]}" if addr else f"{kind} path"
                paths.append(PathReport(path.id, path.state, path, spec=spec, uplink="-", via="-"))
            reports.append(
                SessionReport(
                    role=core.role,
                    state=core.state,
                    age=core.age,
                    bytes_out=core.bytes_out,
                    bytes_in=core.bytes_in,
                    paths=tuple(paths),
                    target=exit_session.target_name,
                    core=core,
                )
            )
        return reports

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self, reason: str = "exit shutting down") -> None:
        if self.workers is not None:
            await self.workers.close(reason)  # each worker CLOSEs its sessions three times
        live = [s for s in self.sessions.values() if s.closed is None]
        for exit_session in live:
            exit_session.abort(wire.CloseCode.SHUTDOWN, reason)
        for _ in range(CLOSE_REPEATS - 1):  # a lost CLOSE would leave a client waiting
            await asyncio.sleep(CLOSE_REPEAT_INTERVAL)
            for exit_session in live:
                exit_session.driver.repeat_close()
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
