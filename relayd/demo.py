"""`dupsession demo`: what redundancy buys, shown on this machine in ten seconds.

Inside one process it starts an exit (`relayd`'s server), an echo target, and three loopback
paths impaired by the userspace shim (different one-way delays per direction, loss on the UDP
ones). Two sessions run side by side for the same seconds: one over the best single path
alone, one over all three. Each types a keystroke every 50 ms and times its echo. The table
shows echo latency and which path delivered each frame first, per direction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dupsession.aio.loop import run
from dupsession.cli import run_quietly
from dupsession.client import Client, SessionFailed
from dupsession.core.session import SessionConfig
from dupsession.echo import EchoMeter, open_echo_session, percentile, type_keystrokes
from dupsession.pathspec import PathSpec
from dupsession.settings import ClientSettings
from dupsession.testing.shim import Impairment, TcpShim, UdpShim
from relayd.acl import AllowList
from relayd.server import ExitConfig, ExitServer


@dataclass(frozen=True)
class DemoPath:
    name: str
    scheme: str
    up_delay: float  #: one way, client to exit (s)
    down_delay: float  #: one way, exit to client (s)
    loss: float  #: per datagram, each direction (UDP only; a TCP path stalls instead)


PATHS = (
    DemoPath("wifi-udp", "udp", 0.015, 0.040, 0.05),
    DemoPath("lte-udp", "udp", 0.035, 0.012, 0.05),
    DemoPath("isp2-tcp", "tcp", 0.030, 0.030, 0.0),
)


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.transport.write_eof()  # type: ignore[attr-defined]
        return True


async def _open_session(psk: bytes, target: str, specs: list[PathSpec]) -> tuple[Client, EchoMeter]:
    settings = ClientSettings(key_path=Path("unused"), paths=tuple(specs), connect_timeout=5.0)
    return await open_echo_session(settings, target, psk)


async def demo(seconds: float, seed: int) -> int:
    console = Console()
    psk = os.urandom(32)
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(_EchoProtocol, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    target = f"127.0.0.1:{echo_port}"
    exit_server = ExitServer(
        ExitConfig(("127.0.0.1", 0), psk, AllowList.parse([target]), session=SessionConfig())
    )
    await exit_server.start()
    exit_address = exit_server.address
    assert exit_address is not None

    def shim_for(path: DemoPath, seed_offset: int) -> UdpShim | TcpShim:
        up = Impairment(delay=path.up_delay, loss=path.loss)
        down = Impairment(delay=path.down_delay, loss=path.loss)
        kind = UdpShim if path.scheme == "udp" else TcpShim
        return kind(exit_address, up=up, down=down, seed=seed + seed_offset)

    shims = [shim_for(p, i) for i, p in enumerate(PATHS)]
    best = min(PATHS, key=lambda p: p.up_delay + p.down_delay)
    best_shim = shim_for(best, 99)  # an identical, separate copy for the single-path session
    for shim in [*shims, best_shim]:
        await shim.start()
    clients: list[Client] = []
    try:
        all_specs = [
            PathSpec(p.scheme, "127.0.0.1", s.port) for p, s in zip(PATHS, shims, strict=True)
        ]
        single_spec = [PathSpec(best.scheme, "127.0.0.1", best_shim.port)]
        console.print(
            f"[bold]dupsession demo[/]: exit, echo target and {len(PATHS)} impaired loopback "
            f"paths in this process; typing for {seconds:g} s on two sessions side by side..."
        )
        multi, multi_meter = await _open_session(psk, target, all_specs)
        single, single_meter = await _open_session(psk, target, single_spec)
        clients = [multi, single]
        await asyncio.gather(
            type_keystrokes(multi, multi_meter, seconds),
            type_keystrokes(single, single_meter, seconds),
        )
        _report(console, best, single_meter, multi_meter, multi, exit_server)
    except SessionFailed as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        for client in clients:
            client.close()
        await exit_server.close()
        for shim in [*shims, best_shim]:
            await shim.close()
        echo.close()
    return 0


def _report(
    console: Console,
    best: DemoPath,
    single: EchoMeter,
    multi: EchoMeter,
    client: Client,
    exit_server: ExitServer,
) -> None:
    paths = Table(title="Paths (one-way delays; loss per datagram, each direction)")
    for column in ("path", "out delay", "back delay", "loss", "RTT"):
        paths.add_column(column, justify="right")
    for p in PATHS:
        paths.add_row(
            p.name,
            f"{p.up_delay * 1e3:.0f} ms",
            f"{p.down_delay * 1e3:.0f} ms",
            f"{p.loss:.0%}",
            f"{(p.up_delay + p.down_delay) * 1e3:.0f} ms",
        )
    console.print(paths)

    floor = min(p.up_delay for p in PATHS) + min(p.down_delay for p in PATHS)
    echo = Table(title="Keystroke echo latency (ms)")
    for column in ("session", "echoes", "p50", "p99", "max"):
        echo.add_column(column, justify="right")
    for label, meter in ((f"best single path ({best.name})", single), ("all three paths", multi)):
        rtts = meter.rtts or [float("nan")]
        echo.add_row(
            label,
            str(len(meter.rtts)),
            f"{statistics.median(rtts) * 1e3:.1f}",
            f"{percentile(rtts, 0.99) * 1e3:.1f}",
            f"{max(rtts) * 1e3:.1f}",
        )
    console.print(echo)
    if single.rtts and multi.rtts:
        gain = percentile(single.rtts, 0.99) / percentile(multi.rtts, 0.99)
        console.print(
            f"p99 is [bold]{gain:.1f}x[/] lower over all paths; the floor (best way out + best "
            f"way back, from different paths) is {floor * 1e3:.0f} ms, below every single "
            f"path's RTT."
        )
    assert client.driver is not None
    inbound = {p.id: p.inbound.first for p in client.driver.snapshot().paths}
    exit_session = exit_server.sessions.get(client.driver.session_id)
    outbound: dict[int, int] = {}
    if exit_session is not None:
        snap = exit_session.driver.snapshot()
        outbound = {p.id: p.inbound.first for p in snap.paths}
    wins = Table(title="Frames each path delivered first (all-paths session)")
    for column in ("path", "client -> exit", "exit -> client"):
        wins.add_column(column, justify="right")
    for index, p in enumerate(PATHS, start=1):
        wins.add_row(p.name, str(outbound.get(index, 0)), str(inbound.get(index, 0)))
    console.print(wins)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dupsession demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="typing time")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated loss")
    args = parser.parse_args(argv)
    return run(demo(args.seconds, args.seed))


if __name__ == "__main__":  # `dupsession demo` runs this module
    sys.exit(run_quietly(lambda: main(sys.argv[1:])))
