"""The exit's answer to a HELLO: unknown critical options refuse, with a reason; a session
that would take the exit past its memory limit is refused too."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

from dupsession.core import negotiate, wire
from dupsession.core.handshake import ClientHandshake
from relayd.acl import AllowList
from relayd.exit import TARGET_HIGH_WATER
from relayd.limits import Limits
from relayd.server import ExitConfig, ExitServer

PSK = bytes(range(32))


async def _welcomes(
    options: wire.Options = (),
    count: int = 1,
    limits: Limits | None = None,
    target: str = "127.0.0.1:9",
) -> list[wire.Welcome]:
    """Send `count` HELLOs (each a new session, from a socket of its own: a session's traffic
    must not pass for the next one's answer) with `options` to a fresh exit over UDP, one
    after the other; return its verified answers."""
    config = ExitConfig(("127.0.0.1", 0), PSK, AllowList.parse(["127.0.0.1:9"]))
    server = ExitServer(config if limits is None else replace(config, limits=limits))
    await server.start()
    assert server.address is not None
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    welcomes = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setblocking(False)
            client = ClientHandshake(PSK, target, time.time(), options)
            await loop.sock_sendto(sock, client.hello_frame(1), server.address)
            frame = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            welcomes.append(client.accept(1, frame)[0])
        return welcomes
    finally:
        for sock in socks:
            sock.close()
        await server.close()


def test_unknown_critical_option_is_refused_with_a_reason() -> None:
    (welcome,) = asyncio.run(_welcomes(((0xA0, b"future"),)))
    assert welcome.status == wire.WelcomeStatus.UNSUPPORTED
    assert "160" in welcome.reason


def test_unknown_ordinary_option_is_ignored_and_features_are_answered() -> None:
    wanted = negotiate.Features(encrypt=True, compress=negotiate.Compress.AUTO)
    (welcome,) = asyncio.run(_welcomes(((0x30, b"later"), *negotiate.offer(wanted))))
    assert welcome.status == wire.WelcomeStatus.OK
    assert negotiate.settle(wanted, welcome.options) == wanted


def test_a_session_past_the_memory_limit_is_refused() -> None:
    """SECURITY.md's memory in total: no new session while the sessions' worst case (2 x the
    session buffer + 2 x the target's write buffer each) would pass `memory_limit`. Two fit
    here, the third is refused with the reason; the per-source and table limits are far.
    (Probe sessions: an echo inside the exit, no target to connect.)"""
    buffer = 64 * 1024
    worst = 2 * buffer + 2 * TARGET_HIGH_WATER
    limits = Limits(session_buffer=buffer, memory_limit=2 * worst + worst // 2)
    welcomes = asyncio.run(_welcomes(count=3, limits=limits, target=wire.PROBE_TARGET))
    assert [w.status for w in welcomes] == [wire.WelcomeStatus.OK] * 2 + [wire.WelcomeStatus.FULL]
    assert welcomes[2].reason == "exit is full: memory limit reached"
