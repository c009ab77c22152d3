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
from dataclasses import dataclass
from pathlib import Path
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
PLAIN_WIDTH = 200  #: columns of `--once` into a pipe or file: room for every column
NOT_RUNNING = 3  #: `relayd status` exit code when no relayd answers (as `systemctl status`)

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


@dataclass(frozen=True, slots=True)
class Row:
    """One path of one session, with what its cells are computed from."""

    doc: dict[str, Any]
    path: dict[str, Any]
    up: dict[str, Any]  #: client -> exit stats
    down: dict[str, Any]  #: exit -> client stats
    total_up: int  #: frames delivered first, all paths, up
    total_down: int


def _lag(stats: dict[str, Any]) -> str:
    return _ms(stats.get("lag")) if stats.get("first") is not None else "-"


def _state(row: Row) -> Text:
    state = row.path.get("state", "?")
    return Text(state, STATE_STYLE.get(state, ""))


@dataclass(frozen=True, slots=True)
class Column:
    """A status column. Priority 0 is always shown (path, state, RTT, loss); higher ones
    join as the terminal widens. A new column is one entry in COLUMNS."""

    header: str
    priority: int
    cell: Callable[[Row], str | Text]
    justify: str = "right"


def _congestion(row: Row) -> str:
    """A datagram path's controller in one cell: estimated rate and the queue it meets."""
    cc = row.path.get("congestion") or {}
    if cc.get("kind") != "model-rate" or not cc.get("rate_bps"):
        return "-"
    queue = cc.get("queue_delay")
    rate = f"{cc['rate_bps'] / 1e6:.1f}M"
    return rate if queue is None else f"{rate} q{queue * 1e3:.0f}"


COLUMNS = (
    Column("path", 0, lambda r: r.path.get("label") or r.path.get("spec", "?"), "left"),
    Column("state", 0, _state, "left"),
    Column("tier", 1, lambda r: r.path.get("tier", "primary"), "left"),
    Column("rtt ms", 0, lambda r: _ms(r.path.get("rtt"))),
    Column("spread", 2, lambda r: sparkline(r.path.get("rtt_recent", [])), "left"),
    Column("loss up", 0, lambda r: _pct(r.up.get("loss"))),
    Column("loss down", 0, lambda r: _pct(r.down.get("loss"))),
    Column("first up", 1, lambda r: _share(r.up, r.total_up)),
    Column("first down", 1, lambda r: _share(r.down, r.total_down)),
    Column("lag up ms", 3, lambda r: _lag(r.up)),
    Column("lag down ms", 3, lambda r: _lag(r.down)),
    Column("url", 4, lambda r: r.path.get("spec", "-"), "left"),
    Column("rate/queue", 5, _congestion),
)


def _rows(doc: dict[str, Any]) -> list[Row]:
    paths = doc.get("paths", [])
    ups = [directions(doc, p)[0] for p in paths]
    downs = [directions(doc, p)[1] for p in paths]
    total_up = sum(u.get("first", 0) for u in ups)
    total_down = sum(d.get("first", 0) for d in downs)
    return [
        Row(doc, path, up, down, total_up, total_down)
        for path, up, down in zip(paths, ups, downs, strict=True)
    ]


def _title(doc: dict[str, Any], wide: bool) -> Text:
    state = doc.get("state", "?")
    client_view = doc.get("role") == "client"
    sent_up = doc.get("bytes_out" if client_view else "bytes_in", 0)
    sent_down = doc.get("bytes_in" if client_view else "bytes_out", 0)
    return Text.assemble(
        (f"{doc.get('target', '?')}", "bold"),
        f"  {doc.get('role', '?')}  ",
        (state, STATE_STYLE.get(state, "")),
        f"  age {doc.get('age', 0):.0f} s  up {_bytes(sent_up)}  down {_bytes(sent_down)}",
        f"  {doc['policy']}" if doc.get("policy") else "",
        (f"  session {doc['session_id']}" if wide and doc.get("session_id") else "", "dim"),
    )


