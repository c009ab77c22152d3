"""A session worker: one exit session in a process of its own (`python -m relayd.worker FD`).

Spawned by the dispatcher (relayd/workers.py) with one end of a SOCK_SEQPACKET socketpair
(relayd/channel.py). It serves exactly the session the dispatcher ASSIGNs it with the exit's
own code (`ExitServer`), minus the listeners:

- it re-runs the handshake on the forwarded HELLO (its own key pair and WELCOME; the
  dispatcher verified the HELLO, checked limits, allow-list and replay, and journaled it);
- it answers each client address from a socket of its own in the listener's SO_REUSEPORT
  group, connected to that address (relayd/reuseport.py): from then on the kernel delivers
  that address's datagrams here, not to the dispatcher;
- it adopts the TCP connections the dispatcher passes with the bytes already read;
- it pushes its SESSION documents every `SNAPSHOT_INTERVAL` and at once when the session
  opens or closes, for `relayd status` and the metrics;
- it exits once its session is gone (closed and its tombstone expired), when no session
  arrives within the handshake timeout (`Limits.handshake_timeout`) of the ASSIGN, when told
  to QUIT, or when the dispatcher goes (EOF).

Security rules applied here: only an ASSIGNed session id opens a session (a HELLO for any
other, from the network or on an adopted connection, is dropped: every new session passes the
dispatcher's checks and journal); a datagram for another session that reaches one of its
sockets goes back to the dispatcher (BOUNCE), never answered here; at most `MAX_PEER_SOCKETS`
sockets (the least recently used closes first: its address then reaches the dispatcher,
which forwards it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import signal
import socket
import sys
from collections import OrderedDict

from dupsession.aio.loop import run
from dupsession.aio.sockets import READ_BATCH
from dupsession.aio.udp import BatchSocket
from relayd import channel, reuseport
from relayd.exit import ExitSession, UdpReply
from relayd.server import (
    MAX_PATHS,
    TOMBSTONE_LINGER,
    ExitConfig,
    ExitServer,
    _StreamConnection,
    _UdpBatch,
)

log = logging.getLogger("relayd")

#: Session documents go to the dispatcher this often (s), and when the session opens.
SNAPSHOT_INTERVAL = 0.5
#: The CONFIG must come within this (s) of the start (the session within the configured
#: handshake timeout of its ASSIGN, as a TCP connection's first valid frame must).
CONFIG_TIMEOUT = 10.0
#: Connected sockets per worker: every path's address and a few old ones (roaming).
MAX_PEER_SOCKETS = 2 * MAX_PATHS


class PeerSockets:
    """The worker's datagram side: one connected socket per client address, made when the
    session first sends there (an address the session's address book accepted)."""

    def __init__(self, server: WorkerServer, local: tuple[str, int]) -> None:
        self.server = server
        self.local = local
        self._loop = asyncio.get_running_loop()
        self._socks: OrderedDict[tuple[str, int], BatchSocket] = OrderedDict()

    def send_frames(self, frames: list[bytes], addr: tuple[str, int] | None = None) -> None:
        if addr is None:
            return
        io = self._socks.get(addr)
        if io is None:
            io = self._open(addr)
            if io is None:
                return  # loss, as a full socket buffer is
        else:
            self._socks.move_to_end(addr)  # least recently used first out
        io.send_frames(frames)

    def _open(self, addr: tuple[str, int]) -> BatchSocket | None:
        try:
            sock = reuseport.peer_socket(self.local, addr)
        except OSError as exc:
            log.warning("cannot open a socket to %s port %d: %s", addr[0], addr[1], exc)
            return None
        io = self._socks[addr] = BatchSocket(sock)
        self._loop.add_reader(sock.fileno(), self._readable, io, addr)
        while len(self._socks) > MAX_PEER_SOCKETS:
            _, old = self._socks.popitem(last=False)
            self._close(old)
        return io

    def _readable(self, io: BatchSocket, addr: tuple[str, int]) -> None:
        frames: list[bytes] = []
        with contextlib.suppress(OSError):  # an ICMP error: what was read before it stays
            io.read_connected(frames, READ_BATCH)
        if frames:
            if addr in self._socks:
                self._socks.move_to_end(addr)
            self.server.datagrams_in(frames, addr)

    def _close(self, io: BatchSocket) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(io.sock.fileno())
        io.sock.close()

    def close(self) -> None:
        for io in self._socks.values():
            self._close(io)
        self._socks.clear()


class WorkerServer(ExitServer):
    """`ExitServer` serving the sessions the dispatcher assigns, through `PeerSockets`."""

    spawns_workers = False

    def __init__(self, config: ExitConfig, chan: socket.socket, local: tuple[str, int]) -> None:
        super().__init__(config)
        self.channel = chan
        self.address = local
        self.assigned: set[bytes] = set()
        self.done = asyncio.Event()
        self.quit_reason = "exit shutting down"
        self.peers = PeerSockets(self, local)
        self._udp_io = self.peers  # type: ignore[assignment]  # duck-typed: send_frames
        self._ticker: asyncio.TimerHandle | None = None
        self._last_push = b""
        #: Adopted connections not yet bound or closed: the token the dispatcher counts them by.
        self._unsettled: dict[_StreamConnection, int] = {}

    async def start(self) -> None:
        self._loop.add_reader(self.channel.fileno(), self._channel_readable)
        self._tick()

    # -- the channel -----------------------------------------------------------------------

    def _channel_readable(self) -> None:
        for _ in range(64):
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, channel.MAX_MESSAGE, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        socket.close(fd)
                self._quit("exit shutting down")  # the dispatcher is gone
                return
            self._message(message, fds)
            self.prompt()

    def _message(self, message: bytes, fds: list[int]) -> None:
        kind, body = message[:1], message[1:]
        for fd in fds[1:] if kind == channel.STREAM else fds:
            socket.close(fd)  # only a STREAM carries one, and one only
        if kind == channel.DATAGRAM:
            addr, offset = channel.unpack_addr(body)
            self.datagrams_in([body[offset:]], addr)
        elif kind == channel.STREAM and fds:
            (token,) = channel.TOKEN.unpack_from(body)
            addr, offset = channel.unpack_addr(body[channel.TOKEN.size :])
            self._adopt(fds[0], addr, body[channel.TOKEN.size + offset :], token)
        elif kind == channel.ASSIGN:
            self.assigned.add(body[:8])
            # A worker holding a slot for a session that never comes must not live on.
            self._loop.call_later(self.limits.handshake_timeout, self._assign_timeout, body[:8])
        elif kind == channel.CONFIG:
            config, _, level = pickle.loads(body)  # from our parent: see relayd/channel.py
            logging.getLogger().setLevel(level)
            self.reconfigure(config)
        elif kind == channel.QUIT:
            self._quit(body.decode(errors="replace") or "exit shutting down")

    def _adopt(self, fd: int, peer: tuple[str, int], data: bytes, token: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            socket.close(fd)
            self._settle(token)
            return

        made: list[_StreamConnection] = []

        def connection() -> _StreamConnection:
            conn = _StreamConnection(self, initial=data)
            self._unsettled[conn] = token
            made.append(conn)
            return conn

        async def adopt() -> None:
            try:
                await self._loop.connect_accepted_socket(connection, sock)
            except OSError as exc:
                log.warning("cannot adopt a connection from %s port %d: %s", *peer, exc)
                sock.close()
                # The factory may have run: its entry goes too (no leak), and SETTLED is sent
                # once (not again if the connection was already released).
                if not made or self._unsettled.pop(made[0], None) is not None:
                    self._settle(token)

        self._loop.create_task(adopt())

    def release_pending(self, conn: _StreamConnection) -> None:
        """An adopted connection bound to the session or closed: the dispatcher, which still
        counts it as unauthenticated, is told (SETTLED)."""
        super().release_pending(conn)
        token = self._unsettled.pop(conn, None)
        if token is not None:
            self._settle(token)

    def _settle(self, token: int) -> None:
        channel.send(self.channel, channel.SETTLED + channel.TOKEN.pack(token))

    def _assign_timeout(self, session_id: bytes) -> None:
        if session_id not in self.sessions:
            log.warning(
                "session %s: no handshake within %.0f s",
                session_id.hex(),
                self.limits.handshake_timeout,
            )
            self.assigned.discard(session_id)
            if not self.sessions and not self.assigned:
                self._quit("no session")

    def _quit(self, reason: str) -> None:
        self.quit_reason = reason
        self.done.set()

    def _tick(self) -> None:
        self.push()
        self._ticker = self._loop.call_later(SNAPSHOT_INTERVAL, self._tick)

    def push(self) -> None:
        """The session documents to the dispatcher (unchanged ones too: ages move)."""
        message = channel.SNAPSHOT + json.dumps(self.snapshot()).encode()
        if len(message) <= channel.MAX_MESSAGE:
            channel.send(self.channel, message)

    # -- the exit's code, for assigned sessions only -----------------------------------------

    def datagrams_in(self, frames: list[bytes], addr: tuple[str, int]) -> None:
        batch = _UdpBatch()
        self._udp_input(frames, addr, batch)
        batch.flush()
        self.prompt()

    def _udp_frame(self, data: bytes, addr: tuple[str, int]) -> None:
        sid = data[4:12]
        if sid not in self.sessions and sid not in self.assigned:
            # Not ours (a client address two sessions share): the dispatcher decides.
            channel.send(self.channel, channel.datagram(channel.BOUNCE, data, addr))
            return
        super()._udp_frame(data, addr)

    def _hello(
        self, frame: bytes, reply: UdpReply | _StreamConnection, source: tuple[str, int]
    ) -> bool:
        sid = frame[4:12]
        if sid not in self.sessions and sid not in self.assigned:
            return False  # every new session passes the dispatcher first
        opened = sid not in self.sessions
        answered = super()._hello(frame, reply, source)
        if opened and sid in self.sessions:
            self.assigned.discard(sid)
            self.push()
        return answered

    def _finished(self, exit_session: ExitSession) -> None:
        self.push()
        sid = exit_session.accepted.hello.session_id

        def forget() -> None:
            if self.sessions.get(sid) is exit_session:
                del self.sessions[sid]
                exit_session.driver.stop()
            if not self.sessions and not self.assigned:
                self._quit("session gone")

        self._loop.call_later(TOMBSTONE_LINGER, forget)

    async def close(self, reason: str = "exit shutting down") -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await super().close(reason)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.channel.fileno())
        self.peers.close()


async def serve(chan: socket.socket) -> int:
    chan.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        message = await asyncio.wait_for(loop.sock_recv(chan, channel.MAX_MESSAGE), CONFIG_TIMEOUT)
    except (OSError, TimeoutError):
        return 1
    if message[:1] != channel.CONFIG:
        return 1
    config, local, level = pickle.loads(message[1:])  # from our parent: see relayd/channel.py
    logging.getLogger().setLevel(level)
    server = WorkerServer(config, chan, local)
    # A SIGTERM of its own (systemd stops the whole control group) ends it as a QUIT does:
    # its client gets a CLOSE, not silence until a RESET.
    loop.add_signal_handler(signal.SIGTERM, server._quit, "exit shutting down")
    await server.start()
    channel.send(chan, channel.READY)
    await server.done.wait()
    await server.close(server.quit_reason)
    await asyncio.sleep(0.05)  # let the CLOSE frames leave
    chan.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m relayd.worker FD (started by relayd serve)", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr, format="%(asctime)s relayd[worker %(process)d] %(levelname)s %(message)s"
    )
    # Ctrl-C in relayd's terminal and a SIGHUP to the process group reach the workers too:
    # the dispatcher tells them what to do (QUIT, the new CONFIG), the signal itself is not
    # theirs to act on (SIGHUP's default would end the session, SIGINT's print a traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    chan = socket.socket(fileno=int(args[0]))
    return run(serve(chan), service=True)


if __name__ == "__main__":
    sys.exit(main())
