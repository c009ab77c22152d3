"""`dupsession status` and `relayd status` on a live session over three impaired paths.

One session for the whole module: a real `dupsession 127.0.0.1 ECHOPORT` process, fed a
16-byte "keystroke" every 50 ms by a writer thread, reaches an echo target through a real
`relayd` over three UDP shims with distinct, asymmetric one-way delays:

    A: up 10 ms, down 30 ms (RTT 40)    fastest way out
    B: up 60 ms, down 10 ms (RTT 70)    fastest way back
    C: up 50 ms, down 50 ms (RTT 100), 10 % loss each way

So the views must show three different RTTs, A winning "first up" and B "first down" (the
session's floor is A out + B back), and the losers' lag behind the winner: the difference of
one-way delays, measured without any clock sync. The live view runs in a real terminal (a
private tmux server) and must quit on `q` and on Ctrl-C.

Every process is stopped by its PID, the tmux server by its unique socket name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dupsession import control
from dupsession.cli import version
from tests.support.live import (
    FIRST_DOWN,
    FIRST_UP,
    ROUTES,
    LiveSession,
    Route,
    close_to,
    expected_lags,
    start_live_session,
)
from tests.support.processes import descendants
from tests.support.relay import start_relay
from tests.support.shims import ShimThread
from tests.support.sshd import require_binary
from tests.support.targets import TcpTarget
from tests.support.tmux import TmuxPane, shell_wrapped

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSession]:
    workdir = tmp_path_factory.mktemp("status")
    with TcpTarget("echo") as target, ShimThread() as shims:
        session = start_live_session(workdir, shims, target)
        try:
            session.wait_warm()
            yield session
            code, stderr = session.typist.finish()
            assert code == 0, stderr
            assert stderr == ""
            assert not session.typist.errors
            assert session.typist.echoed == session.typist.sent  # every keystroke came back
        finally:
            session.typist.kill()
            session.relay.stop()


# -- reading the tables -------------------------------------------------------------------------

#: Columns shown at every width, and all of them (a pipe gets every column).
ALWAYS = ["path", "state", "rtt ms", "loss up", "loss down"]
ALL = [
    "path",
    "state",
    "tier",
    "rtt ms",
    "spread",
    "loss up",
    "loss down",
    "first up",
    "first down",
    "lag up ms",
    "lag down ms",
    "url",
    "rate/queue",
]
FIRST = re.compile(r"(?P<share>\d+)% \((?P<count>\d+)\)")


def parse_rows(screen: str) -> list[dict[str, str]]:
    """Every path row of every status table on `screen` (live view or plain text).

    Cells are at least two spaces apart in both layouts (the plain one also has `|`), while
    no cell holds two spaces in a row, so splitting on runs of 2+ spaces recovers them.
    """
    rows: list[dict[str, str]] = []
    in_table = False
    header: list[str] = []
    for line in screen.splitlines():
        cells = [c for c in re.split(r"\s{2,}", line.replace("|", " ").strip()) if c]
        if cells[:2] == ["path", "state"]:
            in_table, header = True, cells
        elif in_table and len(cells) == len(header):
            rows.append(dict(zip(header, cells, strict=True)))
        elif in_table and cells and not set("".join(cells)) <= set("+-─━ "):
            in_table = False  # the next session's title, or anything else
    return rows


def first_count(cell: str) -> int:
    match = FIRST.fullmatch(cell)
    assert match is not None, f"not a 'share% (count)' cell: {cell!r}"
    return int(match["count"])


def check_rows(rows: list[dict[str, str]], route_of: dict[str, Route]) -> None:
    """The rows show each route's RTT, the asymmetric winners and the one-way delay gaps."""
    by_route = {route_of[row["path"]].name: row for row in rows if row["path"] in route_of}
    assert sorted(by_route) == sorted(r.name for r in ROUTES), rows
    lags = expected_lags(ROUTES)
    for route in ROUTES:
        row = by_route[route.name]
        assert row["state"] == "up", row
        rtt = float(row["rtt ms"]) / 1e3
        assert close_to(rtt, route.rtt), f"{route.name}: rtt {rtt} vs {route.rtt}: {row}"
        if "lag up ms" not in row:
            continue  # a narrow view: the lag columns did not fit
        lag_up, lag_down = lags[route.name]
        if route.name != FIRST_UP:
            measured = float(row["lag up ms"]) / 1e3
            assert close_to(measured, lag_up), f"{route.name} lag up {measured}: {row}"
        if route.name != FIRST_DOWN:
            measured = float(row["lag down ms"]) / 1e3
            assert close_to(measured, lag_down), f"{route.name} lag down {measured}: {row}"
    if not all("first up" in row for row in rows):
        return
    ups = {name: first_count(row["first up"]) for name, row in by_route.items()}
    downs = {name: first_count(row["first down"]) for name, row in by_route.items()}
    assert max(ups, key=ups.__getitem__) == FIRST_UP, ups
    assert max(downs, key=downs.__getitem__) == FIRST_DOWN, downs
    # 40 ms (up) and 20 ms (down) ahead of the next route: it wins nearly every frame.
    assert ups[FIRST_UP] >= 0.9 * sum(ups.values()), ups
    assert downs[FIRST_DOWN] >= 0.9 * sum(downs.values()), downs


