"""`dupsession probe HOST`: measure every uplink x (relay | direct) route to the exit.

Opens a probe session (HELLO target `probe:0`: the exit echoes, connecting nowhere) over every
configured path, types a small record every 20 ms for a few seconds, then prints the route
matrix: rows are uplinks, columns are relays and direct, each cell the route's RTT, loss and
how far behind the fastest route its copies arrive in each direction. One-way delays need no
clock sync: the receiver of each direction times every copy against the first copy of the
same frame. The best route each way is the one that delivered most frames first.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from dupsession.client import SessionFailed
from dupsession.core import wire
from dupsession.echo import open_echo_session, percentile, type_keystrokes
from dupsession.keyfile import KeyFileError, load
from dupsession.settings import ClientSettings

PROBE_INTERVAL = 0.02


@dataclass(frozen=True)
class RouteResult:
    spec: str
    uplink: str
    via: str
    state: str
    rtt: float | None
    loss_up: float
    loss_down: float
    first_up: int
    first_down: int
    lag_up: float
    lag_down: float


def routes(snapshot: dict[str, Any]) -> list[RouteResult]:
    out = []
    for path in snapshot["paths"]:
        up, down = path.get("outbound", {}), path.get("inbound", {})
        out.append(
            RouteResult(
                spec=path["spec"],
                uplink=path["uplink"],
                via=path["via"],
                state=path["state"],
                rtt=path.get("rtt_min") or path.get("rtt"),
                loss_up=up.get("loss", 0.0),
                loss_down=down.get("loss", 0.0),
                first_up=up.get("first", 0),
                first_down=down.get("first", 0),
                lag_up=up.get("lag", 0.0),
                lag_down=down.get("lag", 0.0),
            )
        )
    return out


def matrix(results: list[RouteResult]) -> Table:
    uplinks = sorted({r.uplink for r in results})
    vias = sorted({r.via for r in results}, key=lambda v: (v != "direct", v))
    table = Table(title="Route matrix: RTT ms | loss up/down | lag behind fastest up/down ms")
    table.add_column("uplink \\ via")
    for via in vias:
        table.add_column(via, justify="right")
    for uplink in uplinks:
        cells = []
        for via in vias:
            found = [r for r in results if r.uplink == uplink and r.via == via]
            cells.append("\n".join(_cell(r) for r in found) or "-")
        table.add_row(uplink, *cells)
    return table


def _cell(r: RouteResult) -> str:
    if r.rtt is None:
        return f"{r.spec}: {r.state}, no answer"
    return (
        f"{r.spec}\n{r.rtt * 1e3:.1f} | {r.loss_up:.0%}/{r.loss_down:.0%} | "
        f"{r.lag_up * 1e3:.1f}/{r.lag_down * 1e3:.1f}"
    )


def best(results: list[RouteResult]) -> tuple[RouteResult | None, RouteResult | None]:
    """Routes that delivered most frames first, outbound and inbound."""
    if not results:
        return None, None
    up = max(results, key=lambda r: r.first_up)
    down = max(results, key=lambda r: r.first_down)
    return (up if up.first_up else None), (down if down.first_down else None)


async def run(settings: ClientSettings, seconds: float, as_json: bool) -> int:
    import json

    console = Console()
    try:
        psk = load(settings.key_path)
    except KeyFileError as exc:
        console.print(f"dupsession probe: {exc}", style="red")
        return 2
    try:
        client, meter = await open_echo_session(settings, wire.PROBE_TARGET, psk)
    except SessionFailed as exc:
        console.print(f"dupsession probe: {exc}", style="red")
        return int(exc.code)
    try:
        await type_keystrokes(client, meter, seconds, interval=PROBE_INTERVAL)
        snapshot = client.snapshot()[0]
    finally:
        client.close()
    results = routes(snapshot)
    up, down = best(results)
    if as_json:
        print(
            json.dumps(
                {
                    "routes": [r.__dict__ for r in results],
                    "best_up": up.spec if up else None,
                    "best_down": down.spec if down else None,
                },
                indent=2,
            )
        )
        return 0
    console.print(matrix(results))
    if meter.rtts:
        console.print(
            f"echo over all routes: p50 {statistics.median(meter.rtts) * 1e3:.1f} ms, "
            f"p99 {percentile(meter.rtts, 0.99) * 1e3:.1f} ms ({len(meter.rtts)} echoes)"
        )
    console.print(f"best route out (client -> exit): [bold]{up.spec if up else 'none'}[/]")
    console.print(f"best route back (exit -> client): [bold]{down.spec if down else 'none'}[/]")
    return 0
