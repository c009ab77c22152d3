"""`dupsession probe` through shimmed routes of known delay, and relayd's Prometheus metrics.

The probe must find each route's RTT (the configured up + down delay), which route is the
fastest way out and which the fastest way back, and end its session cleanly at the exit.

The metrics endpoint is scraped during a live session (the one of test_status.py: three
UDP routes with asymmetric delays) and parsed with prometheus_client's own parser; every
value is checked against relayd's control-socket snapshots taken just before and just after
the scrape. Without --metrics, relayd listens on no TCP port but its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dupsession import control
from dupsession.testing.shim import Impairment
from tests.support.live import (
    ROUTES,
    LiveSession,
    Route,
    close_to,
    expected_lags,
    start_live_session,
)
from tests.support.relay import Relay, keygen
from tests.support.shims import ShimThread
from tests.support.sshd import free_port, require_binary
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(60)

PROBE_SECONDS = "2.5"

#: Probe routes: A is the fastest way out, B the fastest way back; C is a TCP path.
PROBE_ROUTES = (
    (Route("A", 0.010, 0.030), "udp"),
    (Route("B", 0.060, 0.010), "udp"),
    (Route("C", 0.050, 0.050), "tcp"),
)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own control-socket directory, for relayd and dupsession alike."""
    directory = tmp_path / "run"
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def probe_routes(
    run_dir: Path, relays: Callable[..., Relay], shims: ShimThread
) -> tuple[Relay, dict[str, str]]:
    """A relay (the probe needs no allow-list entry) behind the three probe routes."""
    relay = relays(allow=[])
    specs = {}
    for seed, (route, kind) in enumerate(PROBE_ROUTES):
        make = shims.udp if kind == "udp" else shims.tcp
        shim = make(
            (relay.host, relay.port),
            up=Impairment(delay=route.up),
            down=Impairment(delay=route.down),
            seed=seed,
        )
        specs[route.name] = f"{kind}://127.0.0.1:{shim.port}"
    return relay, specs


