"""`dupsession probe HOST`: measure every uplink x (relay | direct) route to the exit.

Opens a probe session (HELLO target `probe:0`: the exit echoes, connecting nowhere) over every
configured path, types a small record every 20 ms for a few seconds, then prints the route
matrix: rows are uplinks, columns are relays and direct, each cell the route's RTT, loss and
how far behind the fastest route its copies arrive in each direction. One-way delays need no
clock sync: the receiver of each direction times every copy against the first copy of the
same frame. The best route each way is the one that delivered most frames first.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from dupsession.client import Client, SessionFailed, wait_closed
from dupsession.core import wire
from dupsession.core.snapshot import InboundStats, OutboundStats
from dupsession.echo import open_echo_session, percentile, type_keystrokes
from dupsession.keyfile import KeyFileError, load
from dupsession.report import SessionReport
from dupsession.settings import ClientSettings

PROBE_INTERVAL = 0.02
#: Seconds to wait for the exit to acknowledge the end of the probe session.
CLOSE_TIMEOUT = 2.0


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


def routes(report: SessionReport) -> list[RouteResult]:
    out = []
    for path in report.paths:
        core = path.core
        up = core.outbound if core is not None else OutboundStats(0, 0.0, 0.0)
        down = core.inbound if core is not None else InboundStats(0, 0, 0.0, 0.0)
        out.append(
            RouteResult(
                spec=path.spec or "?",
                uplink=path.uplink or "default",
                via=path.via or "direct",
                state=path.state,
                rtt=None if core is None else core.rtt_min or core.rtt,
                loss_up=up.loss,
                loss_down=down.loss,
                first_up=up.first,
                first_down=down.first,
                lag_up=up.lag,
                lag_down=down.lag,
            )
        )
    return out


def matrix(results: list[RouteResult]) -> Table:
    uplinks = sorted({r.uplink for r in results})
    vias = sorted({r.via for r in results}, key=lambda v: (v != "direct", v))
    table = Table(
        title="Route matrix",
        title_justify="left",
        caption="up: client -> exit, down: exit -> client. lag: behind the fastest copy. "
        "first: frames delivered first.",
        caption_justify="left",
    )
    table.add_column("uplink \\ via")
    for via in vias:
        table.add_column(via)
    for uplink in uplinks:
        cells = []
        for via in vias:
            found = [r for r in results if r.uplink == uplink and r.via == via]
            cells.append("\n\n".join(_cell(r) for r in found) or "-")
        table.add_row(uplink, *cells)
    return table


def _cell(r: RouteResult) -> str:
    if r.rtt is None:
        return f"{r.spec}\n{r.state}, no answer"
    return (
        f"{r.spec}\n"
        f"rtt {r.rtt * 1e3:.1f} ms   loss up/down {r.loss_up:.0%}/{r.loss_down:.0%}\n"
        f"lag up/down {r.lag_up * 1e3:.1f}/{r.lag_down * 1e3:.1f} ms   "
        f"first up/down {r.first_up}/{r.first_down}"
    )


def best(results: list[RouteResult]) -> tuple[RouteResult | None, RouteResult | None]:
    """Routes that delivered most frames first, outbound and inbound."""
    if not results:
        return None, None
    up = max(results, key=lambda r: r.first_up)
    down = max(results, key=lambda r: r.first_down)
    return (up if up.first_up else None), (down if down.first_down else None)


def report(results: list[RouteResult], echo_rtts: list[float]) -> RenderableType:
    """What `dupsession probe` prints: the matrix, the echo latency, the best routes."""
    up, down = best(results)
    lines: list[RenderableType] = [matrix(results)]
    if echo_rtts:
        lines.append(
            Text(
                f"echo over all routes: p50 {statistics.median(echo_rtts) * 1e3:.1f} ms, "
                f"p99 {percentile(echo_rtts, 0.99) * 1e3:.1f} ms ({len(echo_rtts)} echoes)"
            )
        )
    lines.append(
        Text.assemble("best route out (client -> exit): ", (up.spec if up else "none", "bold"))
    )
    lines.append(
        Text.assemble("best route back (exit -> client): ", (down.spec if down else "none", "bold"))
    )
    return Group(*lines)


def as_json(results: list[RouteResult]) -> dict[str, Any]:
    up, down = best(results)
    return {
        "routes": [asdict(r) for r in results],
        "best_up": up.spec if up else None,
        "best_down": down.spec if down else None,
    }


async def finish(client: Client) -> None:
    """End the probe session cleanly, so the exit forgets it now and not after its grace
    period: our FIN, the exit's FIN back (the probe echo ends its side on our EOF), done.
    """
    driver = client.driver
    if driver is None:
        return
    client.local_eof()
    try:
        await asyncio.wait_for(wait_closed(client), CLOSE_TIMEOUT)
    except TimeoutError:
        driver.abort(wire.CloseCode.NORMAL, "probe finished")
        await asyncio.sleep(0.05)  # let the CLOSE frames leave


async def measure(
    settings: ClientSettings, seconds: float, psk: bytes
) -> tuple[list[RouteResult], list[float]]:
    """Run one probe session; the routes seen and the echo round trips."""
    client, meter = await open_echo_session(settings, wire.PROBE_TARGET, psk)
    try:
        await type_keystrokes(client, meter, seconds, interval=PROBE_INTERVAL)
        report = client.report()
        await finish(client)
    finally:
        client.close()
    return routes(report), meter.rtts


async def run(settings: ClientSettings, seconds: float, as_json_output: bool) -> int:
    # Failures: one unwrapped line on stderr; stdout is the report (JSON for scripts).
    try:
        psk = load(settings.key_path)
    except KeyFileError as exc:
        print(f"dupsession probe: {exc}", file=sys.stderr)
        return 2
    try:
        results, echo_rtts = await measure(settings, seconds, psk)
    except SessionFailed as exc:
        print(f"dupsession probe: {exc}", file=sys.stderr)
        return int(exc.code)
    if as_json_output:
        print(json.dumps(as_json(results), indent=2))
    else:
        Console().print(report(results, echo_rtts))
    return 0