def client_route_map(live: LiveSession) -> dict[str, Route]:
    return {live.label(route): route for route in ROUTES}


# -- the live view in a real terminal -----------------------------------------------------------


def _live_view(live: LiveSession, pane_factory: Any) -> tuple[TmuxPane, str]:
    """`dupsession status` in a terminal, once it shows all three paths with RTTs."""
    pane = pane_factory(shell_wrapped([require_binary("dupsession"), "status"]), live.env)
    route_of = client_route_map(live)

    def complete(screen: str) -> bool:
        rows = parse_rows(screen)
        return {r["path"] for r in rows if r["rtt ms"] != "-"} >= set(route_of)

    screen = pane.wait_for(complete, 15, "a status table with every path")
    return pane, screen


def test_live_view_in_terminal_quits_on_q(live: LiveSession, pane_factory: Any) -> None:
    pane, screen = _live_view(live, pane_factory)
    assert pane.display("#{alternate_on}") == "1"  # a full-screen view, like top
    assert "(q to quit)" in screen
    assert live.target in screen and "client" in screen
    check_rows(parse_rows(screen), client_route_map(live))
    rows = parse_rows(screen)
    assert len(rows) == len(ROUTES)  # only this module's session: the runtime dir is ours
    # It is live: counters grow while the typist types (refresh every 0.5 s).
    before = sum(first_count(r["first up"]) for r in rows)
    later = pane.wait_for(
        lambda s: sum(first_count(r["first up"]) for r in parse_rows(s)) > before,
        5,
        "a refreshed table",
    )
    check_rows(parse_rows(later), client_route_map(live))
    sent = time.monotonic()
    pane.send_keys("q")
    assert pane.wait_exit(5) == 0
    assert time.monotonic() - sent < 3
    assert pane.display("#{alternate_on}") == "0"  # the terminal's screen was given back
    assert "first up" not in pane.capture()


def test_live_view_quits_on_ctrl_c(live: LiveSession, pane_factory: Any) -> None:
    pane, screen = _live_view(live, pane_factory)
    check_rows(parse_rows(screen), client_route_map(live))
    pane.send_keys("C-c")
    assert pane.wait_exit(5) == 0  # handled: not 130, not a traceback
    assert pane.display("#{alternate_on}") == "0"
    assert "Traceback" not in pane.capture()


def test_live_view_with_stdin_at_eof_does_not_spin(live: LiveSession, pane_factory: Any) -> None:
    """stdin at EOF (here /dev/null) must not turn the refresh loop into a busy loop."""
    argv = shell_wrapped([require_binary("dupsession"), "status"], stdin_devnull=True)
    pane = pane_factory(argv, live.env)
    pane.wait_for(lambda s: "first up" in s, 15, "the status table")
    (pid,) = descendants(int(pane.display("#{pane_pid}")))  # sh's one child: the view
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    start_cpu, start = cpu_seconds(), time.monotonic()
    time.sleep(3)
    share = (cpu_seconds() - start_cpu) / (time.monotonic() - start)
    assert share < 0.5, f"status used {share:.0%} of a CPU while idle"
    pane.send_keys("C-c")
    assert pane.wait_exit(5) == 0


# -- one-shot views -----------------------------------------------------------------------------


def run_cli(live: LiveSession, *argv: str) -> str:
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=20,
        env=live.env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize("once", [True, False], ids=["once", "not-a-terminal"])
def test_once_prints_plain_text(live: LiveSession, once: bool) -> None:
    """--once, or any stdout that is not a terminal: one plain-text snapshot, then exit."""
    dupsession = require_binary("dupsession")
    out = run_cli(live, dupsession, "status", *(["--once"] if once else []))
    assert "\x1b" not in out  # no colour, no cursor movement: fit for a pipe or a file
    assert "+---" in out and "| path" in out  # ASCII box
    assert out.count(live.target) == 1
    rows = parse_rows(out)
    assert len(rows) == len(ROUTES), out
    assert list(rows[0]) == ALL  # a pipe gets every column
    assert [row["url"] for row in rows] == [live.specs[r.name] for r in ROUTES]
    check_rows(rows, client_route_map(live))
    doc = live.client_document()["sessions"][0]
    assert f"session {doc['session_id']}" in out