def run_probe(relay: Relay, paths: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [require_binary("dupsession"), "probe", "--key", str(relay.key)]
    for path in paths:
        argv += ["--path", path]
    return subprocess.run(
        [*argv, "--seconds", PROBE_SECONDS, *extra, "exit-host"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_probe_json_route_matrix(probe_routes: tuple[Relay, dict[str, str]]) -> None:
    relay, specs = probe_routes
    result = run_probe(relay, list(specs.values()), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    routes = report["routes"]
    assert [r["spec"] for r in routes] == list(specs.values())
    lags = expected_lags([route for route, _ in PROBE_ROUTES])
    for (route, _), measured in zip(PROBE_ROUTES, routes, strict=True):
        assert measured["state"] == "up", measured
        assert measured["uplink"] == "default" and measured["via"] == "direct"
        # The probe reports the minimum RTT: never below the configured delays, and close.
        assert route.rtt - 0.002 <= measured["rtt"], (route, measured)
        assert close_to(measured["rtt"], route.rtt), (route, measured)
        assert measured["loss_up"] < 0.02 and measured["loss_down"] < 0.02, measured
        lag_up, lag_down = lags[route.name]
        if route.name != "A":
            assert close_to(measured["lag_up"], lag_up), (route, measured)
        if route.name != "B":
            assert close_to(measured["lag_down"], lag_down), (route, measured)
    assert report["best_up"] == specs["A"]
    assert report["best_down"] == specs["B"]
    first_up = {r["spec"]: r["first_up"] for r in routes}
    first_down = {r["spec"]: r["first_down"] for r in routes}
    assert first_up[specs["A"]] >= 0.9 * sum(first_up.values()) > 0
    assert first_down[specs["B"]] >= 0.9 * sum(first_down.values()) > 0
    # The probe ended its session: the exit holds a closed tombstone, not a session waiting
    # out its grace period for a client that is gone.
    relay.wait_for_log(r"session \w+: closed by \w+: session ended")
    (document,) = control.discover("relayd")
    assert [s["state"] for s in document["sessions"]] == ["closed"]
    assert [s["target"] for s in document["sessions"]] == ["probe:0"]


def test_probe_prints_the_matrix(probe_routes: tuple[Relay, dict[str, str]]) -> None:
    relay, specs = probe_routes
    result = run_probe(relay, list(specs.values()))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Route matrix" in out and "direct" in out and "default" in out
    for spec in specs.values():
        assert spec in out
    assert f"best route out (client -> exit): {specs['A']}" in out
    assert f"best route back (exit -> client): {specs['B']}" in out
    assert "echo over all routes: p50" in out


def test_probe_lists_an_unreachable_route(probe_routes: tuple[Relay, dict[str, str]]) -> None:
    """A TCP route that cannot even connect is in the matrix, as one with no answer."""
    relay, specs = probe_routes
    dead = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_probe(relay, [specs["A"], dead], "--json")
    assert result.returncode == 0, result.stderr
    routes = {r["spec"]: r for r in json.loads(result.stdout)["routes"]}
    assert set(routes) == {specs["A"], dead}
    assert routes[dead]["rtt"] is None and routes[dead]["state"] == "unreachable"
    assert routes[specs["A"]]["rtt"] is not None
    text = run_probe(relay, [specs["A"], dead])
    assert text.returncode == 0, text.stderr
    assert "no answer" in text.stdout


def test_probe_failure_is_one_line_on_stderr(
    tmp_path: Path, probe_routes: tuple[Relay, dict[str, str]]
) -> None:
    """A wrong key: exit code 3 and why on stderr; stdout (JSON for scripts) stays empty."""
    _, specs = probe_routes
    wrong = keygen(tmp_path / "wrong.key")
    argv = [require_binary("dupsession"), "probe", "--key", str(wrong), "--path", specs["A"]]
    result = subprocess.run(
        [*argv, "--connect-timeout", "1", "--json", "exit-host"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert result.stderr.startswith("dupsession probe: no answer from the exit"), result.stderr
    assert result.stderr.count("\n") == 1


# -- metrics ------------------------------------------------------------------------------------


def listening_tcp(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket process `pid` holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                    address, port = fields[1].split(":")
                    found.add((_address(address), int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_address)[::-1])
    raw = bytes.fromhex(hex_address)
    return socket.inet_ntop(
        socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    )


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveSession, int]]:
    """The live session of test_status.py, with relayd serving metrics on a free port."""
    workdir = tmp_path_factory.mktemp("metrics")
    with TcpTarget("echo") as target, ShimThread() as shims:
        for attempt in range(3):
            port = free_port()
            try:
                session = start_live_session(
                    workdir / f"attempt{attempt}",
                    shims,
                    target,
                    relay_args=["--metrics", f"127.0.0.1:{port}"],
                )
            except AssertionError:
                continue  # the metrics port was taken meanwhile
            break
        else:
            raise AssertionError("relayd with --metrics would not start")
        try:
            session.relay.wait_for_log(rf"metrics on http://127\.0\.0\.1:{port}/metrics")
            session.wait_warm()
            yield session, port
            code, stderr = session.typist.finish()
            assert code == 0, stderr
        finally:
            session.typist.kill()
            session.relay.stop()


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """(status, content type, body) of one GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def relayd_session(live: LiveSession) -> dict[str, Any]:
    (document,) = control.discover("relayd", live.run_dir)
    (session,) = document["sessions"]
    return session


def samples(text: str) -> dict[str, list[Sample]]:
    """Samples per metric family name, from prometheus_client's parser."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def one(found: list[Sample], name: str, **labels: str) -> float:
    matching = [
        s for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0].value


def test_metrics_during_a_live_session(metered: tuple[LiveSession, int]) -> None:
    live, port = metered
    before = relayd_session(live)
    status, content_type, body = scrape(port)
    after = relayd_session(live)
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "# HELP relayd_sessions " in body and "# TYPE relayd_path_rtt_seconds histogram" in body
    families = samples(body)
    sid = before["session_id"]
    assert after["session_id"] == sid

    assert one(families["relayd_sessions"], "relayd_sessions") == 1
    assert one(families["relayd_rejected_frames"], "relayd_rejected_frames_total") >= 0
    for direction, key in (("up", "bytes_in"), ("down", "bytes_out")):
        carried = one(
            families["relayd_session_bytes"],
            "relayd_session_bytes_total",
            session=sid,
            target=live.target,
            direction=direction,
        )
        assert 0 < before[key] <= carried <= after[key], (direction, carried)

    by_id = dict(enumerate(ROUTES, start=1))
    paths_before = {p["id"]: p for p in before["paths"]}
    paths_after = {p["id"]: p for p in after["paths"]}
    first_up: dict[str, float] = {}
    first_down: dict[str, float] = {}
    for path_id, route in by_id.items():
        labels = {"session": sid, "path": str(path_id)}
        old, new = paths_before[path_id], paths_after[path_id]
        assert one(families["relayd_path_up"], "relayd_path_up", **labels) == 1
        frames = one(
            families["relayd_path_frames"], "relayd_path_frames_total", direction="up", **labels
        )
        assert 0 < old["inbound"]["frames"] <= frames <= new["inbound"]["frames"]
        up = one(families["relayd_path_first"], "relayd_path_first_total", direction="up", **labels)
        down = one(
            families["relayd_path_first"], "relayd_path_first_total", direction="down", **labels
        )
        assert old["inbound"]["first"] <= up <= new["inbound"]["first"]
        assert old["outbound"]["first"] <= down <= new["outbound"]["first"]
        assert up <= frames  # a path cannot deliver first more frames than it carried
        first_up[route.name], first_down[route.name] = up, down
        for direction in ("up", "down"):
            loss = one(
                families["relayd_path_loss_ratio"],
                "relayd_path_loss_ratio",
                direction=direction,
                **labels,
            )
            assert (0 < loss < 0.5) if route.loss else (loss < 0.02), (route, direction, loss)
        check_histogram(families["relayd_path_rtt_seconds"], labels, route, old, new)
    assert max(first_up, key=first_up.__getitem__) == "A"
    assert max(first_down, key=first_down.__getitem__) == "B"
    assert sum(first_down.values()) > 0


def check_histogram(
    found: list[Sample], labels: dict[str, str], route: Route, old: dict[str, Any], new: Any
) -> None:
    mine = [s for s in found if all(s.labels.get(k) == v for k, v in labels.items())]
    buckets = sorted(
        ((float(s.labels["le"]), s.value) for s in mine if s.name.endswith("_bucket")),
        key=lambda bucket: bucket[0],
    )
    count = one(mine, "relayd_path_rtt_seconds_count")
    total = one(mine, "relayd_path_rtt_seconds_sum")
    assert old["rtt_count"] <= count <= new["rtt_count"] and count > 0
    assert buckets[-1] == (float("inf"), count)
    values = [value for _, value in buckets]
    assert values == sorted(values), buckets  # cumulative: never decreasing
    # No sample below the configured RTT; the mean close to it.
    below = max(value for bound, value in buckets if bound < route.rtt - 0.002)
    assert below == 0, (route, buckets)
    assert close_to(total / count, route.rtt), (route, total / count)


def test_metrics_answers_only_get_metrics(metered: tuple[LiveSession, int]) -> None:
    _, port = metered
    assert scrape(port, "/metrics?name[]=relayd_sessions")[0] == 200
    for path in ("/", "/metric", "/metrics/", "/metricsx", "/favicon.ico"):
        status, _, body = scrape(port, path)
        assert (status, body) == (404, "not found\n"), path
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404
    caught.value.close()
    # Garbage and a connection that says nothing are dropped quietly (relayd's log is
    # checked for errors when it stops).
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 404 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert scrape(port)[0] == 200


def test_metrics_listener_is_the_only_extra_port(metered: tuple[LiveSession, int]) -> None:
    live, port = metered
    assert listening_tcp(live.relay.pid) == {("127.0.0.1", live.relay.port), ("127.0.0.1", port)}


def test_metrics_are_off_by_default(run_dir: Path, relays: Callable[..., Relay]) -> None:
    relay = relays(allow=["127.0.0.1:22"])
    assert "metrics on" not in relay.log
    # Its own port (TCP paths) is the one TCP listener; the control socket is a Unix socket.
    assert listening_tcp(relay.pid) == {("127.0.0.1", relay.port)}
    assert list(run_dir.glob("relayd-*.sock")) == [run_dir / f"relayd-{relay.port}.sock"]
