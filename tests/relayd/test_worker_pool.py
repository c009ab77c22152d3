"""Session workers' bounds, in this process over real sockets: a worker's per-address sockets
(least recently used out first) and the listener's reuseport group (the BPF program's guard of
a socket between its bind and its connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from relayd import reuseport
from relayd.worker import MAX_PEER_SOCKETS, PeerSockets

pytestmark = pytest.mark.timeout(60)


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- sockets, the group


class _Heard:
    """What a worker's sockets read, by source address (`WorkerServer.datagrams_in`)."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []

    def datagrams_in(self, frames: list[bytes], addr: tuple[str, int]) -> None:
        self.sources.append(addr)


def _clients(count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        clients.append(sock)
    return clients


def _drain(sock: socket.socket, wait: float = 0.2) -> list[tuple[str, int]]:
    """Sources of what `sock` holds (waiting up to `wait` for the first)."""
    sources = []
    while select.select([sock], [], [], wait)[0]:
        sources.append(sock.recvfrom(65535)[1])
        wait = 0.05
    return sources


def test_a_workers_sockets_go_least_recently_used_first() -> None:
    """At `MAX_PEER_SOCKETS`, a new client address closes the socket of the address least
    recently heard from or sent to, not the oldest: the busiest path keeps its direct socket
    (its datagrams reach the worker, not the listener)."""

    async def scenario() -> None:
        listener = reuseport.listener("127.0.0.1", 0)
        clients = _clients(MAX_PEER_SOCKETS + 2)
        heard = _Heard()
        peers = PeerSockets(cast(Any, heard), listener.getsockname())
        try:
            addrs = [c.getsockname() for c in clients]
            for addr in addrs[:MAX_PEER_SOCKETS]:
                peers.send_frames([b"challenge"], addr)
            # The oldest address is heard from (its socket reads it), the second oldest sent to.
            clients[0].sendto(b"typing", listener.getsockname())
            await _until(lambda: addrs[0] in heard.sources, 2, "the first address's datagram")
            peers.send_frames([b"echo"], addrs[1])
            peers.send_frames([b"challenge"], addrs[-2])
            peers.send_frames([b"challenge"], addrs[-1])
            # The first two addresses still reach the worker, the next two the listener
            # (from where the dispatcher would forward them).
            heard.sources.clear()
            for client in clients[:4]:
                client.sendto(b"typing", listener.getsockname())
            await _until(lambda: len(heard.sources) == 2, 2, "two datagrams in the worker")
            assert sorted(heard.sources) == sorted(addrs[:2])
            assert sorted(_drain(listener)) == sorted(addrs[2:4])
        finally:
            peers.close()
            listener.close()
            for client in clients:
                client.close()

    asyncio.run(scenario())


def test_a_socket_between_its_bind_and_connect_gets_no_other_clients_datagram() -> None:
    """A worker's new socket joins the listener's group at bind and matches its client only
    at connect: in between, the group's hash would hand it other clients' datagrams (the
    control below shows it does). The BPF program ("return 0") sends every datagram no
    connected socket matches to the listener."""
    clients = _clients(32)
    with contextlib.ExitStack() as stack:
        for client in clients:
            stack.callback(client.close)
        for steered in (True, False):
            if steered:
                first = stack.enter_context(reuseport.listener("127.0.0.1", 0))
            else:  # the control: the same group without the program
                first = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                first.bind(("127.0.0.1", 0))
            local = first.getsockname()
            window = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            window.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            window.bind(local)  # reuseport.peer_socket's state before its connect
            for client in clients:
                client.sendto(b"x", local)
            strays, listened = _drain(window), _drain(first)
            assert len(strays) + len(listened) == len(clients)
            if steered:
                assert strays == [], f"{len(strays)} of {len(clients)} went to the window"
            else:
                assert strays, "the control: the hash never chose the second socket"
