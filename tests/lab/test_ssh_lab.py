"""Real OpenSSH through dupsession across the network lab: 2 uplinks x (2 relays + direct).

The client namespace runs `ssh` with `ProxyCommand dupsession --config CONFIG %h %p`; the
config (uplinks, exit, relays) yields 12 paths, 2 uplinks x (direct UDP and TCP, UDP and TCP
through `relayd relay` on relay1, UDP through relay2, an SSH relay through relay2's stock
sshd). Every route has its own asymmetric delay and 2-5 % independent loss each way (world.py).
Each test prints its measured figures (run with -s to see them). Needs root; about 2 minutes.

Two tests end in XFAIL on a known client bug (RENUMBER_BUG, UDP_ICMP_BUG below), and only
after everything else they check has passed; once the bug is fixed they pass.
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.world import (
    PROBE_INTERVAL,
    ROUTES,
    UPLINKS,
    EchoSession,
    World,
    route_rtt,
    sha256_file,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.timeout(120)

BULK = 20_000_000
#: Bytes per second of a transfer that a route carrying copies of it outruns (redundant).
#: Not a share of BULK: each path sends every frame its controller lets through before the
#: fastest paths get it acknowledged, and how far its estimate grows follows how the lab's
#: 2 cores are shared (emulator, relays, both ends, ssh; paths of one RTT ended 4x apart).
#: In 57 runs, 3c89570 and 4106c1b alternating, the least route carried 1.6-13 MB; on a
#: quiet machine (3 s transfers) 1.6, 1.8 and 1.9 MB, under the old bound BULK // 10 on both
#: trees. Per second the least was 310 KB/s (a busy machine; 480 quiet). A route whose two
#: paths carry no copies (left out of copy_everything) still carries probes, ACKs and their
#: connections' setup: 5.7-12 KB/s in 3.5-18 s transfers. 50 KB/s sits between the two.
COPY_RATE = 50_000
#: ...but not per second alone (review H8): much of a no-copy route's traffic is a fixed cost
#: (84-104 KB per transfer), so on a fast transfer (2-3 s: a bound of 100-150 KB) it came
#: within reach of the rate bound. The least route that carried copies carried 1.6 MB (1.3 MB
#: in a 3.9 s upload on 3374f29); the bound is at least this, between the two.
COPY_FLOOR = 500_000
TRANSFER_TIMEOUT = 90.0
#: Allowed above the best surviving path's RTT for any echo around a cut: issue 3's target
#: ("no echo gap longer than the best surviving path's RTT + 50 ms").
SLACK_MS = 50.0
#: The bound is a maximum over ~130 echoes, so one scheduling stall of the machine anywhere
#: fails it: beside two busy loops on the 2 cores a run failed at 101.5 ms with the worst echo
#: *before* the cut as slow (102.1); quiet 55.6, busy 83.7, 101.5 and, beside other tests,
#: 122.9 ms (136.3 before that cut; best surviving RTT 48). So the same session's echoes before
#: the cut are the control: the cut may cost no more than SLACK_MS above the worst stall they
#: showed over their median (review L14, 2026-12-03), up to NOISE_CAP_MS: a policy whose own
#: tail is long stalls before the cut too, and must not buy itself a looser bound. What it
#: guards, an echo whose only copy must be resent: with `policy = "stripe"` (each frame once)
#: the maximum was 207-308 ms (279.5 and 284.3 with pre-cut "noise" of 212-247 ms of its own).
NOISE_CAP_MS = 70.0
CONTROL_SETTLE = 1.0  #: s after the session starts before its echoes count as the control


def _summary(ms: list[float]) -> str:
    if not ms:
        return "no echoes"
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ms)} echoes, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ordered[-1]:.1f} ms"
    )


def _finish(world: World, echo: EchoSession) -> None:
    """End the echo session cleanly and check every byte came back once, in order."""
    code = echo.finish()
    assert code == 0, f"ssh exited {code}:\n{echo.ssh_stderr}\n" + world.diagnostics(echo.proxy)
    echo.check_stream()
    rc = echo.proxy.wait()
    assert rc == 0, world.diagnostics(echo.proxy)


def _one_session(world: World) -> None:
    """The exit saw exactly one session, and it never had to be re-established."""
    opened = world.exit.log.count(": opened for target")
    assert opened == 1, world.diagnostics()


@pytest.fixture(scope="module")
def bulk_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """BULK random bytes; namespaces share the file system, so the server reads it too."""
    path = tmp_path_factory.mktemp("lab-bulk") / "random.bin"
    with path.open("wb") as f:
        for _ in range(BULK // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(BULK % (1 << 20)))
    return path, sha256_file(path)


def test_commands_and_20mb_each_way(world: World, bulk_file: tuple[Path, str]) -> None:
    """All 12 paths up, every route lossy: commands work, 20 MB each way arrive byte-exact.
    Redundant policy: the route counters below check that every route carried copies of both
    transfers and lost packets (auto, the default, may leave a slow route out of a transfer)."""
    source, expected = bulk_file
    config = world.write_config(policy="redundant")

    proxy = world.proxy(config, "cmd")
    proc = world.ssh_popen(
        proxy, "echo hello over the lab; uname -s", stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode() + world.diagnostics(proxy)
    assert out == b"hello over the lab\nLinux\n"
    assert proxy.wait() == 0, world.diagnostics(proxy)

    world.lab.reset_counters()
    proxy = world.proxy(config, "upload")
    start = time.monotonic()
    with source.open("rb") as stdin:
        proc = world.ssh_popen(
            proxy, "sha256sum", stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = proc.communicate(timeout=TRANSFER_TIMEOUT)
    up_seconds = time.monotonic() - start
    assert proc.returncode == 0, err.decode() + world.diagnostics(proxy)
    assert out.split()[0].decode() == expected
    assert proxy.wait() == 0, world.diagnostics(proxy)
    up_stats = world.lab.stats()["stages"]

    world.lab.reset_counters()
    got = world.download(config, source, "download", TRANSFER_TIMEOUT)
    down_seconds = got.seconds
    assert got.received == BULK
    assert got.digest == expected
    down_stats = world.lab.stats()["stages"]
    world.check_logs_clean()

    print(
        f"\n20 MB upload {up_seconds:.1f} s ({BULK / up_seconds / 1e6:.2f} MB/s), "
        f"download {down_seconds:.1f} s ({BULK / down_seconds / 1e6:.2f} MB/s)"
    )
    # Redundant: every route carried copies of both transfers, and really lost packets.
    for uplink, via in ROUTES:
        route = f"{uplink}-{via}"
        up, down = up_stats[route]["out"]["counters"], down_stats[route]["back"]["counters"]
        print(
            f"  {route}: upload {up['bytes'] / 1e6:.1f} MB ({up['loss']} packets lost), "
            f"download {down['bytes'] / 1e6:.1f} MB ({down['loss']} lost)"
        )
        for counters, seconds in ((up, up_seconds), (down, down_seconds)):
            bound = max(COPY_RATE * seconds, COPY_FLOOR)
            assert counters["bytes"] > bound, (route, seconds, bound, counters)
            assert counters["loss"] > 0, (route, counters)


def test_route_cut_mid_session_leaves_no_echo_gap(world: World) -> None:
    """The best route (up1-relay1: 2 of the 12 paths) dies mid-session: no echo waits longer
    than the best surviving path's RTT + SLACK_MS, beyond the stalls the same session showed
    before the cut (none waits for a resend)."""
    cut = ("up1", "relay1")
    best_surviving = min(route_rtt(u, v) for u, v in ROUTES if (u, v) != cut)
    echo = EchoSession(world, world.proxy(world.write_config(), "echo")).start()
    time.sleep(4.0)
    cut_at = time.monotonic()
    world.set_routes([cut], down=True)
    time.sleep(6.0)
    _finish(world, echo)
    before = echo.latencies(since=echo.started + CONTROL_SETTLE, until=cut_at)
    after = echo.latencies(since=cut_at - 0.5)
    arrivals = [t for _, t in echo.received]
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    print(
        f"\nbefore the cut: {_summary(before)}\nfrom the cut on: {_summary(after)}\n"
        f"longest silence between echoes: {max(gaps):.1f} ms (writer period "
        f"{echo.interval * 1000:.0f} ms); best surviving RTT {best_surviving:.0f} ms"
    )
    assert len(after) > 100 and len(before) > 40
    # the machine's stalls, not the cut's (capped: see NOISE_CAP_MS)
    noise = min(NOISE_CAP_MS, max(0.0, max(before) - statistics.median(before)))
    bound = best_surviving + SLACK_MS + noise
    print(f"bound {best_surviving:.0f} + {SLACK_MS:.0f} + noise {noise:.1f} = {bound:.1f} ms")
    assert max(after) <= bound, world.diagnostics(echo.proxy)
    _one_session(world)
    world.check_logs_clean()


def test_total_outage_of_30s_then_one_route_back(world: World) -> None:
    """Every route down for 30 s, then only up2-relay2: the same ssh session resumes, the
    lines typed during the outage all arrive, none lost or repeated."""
    echo = EchoSession(world, world.proxy(world.write_config(), "outage")).start()
    time.sleep(3.0)
    world.set_routes(ROUTES, down=True)
    down_at = time.monotonic()
    time.sleep(30.0)
    world.set_routes([("up2", "relay2")], down=False)
    up_at = time.monotonic()
    echo.wait_echoes(len(echo.sent), timeout=15.0)
    caught_up = time.monotonic()
    time.sleep(2.0)
    _finish(world, echo)
    during = [t for t in echo.arrivals_after(down_at) if t < up_at]
    resumed = echo.arrivals_after(up_at)
    resume_s = resumed[0] - up_at
    lines_during = sum(1 for t in echo.sent if down_at <= t < up_at)
    print(
        f"\noutage {up_at - down_at:.1f} s; {lines_during} lines typed meanwhile; first echo "
        f"{resume_s * 1000:.0f} ms after the route came back, all caught up after "
        f"{(caught_up - up_at) * 1000:.0f} ms; echoes after: "
        f"{_summary(echo.latencies(since=up_at + 1))}"
    )
    assert len(during) <= 3  # only what was already in flight when the routes died
    assert resume_s <= 3 * PROBE_INTERVAL + 1.0, world.diagnostics(echo.proxy)
    _one_session(world)
    world.check_logs_clean()


def _renumber(world: World, uplink: str, new: str) -> None:
    """The uplink's address changes, as on a DHCP renewal; routes and the rule follow."""
    lab = world.lab
    old = lab.addr("client", uplink)
    table = 100 + UPLINKS.index(uplink) + 1
    gateway = lab.addr("wan", uplink)
    lab.run(
        "client",
        f"ip addr del {old}/24 dev {uplink} && ip addr add {new}/24 dev {uplink} && "
        f"ip route replace default via {gateway} dev {uplink} table {table} && "
        f"ip route replace default via {gateway} dev {uplink} metric {table} && "
        f"ip rule del from {old} lookup {table} && "
        f"ip rule add from {new} lookup {table} priority {1000 + table - 100}",
    )


