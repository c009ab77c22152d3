"""`dupsession status` / `relayd status`: every session and path on this machine, live.

Reads control-socket snapshots only (see control.py); no protocol logic lives here. Directions
are named from the client's side whoever is looking: "up" is client -> exit, "down" is
exit -> client, so the same route reads the same on both ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dupsession import control

SPARK = "▁▂▃▄▅▆▇█"
SPARK_SAMPLES = 24
REFRESH = 0.5  #: seconds between snapshots in the live view

STATE_STYLE = {
    "up": "green",
    "connecting": "yellow",
    "probing": "yellow",
    "resuming": "bold red",
    "down": "red",
    "unreachable": "red",
    "closed": "dim",
}


def sparkline(samples: list[float]) -> str:
    """The recent RTT spread in one short line: ▁ is the lowest sample, █ the highest."""
    recent = samples[-SPARK_SAMPLES:]
    if not recent:
        return ""
    low, high = min(recent), max(recent)
    span = high - low
    if span <= 0:
        return SPARK[0] * len(recent)
    return "".join(SPARK[min(len(SPARK) - 1, int((s - low) / span * len(SPARK)))] for s in recent)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"


def directions(doc: dict[str, Any], path: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(up, down) stats of a path: client->exit and exit->client, whichever end reported."""
    inbound = path.get("inbound", {})
    outbound = path.get("outbound", {})
    return (outbound, inbound) if doc.get("role") == "client" else (inbound, outbound)


def _share(path_stats: dict[str, Any], total: int) -> str:
    first = path_stats.get("first")
    if first is None or total == 0:
        return "-"
    return f"{first / total:.0%} ({first})"


def session_table(doc: dict[str, Any], plain: bool) -> Table:
    state = doc.get("state", "?")
    client_view = doc.get("role") == "client"
    sent_up = doc.get("bytes_out" if client_view else "bytes_in", 0)
    sent_down = doc.get("bytes_in" if client_view else "bytes_out", 0)
    title = Text.assemble(
        (f"{doc.get('target', '?')}", "bold"),
        f"  {doc.get('role', '?')}  ",
        (state, STATE_STYLE.get(state, "")),
        f"  age {doc.get('age', 0):.0f} s  up {_bytes(sent_up)}  down {_bytes(sent_down)}",
        (f"  session {doc['session_id']}" if doc.get("session_id") else "", "dim"),
    )
    table = Table(
        title=title,
        title_justify="left",
        box=box.ASCII2 if plain else box.SIMPLE_HEAD,
        expand=False,
    )
    for column, justify in (
        ("path", "left"),
        ("uplink", "left"),
        ("via", "left"),
        ("state", "left"),
        ("rtt ms", "right"),
        ("spread", "left"),
        ("loss up", "right"),
        ("loss down", "right"),
        ("first up", "right"),
        ("first down", "right"),
        ("lag up ms", "right"),
        ("lag down ms", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    paths = doc.get("paths", [])
    ups = [directions(doc, p)[0] for p in paths]
    downs = [directions(doc, p)[1] for p in paths]
    total_up = sum(u.get("first", 0) for u in ups)
    total_down = sum(d.get("first", 0) for d in downs)
    for path, up, down in zip(paths, ups, downs, strict=True):
        pstate = path.get("state", "?")
        table.add_row(
            path.get("spec", str(path.get("id"))),
            path.get("uplink", "-"),
            path.get("via", "-"),
            Text(pstate, STATE_STYLE.get(pstate, "")),
            _ms(path.get("rtt")),
            sparkline(path.get("rtt_recent", [])),
            _pct(up.get("loss")),
            _pct(down.get("loss")),
            _share(up, total_up),
            _share(down, total_down),
            _ms(up.get("lag")) if up.get("first") is not None else "-",
            _ms(down.get("lag")) if down.get("first") is not None else "-",
        )
    return table


def render(documents: list[dict[str, Any]], plain: bool = False) -> RenderableType:
    tables: list[RenderableType] = []
    for document in documents:
        for doc in document.get("sessions", []):
            tables.append(session_table(doc, plain))
    if not tables:
        return Text("no dupsession sessions on this machine", style="dim")
    return Group(*tables)


class _Keys:
    """Keys typed on stdin (in cbreak mode when it is a terminal)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self.fd = sys.stdin.fileno()

    def wait(self, timeout: float) -> str:
        """What was typed within `timeout` seconds; at EOF, sleep it out (never spin)."""
        if self.fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        data = os.read(self.fd, 32)
        if not data:  # stdin closed or /dev/null: no more keys, only Ctrl-C stops us
            self.fd = None
            time.sleep(timeout)
        return data.decode(errors="ignore")


@contextlib.contextmanager
def _cbreak() -> Iterator[None]:
    if sys.stdin is None or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(
    kind: str | None,
    once: bool,
    as_json: bool,
    collect: Callable[[], list[dict[str, Any]]] | None = None,
) -> int:
    gather = collect or (lambda: control.discover(kind))
    program = f"{'relayd' if kind == 'relayd' else 'dupsession'} status"
    try:
        return _run(gather, once, as_json, program)
    except control.ControlError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1


def _run(
    gather: Callable[[], list[dict[str, Any]]], once: bool, as_json: bool, program: str
) -> int:
    if as_json:
        print(json.dumps(gather(), indent=2))
        return 0
    if once or not sys.stdout.isatty():
        plain = not sys.stdout.isatty()
        console = Console(no_color=plain, width=200 if plain else None, soft_wrap=False)
        console.print(render(gather(), plain=plain))
        return 0
    console = Console()
    keys = _Keys()
    try:
        with (
            _cbreak(),
            Live(
                with_help(render(gather()), program),
                console=console,
                screen=True,
                auto_refresh=False,
            ) as live,
        ):
            while "q" not in keys.wait(REFRESH).lower():
                live.update(with_help(render(gather()), program), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0


def with_help(body: RenderableType, program: str = "dupsession status") -> RenderableType:
    """The live view's screen: a clock and the key help above the tables."""
    return Group(Text(f"{program}  {time.strftime('%H:%M:%S')}  (q to quit)", style="dim"), body)