def test_json_snapshot(live: LiveSession) -> None:
    out = run_cli(live, require_binary("dupsession"), "status", "--json")
    documents = json.loads(out)
    assert isinstance(documents, list) and len(documents) == 1
    document = documents[0]
    assert document["v"] == control.VERSION
    assert document["kind"] == "client"
    assert document["pid"] == live.typist.pid
    (doc,) = document["sessions"]
    assert doc["role"] == "client" and doc["state"] == "up"
    assert doc["target"] == live.target
    assert re.fullmatch(r"[0-9a-f]{16}", doc["session_id"])
    assert doc["bytes_out"] > 0 and doc["bytes_in"] > 0
    assert [p["spec"] for p in doc["paths"]] == [live.specs[r.name] for r in ROUTES]
    assert [p["id"] for p in doc["paths"]] == [1, 2, 3]  # the --path order
    lags = expected_lags(ROUTES)
    for path in doc["paths"]:
        route = live.route_of_spec(path["spec"])
        assert path["kind"] == "datagram" and path["state"] == "up"
        assert close_to(path["rtt"], route.rtt), (route, path["rtt"])
        # No sample can beat the configured delays (the shim adds them; there is no jitter).
        assert route.rtt - 0.002 <= path["rtt_min"] <= path["rtt"] + 0.002
        assert sum(path["rtt_buckets"]) == path["rtt_count"] > 0
        assert len(path["rtt_recent"]) > 0
        lag_up, lag_down = lags[route.name]
        if route.name != FIRST_UP:
            assert close_to(path["outbound"]["lag"], lag_up), (route, path["outbound"])
        if route.name != FIRST_DOWN:
            assert close_to(path["inbound"]["lag"], lag_down), (route, path["inbound"])
        assert path["inbound"]["first"] <= path["inbound"]["frames"]
        cc = path["congestion"]  # the path's controller, as `dupsession status --json` shows it
        assert cc["kind"] == "model-rate" and cc["mode"] in ("startup", "drain", "probe")
        assert route.rtt - 0.002 <= cc["min_rtt"] <= path["rtt"] + 0.002, cc
        assert cc["queue_delay"] is not None and cc["queue_delay"] >= 0, cc
        assert cc["rate_bps"] > 0 and cc["cwnd_frames"] >= 4, cc
        if route.loss:
            assert 0 < path["outbound"]["loss"] < 0.5, path  # measured by the exit
            assert 0 < path["inbound"]["loss"] < 0.5, path  # measured here
        else:
            assert path["outbound"]["loss"] < 0.02 and path["inbound"]["loss"] < 0.02, path
    ups = {live.route_of_spec(p["spec"]).name: p["outbound"]["first"] for p in doc["paths"]}
    downs = {live.route_of_spec(p["spec"]).name: p["inbound"]["first"] for p in doc["paths"]}
    assert max(ups, key=ups.__getitem__) == FIRST_UP
    assert max(downs, key=downs.__getitem__) == FIRST_DOWN


def test_relayd_status_shows_the_same_session(live: LiveSession) -> None:
    relayd = require_binary("relayd")
    client_doc = live.client_document()["sessions"][0]
    documents = json.loads(run_cli(live, relayd, "status", "--json"))
    assert [d["kind"] for d in documents] == ["relayd"]
    assert documents[0]["pid"] == live.relay.pid
    (exit_doc,) = documents[0]["sessions"]
    assert exit_doc["session_id"] == client_doc["session_id"]
    assert exit_doc["role"] == "exit" and exit_doc["state"] == "up"
    assert exit_doc["target"] == live.target
    # The exit knows each path by the id the client gave it (the --path order) and by the
    # source address it comes from: the shim's upstream socket.
    routes_by_id = dict(enumerate(ROUTES, start=1))
    assert sorted(p["id"] for p in exit_doc["paths"]) == sorted(routes_by_id)
    route_of: dict[str, Route] = {}
    for path in exit_doc["paths"]:
        route = routes_by_id[path["id"]]
        assert re.fullmatch(r"udp from 127\.0\.0\.1:\d+", path["spec"]), path["spec"]
        assert close_to(path["rtt"], route.rtt), (route, path["rtt"])
        route_of[path["spec"]] = route
    # Seen from the exit, "up" is what it receives: the client's outbound wins are its inbound.
    wins_up = {routes_by_id[p["id"]].name: p["inbound"]["first"] for p in exit_doc["paths"]}
    wins_down = {routes_by_id[p["id"]].name: p["outbound"]["first"] for p in exit_doc["paths"]}
    assert max(wins_up, key=wins_up.__getitem__) == FIRST_UP
    assert max(wins_down, key=wins_down.__getitem__) == FIRST_DOWN

    out = run_cli(live, relayd, "status", "--once")
    assert "\x1b" not in out
    title = next(line for line in out.splitlines() if line.startswith(live.target))
    assert "exit" in title and f"session {client_doc['session_id']}" in title
    rows = parse_rows(out)
    assert len(rows) == len(ROUTES), out
    header = out.splitlines()[:3]
    assert header[0].startswith(f"relayd {version()}  pid {live.relay.pid}  up "), header
    assert header[0].endswith("sessions 1/1024"), header
    assert header[1] == f"  listen udp+tcp 127.0.0.1:{live.relay.port}", header
    assert header[2] == f"  allow  127.0.0.1:{live.target_port}", header
    check_rows(rows, route_of)
    # And the client's view does not list the exit's side, nor the exit the client's.
    assert "udp from" not in run_cli(live, require_binary("dupsession"), "status", "--once")
    assert "udp://" not in out