#: Known bug (reported, not fixed here: dupsession/aio/transports.py and client.py): a path
#: bound to an interface keeps the source address its socket got at connect(). A connected UDP
#: socket then fails every send with ENETUNREACH (swallowed as "the path is just silent") and a
#: TCP or SSH connection hangs on the vanished address; nothing re-dials a path that went down.


def test_uplink_address_change_mid_session(world: World) -> None:
    """up1's address changes mid-session (paths bound by interface name, `uplinks = ["up1",
    "up2"]`): the session goes on unharmed; then up2 dies and only up1's new address is left."""
    config = world.write_config(uplinks=UPLINKS)
    echo = EchoSession(world, world.proxy(config, "roam")).start()
    time.sleep(3.0)
    renumbered = time.monotonic()
    _renumber(world, "up1", "198.18.1.77")
    time.sleep(4.0)
    during = echo.latencies(renumbered - 0.5, time.monotonic() - 0.5)
    print(f"\naround the renumbering: {_summary(during)}")
    assert len(during) >= 60 and max(during) <= 150, world.diagnostics(echo.proxy)

    world.lab.set_link("up2", down=True)
    cut_at = time.monotonic()
    wait_for(lambda: bool(echo.arrivals_after(cut_at + 1.0)), 6.0, "an echo over up1 alone")
    time.sleep(4.0)
    _finish(world, echo)
    print(f"over up1's new address alone: {_summary(echo.latencies(since=cut_at + 2.0))}")
    _one_session(world)
    world.check_logs_clean()


