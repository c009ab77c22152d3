"""The exit's side of the handshake options: unknown critical options refuse, with a reason."""

from __future__ import annotations

import asyncio
import socket
import time

from dupsession.core import negotiate, wire
from dupsession.core.handshake import ClientHandshake
from relayd.acl import AllowList
from relayd.server import ExitConfig, ExitServer

PSK = bytes(range(32))


async def _ask(options: wire.Options) -> tuple[wire.Welcome, ClientHandshake]:
    """Send one HELLO with `options` to a fresh exit over UDP; return its verified answer."""
    server = ExitServer(ExitConfig(("127.0.0.1", 0), PSK, AllowList.parse(["127.0.0.1:9"])))
    await server.start()
    assert server.address is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        client = ClientHandshake(PSK, "127.0.0.1:9", time.time(), options)
        await loop.sock_sendto(sock, client.hello_frame(1), server.address)
        frame = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
        welcome, _ = client.accept(1, frame)
        return welcome, client
    finally:
        sock.close()
        await server.close()


def test_unknown_critical_option_is_refused_with_a_reason() -> None:
    welcome, _ = asyncio.run(_ask(((0xA0, b"future"),)))
    assert welcome.status == wire.WelcomeStatus.UNSUPPORTED
    assert "160" in welcome.reason


def test_unknown_ordinary_option_is_ignored_and_features_are_answered() -> None:
    wanted = negotiate.Features(encrypt=True, compress=negotiate.Compress.AUTO)
    welcome, _ = asyncio.run(_ask(((0x30, b"later"), *negotiate.offer(wanted))))
    assert welcome.status == wire.WelcomeStatus.OK
    assert negotiate.settle(wanted, welcome.options) == wanted
