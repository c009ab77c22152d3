"""An SSH relay path (a stock sshd, direct-tcpip) costs under 2 ms over the same route's TCP.

Measured on the lab, where delay is per packet (unlike a TCP-terminating loopback shim), so
sshd's Nagle against the client's delayed ACKs would show. The same route up1 -> relay2 ->
server is used three ways, one session each: through `relayd relay` over TCP, through relay2's
sshd with the pty session (dupsession's default), and through it without (`pty=no`).
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests.lab.world import JUMP, RELAY_PORT, SSH_PORT, EchoSession, World, route_rtt

pytestmark = pytest.mark.timeout(120)

TYPING = 6.0  #: seconds of keystrokes per variant


def _p50(world: World, path: str, name: str) -> float:
    config = world.dir / f"{name}.toml"
    config.write_text(f'key = "{world.key}"\npaths = ["{path}"]\nconnect_timeout = 20\n')
    echo = EchoSession(world, world.proxy(config, name)).start()
    time.sleep(TYPING)
    assert echo.finish() == 0, world.diagnostics(echo.proxy)
    echo.check_stream()
    assert echo.proxy.wait() == 0, world.diagnostics(echo.proxy)
    latencies = echo.latencies(since=echo.received[5][1])  # past the first round trips
    assert len(latencies) > 0.7 * TYPING / echo.interval
    return statistics.median(latencies)


def test_ssh_relay_adds_under_2ms_to_its_route(world: World) -> None:
    lab = world.lab
    uplink = lab.addr("client", "up1")
    exit_address = f"{lab.addr('server')}:7300"
    relay = f"tcp://{lab.addr(JUMP)}:{RELAY_PORT}?bind={uplink}"
    ssh = (
        f"ssh://root@{lab.addr(JUMP)}:{SSH_PORT}?exit={exit_address}&bind={uplink}"
        f"&identity={world.user_key}&known_hosts={world.jump_known_hosts}"
    )
    rtt = route_rtt("up1", JUMP)
    tcp_p50 = _p50(world, relay, "via-relayd")
    ssh_p50 = _p50(world, ssh, "via-sshd")
    nagle_p50 = _p50(world, ssh + "&pty=no", "via-sshd-no-pty")
    print(
        f"\nroute up1-{JUMP}-server, RTT {rtt:.0f} ms; echo p50: relayd relay over TCP "
        f"{tcp_p50:.1f} ms, SSH relay {ssh_p50:.1f} ms, SSH relay without the pty session "
        f"{nagle_p50:.1f} ms"
    )
    assert tcp_p50 >= rtt - 1.0, "the route was not delayed as configured"
    assert ssh_p50 - tcp_p50 < 2.0, f"the SSH relay adds {ssh_p50 - tcp_p50:.1f} ms"