def test_uplink_address_change_followed_by_config(world: World) -> None:
    """Uplinks given by address; when up1's changes, the config is rewritten with the new one.
    The watcher swaps up1's six paths (relayed ones included) into the live session; then
    up2 dies and the session carries on over the new paths alone."""
    old = world.lab.addr("client", "up1")
    new = "198.18.1.78"
    up2 = world.lab.addr("client", "up2")
    config = world.write_config(uplinks=[old, up2])
    echo = EchoSession(world, world.proxy(config, "roamcfg")).start()
    time.sleep(3.0)
    _renumber(world, "up1", new)
    world.write_config(uplinks=[new, up2])  # the same file: the client notices within 2 s
    changed = time.monotonic()

    def new_paths_up() -> bool:
        paths = [p for p in world.client_paths() if f"bind={new}" in p["spec"]]
        return len(paths) == 6 and all(p["state"] == "up" for p in paths)

    wait_for(new_paths_up, 10.0, f"six paths from {new} to come up")
    joined = time.monotonic() - changed
    world.lab.set_link("up2", down=True)
    cut_at = time.monotonic()
    time.sleep(5.0)
    _finish(world, echo)
    after = echo.latencies(since=cut_at + 0.5)
    print(
        f"\nnew address's paths up {joined:.1f} s after the config changed; around the change: "
        f"{_summary(echo.latencies(changed - 0.5, cut_at))}\nover the new address alone: "
        f"{_summary(after)}"
    )
    assert len(after) >= 60, world.diagnostics(echo.proxy)
    _one_session(world)
    world.check_logs_clean()