def _status(program: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary(program), "status", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_status_without_sessions(tmp_path: Path) -> None:
    """No session is not an error; no relayd at all is said as such (exit 3)."""
    run_dir = tmp_path / "empty-run"
    env = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(run_dir)}
    result = _status("dupsession", env, "--once")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no dupsession sessions on this machine"
    result = _status("relayd", env, "--once")
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"relayd is not running on this machine (no control socket in {run_dir}"
    )
    for program in ("dupsession", "relayd"):
        result = _status(program, env, "--json")
        assert result.returncode == 0 and json.loads(result.stdout) == []


def test_relayd_status_running_without_sessions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(run_dir)}
    relay = start_relay(
        tmp_path / "relay",
        ["localhost:22", "127.0.0.1:*"],
        extra_args=["--control", str(run_dir / "relayd-x.sock")],
    )
    try:
        result = _status("relayd", env, "--once")
        # Named by its socket, from anywhere (another user's relayd, a systemd unit's).
        elsewhere = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(tmp_path / "other")}
        named = _status("relayd", elsewhere, "--once", "--control", str(run_dir / "relayd-x.sock"))
    finally:
        relay.stop()
    assert named.returncode == 0, named
    assert named.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]  # uptime aside
    gone = _status("relayd", elsewhere, "--once", "--control", str(run_dir / "relayd-x.sock"))
    assert gone.returncode == 3, gone
    assert gone.stderr.startswith("relayd is not running or not answering: "), gone.stderr
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"relayd {version()}  pid {relay.pid}  up "), lines
    assert lines[0].endswith("  sessions 0/1024"), lines
    assert lines[1:] == [
        f"  listen udp+tcp 127.0.0.1:{relay.port}",
        "  allow  127.0.0.1:*, localhost:22",
        "  no sessions",
    ]


@pytest.mark.parametrize(
    ("size", "columns"),
    [
        ((80, 24), ALWAYS),
        ((160, 48), ALL[:10]),  # and the URL too when, as here, it is short
    ],
    ids=["80x24", "160x48"],
)
def test_live_view_fits_the_terminal(
    size: tuple[int, int], columns: list[str], live: LiveSession, pane_factory: Any
) -> None:
    """State, RTT and loss at 80 columns; more columns as the terminal widens; nothing cut."""
    pane = pane_factory(shell_wrapped([require_binary("dupsession"), "status"]), live.env, size)
    route_of = client_route_map(live)

    def complete(screen: str) -> bool:
        return {r["path"] for r in parse_rows(screen) if r["rtt ms"] != "-"} >= set(route_of)

    screen = pane.wait_for(complete, 15, "a status table with every path")
    assert pane.display("#{window_width}x#{window_height}") == f"{size[0]}x{size[1]}"
    rows = parse_rows(screen)
    assert all(list(row)[: len(columns)] == columns for row in rows), screen
    assert size[0] > 80 or all(list(row) == columns for row in rows), screen
    assert "…" not in screen, screen  # no cell or title truncated
    assert all(len(line) <= size[0] for line in screen.splitlines())
    # Values are judged by the other views' tests (timing-sensitive); here, that they show.
    for row in rows:
        assert row["state"] == "up" and float(row["rtt ms"]) > 0, row
        assert row["loss up"].endswith("%") and row["loss down"].endswith("%"), row
    pane.send_keys("q")
    assert pane.wait_exit(5) == 0