def _table(doc: dict[str, Any], rows: list[Row], columns: list[Column], plain: bool) -> Table:
    table = Table(
        title=_title(doc, wide=len(columns) > 5),
        title_justify="left",
        box=box.ASCII2 if plain else box.SIMPLE_HEAD,
        expand=False,
    )
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    return table


def session_table(doc: dict[str, Any], plain: bool, width: int = PLAIN_WIDTH) -> Table:
    """The session's table with as many columns as fit in `width` (priority order)."""
    rows = _rows(doc)
    console = Console(width=100_000)  # measures what each table needs, unclipped
    chosen = _table(doc, rows, [c for c in COLUMNS if c.priority == 0], plain)
    for level in range(1, max(c.priority for c in COLUMNS) + 1):
        wider = _table(doc, rows, [c for c in COLUMNS if c.priority <= level], plain)
        if console.measure(wider).maximum > width:
            break
        chosen = wider
    return chosen


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def daemon_header(document: dict[str, Any]) -> Text:
    """relayd's own lines: what it is, where it listens, whom it lets in, for how long."""
    daemon = document.get("daemon", {})
    allow = ", ".join(daemon.get("allow", [])) or "nobody (no --allow: every session refused)"
    listen = ", ".join(daemon.get("listen", [])) or "?"
    sessions = len(document.get("sessions", []))
    limit = daemon.get("max_sessions")
    return Text.assemble(
        (f"relayd {daemon.get('version', '?')}", "bold"),
        f"  pid {document.get('pid', '?')}  up {_duration(daemon.get('uptime', 0))}",
        f"  sessions {sessions}" + (f"/{limit}" if limit else ""),
        f"\n  listen {listen}\n  allow  {allow}",
    )


def render(
    documents: list[dict[str, Any]], plain: bool = False, width: int = PLAIN_WIDTH
) -> RenderableType:
    parts: list[RenderableType] = []
    for document in documents:
        if document.get("kind") == "relayd" and "daemon" in document:
            parts.append(daemon_header(document))
            if not document.get("sessions"):
                parts.append(Text("  no sessions", style="dim"))
        for doc in document.get("sessions", []):
            parts.append(session_table(doc, plain, width))
    if not parts:
        return Text("no dupsession sessions on this machine", style="dim")
    return Group(*parts)


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
    socket: Path | None = None,
) -> int:
    """The status view of `kind`'s processes (all found in the runtime directory, or the one
    answering on `socket`); `collect` replaces the discovery (tests, screenshots)."""
    if socket is not None:
        collect = lambda: [control.query(socket)]  # noqa: E731
    gather = collect or (lambda: control.discover(kind))
    program = f"{'relayd' if kind == 'relayd' else 'dupsession'} status"
    try:
        if kind == "relayd" and not as_json and not gather():
            # A daemon that is not running is not a daemon without sessions: say which.
            print(
                f"relayd is not running on this machine (no control socket in "
                f"{control.runtime_dir()}; a relayd run by another user keeps it in that "
                "user's: relayd status --control SOCKET)",
                file=sys.stderr,
            )
            return NOT_RUNNING
        return _run(gather, once, as_json, program)
    except control.ControlError as exc:
        if kind == "relayd" and socket is not None:
            print(f"relayd is not running or not answering: {exc}", file=sys.stderr)
            return NOT_RUNNING
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
        # A pipe or a file gets every column (COLUMNS narrows it); a terminal gets its width.
        width = int(os.environ.get("COLUMNS", PLAIN_WIDTH)) if plain else None
        console = Console(no_color=plain, width=width, soft_wrap=False)
        console.print(render(gather(), plain=plain, width=console.width))
        return 0
    console = Console()
    keys = _Keys()

    def screen() -> RenderableType:
        return with_help(render(gather(), width=console.width), program)

    try:
        with (
            _cbreak(),
            Live(screen(), console=console, screen=True, auto_refresh=False) as live,
        ):
            while "q" not in keys.wait(REFRESH).lower():
                live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0


def with_help(body: RenderableType, program: str = "dupsession status") -> RenderableType:
    """The live view's screen: a clock and the key help above the tables."""
    return Group(Text(f"{program}  {time.strftime('%H:%M:%S')}  (q to quit)", style="dim"), body)
