"""SSH relay paths: any stock OpenSSH server as a relay, with nothing installed on it.

The path is a `direct-tcpip` channel (what `ssh -W` uses) from the SSH server to the exit's
TCP port, carrying the same length-prefixed frames as a TCP path; asyncssh uses the user's own
keys, agent, ~/.ssh/config and known_hosts.

Nagle: a stock sshd never sets TCP_NODELAY on a connection that only forwards, and Nagle
against the client's delayed ACK adds tens of ms to every small frame. OpenSSH switches a
connection to interactive mode (TCP_NODELAY, interactive IP QoS) when a session channel runs
with a pty, so the path opens one: an idle `sleep` with a pty, closed with the path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import asyncssh

from dupsession.aio import framing
from dupsession.aio.bind import make_socket
from dupsession.aio.transports import CONNECT_TIMEOUT, RECONNECT_MIN, TcpPath, resolve

log = logging.getLogger(__name__)

#: The pty session that puts the server's side of the connection in interactive mode.
KEEPER_COMMAND = "exec sleep 2147483647"


class _SshChannel(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, path: SshPath) -> None:
        self.path = path
        self.deframer = framing.StreamDeframer()
        self.transport: asyncssh.SSHTCPChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self.transport = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        try:
            frames = self.deframer.feed(data)
        except framing.FramingError as exc:
            log.warning("ssh path %d: %s; reconnecting", self.path.path_id, exc)
            if self.transport is not None:
                self.transport.close()
            return
        owner, path_id = self.path.owner, self.path.path_id
        for frame in frames:
            owner.path_frame(path_id, frame)

    def pause_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, False)

    def resume_writing(self) -> None:
        self.path.owner.path_writable(self.path.path_id, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.path.lost(self, "channel closed" if exc is None else str(exc))  # type: ignore[arg-type]


class SshPath(TcpPath):
    """A TCP-like path through an SSH server; reconnects like a TCP path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conn: asyncssh.SSHClientConnection | None = None
        self.interactive = False  #: whether the pty session (server-side TCP_NODELAY) is up

    async def open(self) -> None:
        spec = self.spec
        assert spec.exit is not None
        options: dict[str, Any] = {}
        if spec.user:
            options["username"] = spec.user
        if spec.identity:
            options["client_keys"] = [spec.identity]
        if spec.known_hosts:
            options["known_hosts"] = spec.known_hosts
        sock = None
        if spec.uplink:
            family, addr = await resolve(spec.host, spec.port, socket.SOCK_STREAM)
            sock = make_socket(family, socket.SOCK_STREAM, spec.uplink)
            try:
                await asyncio.wait_for(self._loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            except BaseException:
                sock.close()
                raise
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(spec.host, spec.port, sock=sock, **options), CONNECT_TIMEOUT
            )
        except asyncssh.Error as exc:
            raise OSError(f"ssh to {spec.host}:{spec.port}: {exc.reason}") from exc
        try:
            self.interactive = spec.pty and await self._go_interactive(conn)
            _, channel = await conn.create_connection(
                lambda: _SshChannel(self), spec.exit[0], spec.exit[1]
            )
        except asyncssh.Error as exc:
            conn.close()
            raise OSError(f"ssh relay {spec.host} cannot reach the exit: {exc.reason}") from exc
        if self._closed:
            conn.close()
            return
        self._conn = conn
        self._protocol = channel  # type: ignore[assignment]
        self._backoff = RECONNECT_MIN
        self.owner.path_open(self.path_id, self)

    async def _go_interactive(self, conn: asyncssh.SSHClientConnection) -> bool:
        try:
            await conn.create_process(KEEPER_COMMAND, term_type="dumb", stdin=asyncssh.DEVNULL)
        except (asyncssh.Error, OSError) as exc:
            log.warning(
                "ssh path %d: no pty session on %s (%s): the server may delay small frames (Nagle)",
                self.path_id,
                self.spec.host,
                exc,
            )
            return False
        return True

    def lost(self, protocol: Any, reason: str) -> None:
        if protocol is self._protocol and self._conn is not None:
            self._conn.close()
            self._conn = None
        super().lost(protocol, reason)

    def close(self) -> None:
        super().close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