#: Known bug (reported, not fixed here: dupsession/aio/transports.py, UdpPath._readable): a
#: relay that is down answers the client's datagrams with ICMP port unreachable; the connected
#: UDP socket then polls with POLLERR, and uvloop (libuv) stops watching it for good after one
#: callback. The path never reads again, though datagrams pile up in its receive queue.


def test_relay_killed_and_restarted_mid_session(world: World) -> None:
    """relay1 (4 paths: UDP and TCP from each uplink) is SIGKILLed and restarted; then only
    routes through relay1 are left: every relay1 path carries the session again, and no byte
    is lost or repeated."""
    echo = EchoSession(world, world.proxy(world.write_config(), "relaykill")).start()
    time.sleep(3.0)
    relay = world.relays["relay1"]
    relay.kill()
    killed_at = time.monotonic()
    time.sleep(1.0)
    relay.start(world.lab)
    time.sleep(3.0)
    world.set_routes([(u, v) for u, v in ROUTES if v != "relay1"], down=True)
    only_relay1 = time.monotonic()

    def relay1_paths() -> dict[str, dict[str, Any]]:
        return {p["spec"]: p for p in world.client_paths() if p["via"] == "relay1"}

    before = relay1_paths()
    time.sleep(5.0)
    echo.wait_echoes(len(echo.sent) - 1, timeout=10.0)
    after = relay1_paths()
    _finish(world, echo)
    print(
        f"\naround the kill: {_summary(echo.latencies(killed_at - 0.5, killed_at + 4))}\n"
        f"through the restarted relay1 only: {_summary(echo.latencies(since=only_relay1 + 1))}"
    )
    assert len(after) == 4, after
    for spec, path in after.items():
        print(f"  {spec}: {path['state']}, {path['bytes_recv']} B received")
    _one_session(world)
    world.check_logs_clean()
    for spec, path in after.items():
        if spec.startswith("tcp://"):  # reconnected, and let through by the new relay
            assert path["state"] == "up", (spec, path)
            assert path["bytes_recv"] > before[spec]["bytes_recv"], (spec, path)
    for spec, path in after.items():
        assert path["state"] == "up", (spec, path)
