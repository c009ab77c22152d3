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

from dupsession.aio.bind import make_socket
from dupsession.aio.owner import PathOwner
from dupsession.aio.sockets import CONNECT_TIMEOUT, resolve
from dupsession.aio.streampath import StreamLink, StreamPath
from dupsession.pathspec import PathSpec

log = logging.getLogger(__name__)

#: The pty session that puts the server's side of the connection in interactive mode.
KEEPER_COMMAND = "exec sleep 2147483647"


class _SshChannel(StreamLink, asyncssh.SSHTCPSession[bytes]):
    closed_reason = "channel closed"

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.transport = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.feed(data)


class SshPath(StreamPath):
    """A TCP-like path through an SSH server; reconnects like a TCP path."""

    kind = "ssh"

    def __init__(self, path_id: int, spec: PathSpec, owner: PathOwner) -> None:
        super().__init__(path_id, spec, owner)
        self._conn: asyncssh.SSHClientConnection | None = None
        self.interactive = False  #: whether the pty session (server-side TCP_NODELAY) is up

    async def _connect(self) -> StreamLink:
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
            link = _SshChannel(self)
            await conn.create_connection(lambda: link, spec.exit[0], spec.exit[1])
        except asyncssh.Error as exc:
            conn.close()
            raise OSError(f"ssh relay {spec.host} cannot reach the exit: {exc.reason}") from exc
        self._conn = conn
        return link

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

    def _released(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
