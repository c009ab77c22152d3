"""`dupsession status` / `relayd status`: every session and path on this machine, live.

Reads control-socket snapshots only (see control.py), parsed into session reports
(`dupsession.report`, one schema with its version); no protocol logic lives here. Directions
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
from dupsession.core.snapshot import InboundStats, OutboundStats, PathSnapshot
from dupsession.report import PathReport, SchemaError, SessionReport

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


Stats = InboundStats | OutboundStats


def directions(report: SessionReport, path: PathReport) -> tuple[Stats | None, Stats | None]:
    """(up, down) stats of a path: client->exit and exit->client, whichever end reported."""
    if path.core is None:
        return None, None
    inbound, outbound = path.core.inbound, path.core.outbound
    return (outbound, inbound) if report.role == "client" else (inbound, outbound)


def _share(stats: Stats | None, total: int) -> str:
    if stats is None or total == 0:
        return "-"
    return f"{stats.first / total:.0%} ({stats.first})"


@dataclass(frozen=True, slots=True)
class Row:
    """One path of one session, with what its cells are computed from."""

    report: SessionReport
    path: PathReport
    up: Stats | None  #: client -> exit stats (None: the path never opened)
    down: Stats | None  #: exit -> client stats
    total_up: int  #: frames delivered first, all paths, up
    total_down: int


def _lag(stats: Stats | None) -> str:
    return "-" if stats is None else _ms(stats.lag)


def _loss(stats: Stats | None) -> str:
    return "-" if stats is None else _pct(stats.loss)


def _state(row: Row) -> Text:
    state = row.path.state
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
    """A path's controller in one cell: estimated rate and the queue it meets."""
    cc = row.path.core.congestion if row.path.core is not None else {}
    if cc.get("kind") not in ("model-rate", "stream-window") or not cc.get("rate_bps"):
        return "-"
    queue = cc.get("queue_delay")
    rate = f"{cc['rate_bps'] / 1e6:.1f}M"
    return rate if queue is None else f"{rate} q{queue * 1e3:.0f}"


def _core(row: Row) -> PathSnapshot | None:
    return row.path.core


COLUMNS = (
    Column("path", 0, lambda r: r.path.label or r.path.spec or "?", "left"),
    Column("state", 0, _state, "left"),
    Column("tier", 1, lambda r: c.tier if (c := _core(r)) else "primary", "left"),
    Column("rtt ms", 0, lambda r: _ms(c.rtt if (c := _core(r)) else None)),
    Column("spread", 2, lambda r: sparkline(list(c.rtt_recent) if (c := _core(r)) else []), "left"),
    Column("loss up", 0, lambda r: _loss(r.up)),
    Column("loss down", 0, lambda r: _loss(r.down)),
    Column("first up", 1, lambda r: _share(r.up, r.total_up)),
    Column("first down", 1, lambda r: _share(r.down, r.total_down)),
    Column("lag up ms", 3, lambda r: _lag(r.up)),
    Column("lag down ms", 3, lambda r: _lag(r.down)),
    Column("url", 4, lambda r: r.path.spec or "-", "left"),
    Column("rate/queue", 5, _congestion),
)


def _rows(report: SessionReport) -> list[Row]:
    ups = [directions(report, p)[0] for p in report.paths]
    downs = [directions(report, p)[1] for p in report.paths]
    total_up = sum(u.first for u in ups if u is not None)
    total_down = sum(d.first for d in downs if d is not None)
    return [
        Row(report, path, up, down, total_up, total_down)
        for path, up, down in zip(report.paths, ups, downs, strict=True)
    ]


def _title(report: SessionReport, wide: bool) -> Text:
    state = report.state
    client_view = report.role == "client"
    sent_up = report.bytes_out if client_view else report.bytes_in
    sent_down = report.bytes_in if client_view else report.bytes_out
    core = report.core
    return Text.assemble(
        (f"{report.target or '?'}", "bold"),
        f"  {report.role}  ",
        (state, STATE_STYLE.get(state, "")),
        f"  age {report.age:.0f} s  up {_bytes(sent_up)}  down {_bytes(sent_down)}",
        f"  {core.policy}" if core is not None and core.policy else "",
        (f"  session {core.session_id}" if wide and core is not None else "", "dim"),
    )


def _table(report: SessionReport, rows: list[Row], columns: list[Column], plain: bool) -> Table:
    table = Table(
        title=_title(report, wide=len(columns) > 5),
        title_justify="left",
        box=box.ASCII2 if plain else box.SIMPLE_HEAD,
        expand=False,
    )
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    return table


def session_table(report: SessionReport, plain: bool, width: int = PLAIN_WIDTH) -> Table:
    """The session's table with as many columns as fit in `width` (priority order)."""
    rows = _rows(report)
    console = Console(width=100_000)  # measures what each table needs, unclipped
    chosen = _table(report, rows, [c for c in COLUMNS if c.priority == 0], plain)
    for level in range(1, max(c.priority for c in COLUMNS) + 1):
        wider = _table(report, rows, [c for c in COLUMNS if c.priority <= level], plain)
        if console.measure(wider).maximum > width:
            break
        chosen = wider
    return chosen


@dataclass(frozen=True, slots=True)
class Process:
    """One control-socket reply, read: a dupsession or relayd process and its sessions."""

    kind: str  #: "client" or "relayd"
    pid: int | None
    daemon: dict[str, Any] | None  #: relayd's own facts (version, listen, allow, uptime)
    sessions: tuple[SessionReport, ...]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Process:
        """Raises `SchemaError` naming the process for a session it cannot read."""
        try:
            sessions = tuple(SessionReport.from_dict(s) for s in document.get("sessions", []))
        except SchemaError as exc:
            who = f"{document.get('kind', '?')} pid {document.get('pid', '?')}"
            raise SchemaError(f"{who}: {exc}") from exc
        return cls(document.get("kind", "?"), document.get("pid"), document.get("daemon"), sessions)

    def as_dict(self) -> dict[str, Any]:
        """The reply as the control socket sent it (`--json`)."""
        document: dict[str, Any] = {"v": control.VERSION, "kind": self.kind, "pid": self.pid}
        if self.daemon is not None:
            document["daemon"] = self.daemon
        document["sessions"] = [session.as_dict() for session in self.sessions]
        return document


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def daemon_header(process: Process) -> Text:
    """relayd's own lines: what it is, where it listens, whom it lets in, for how long."""
    daemon = process.daemon or {}
    allow = ", ".join(daemon.get("allow", [])) or "nobody (no --allow: every session refused)"
    listen = ", ".join(daemon.get("listen", [])) or "?"
    limit = daemon.get("max_sessions")
    return Text.assemble(
        (f"relayd {daemon.get('version', '?')}", "bold"),
        f"  pid {process.pid or '?'}  up {_duration(daemon.get('uptime', 0))}",
        f"  sessions {len(process.sessions)}" + (f"/{limit}" if limit else ""),
        f"\n  listen {listen}\n  allow  {allow}",
    )


def render(
    processes: list[Process], plain: bool = False, width: int = PLAIN_WIDTH
) -> RenderableType:
    parts: list[RenderableType] = []
    for process in processes:
        if process.kind == "relayd" and process.daemon is not None:
            parts.append(daemon_header(process))
            if not process.sessions:
                parts.append(Text("  no sessions", style="dim"))
        parts.extend(session_table(report, plain, width) for report in process.sessions)
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
    documents = collect or (lambda: control.discover(kind))

    def gather() -> list[Process]:
        return [Process.from_document(document) for document in documents()]

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
    except SchemaError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except control.ControlError as exc:
        if kind == "relayd" and socket is not None:
            print(f"relayd is not running or not answering: {exc}", file=sys.stderr)
            return NOT_RUNNING
        print(f"{program}: {exc}", file=sys.stderr)
        return 1


def _run(gather: Callable[[], list[Process]], once: bool, as_json: bool, program: str) -> int:
    if as_json:
        print(json.dumps([process.as_dict() for process in gather()], indent=2))
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
