"""The emulator's impairment maths and the scenario format, without root or namespaces.

Why: the sans-IO core decides every delay and drop; testing it with a virtual clock is fast
and exact, so the namespace tests only have to show the plumbing around it works.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import statistics
import struct
from pathlib import Path

import pytest

from contrib.netlab.emulator import (
    WAIT_COUNTERS,
    WAIT_STEPS,
    Emulator,
    _Control,
    normalize_params,
)
from contrib.netlab.scenario import ScenarioError, load_scenario

UP1, UP2 = "198.18.1.2", "198.18.2.2"
RELAY1, SERVER = "198.19.1.2", "198.19.200.2"


def packet(src: str, dst: str, size: int = 100, ident: int = 0) -> bytes:
    """A minimal IPv4 header (checksum not needed: the emulator never looks at it)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        size,
        ident & 0xFFFF,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + bytes(size - len(header))


def emulator(toml: str = "") -> Emulator:
    """Two uplinks, one relay, a fixed seed, scenario time 0 = emulator time 0."""
    scenario = load_scenario("uplinks = 2\nrelays = 1\nseed = 3\n" + toml)
    return Emulator(scenario.emulator_config(), t0=0.0)


def test_route_delay_is_per_direction() -> None:
    emu = emulator("[routes.up1-server]\nout.delay_ms = 10\nback.delay_ms = 30\n")
    assert emu.submit(packet(UP1, SERVER), now=1.0) == pytest.approx(1.010)
    assert emu.submit(packet(SERVER, UP1), now=1.0) == pytest.approx(1.030)
    assert emu.submit(packet(UP2, SERVER), now=1.0) == pytest.approx(1.0)  # other route clean
    assert emu.pop_due(1.009) == [packet(UP2, SERVER)]
    assert emu.pop_due(1.0101) == [packet(UP1, SERVER)]
    assert emu.next_deadline() == pytest.approx(1.030)


def test_stages_chain_link_route_link() -> None:
    """relay1 -> server crosses relay1 (back), relay1-server (out) and server (out)."""
    emu = emulator(
        "[links.relay1]\nback.delay_ms = 1\nout.delay_ms = 100\n"
        "[routes.relay1-server]\nout.delay_ms = 10\n"
        "[links.server]\nout.delay_ms = 5\nback.delay_ms = 200\n"
    )
    assert emu.submit(packet(RELAY1, SERVER), now=0.0) == pytest.approx(0.016)
    # An uplink's `out` is client -> router: up1 out + up1-relay1 out + relay1 out.
    emu.set("up1", "out", {"delay_ms": 2})
    assert emu.submit(packet(UP1, RELAY1), now=0.0) == pytest.approx(0.102)


def test_unknown_addresses_pass_untouched() -> None:
    emu = emulator('[routes."*"]\nloss = 1.0\n')
    assert emu.submit(packet("198.18.77.2", SERVER), now=5.0) == 5.0
    assert emu.submit(b"\x60" + bytes(39), now=5.0) == 5.0  # IPv6: not ours to judge
    assert emu.counters["unrouted"] == 2


def test_independent_loss_rate() -> None:
    emu = emulator("[routes.up1-server]\nout.loss = 0.3\n")
    kept = sum(emu.submit(packet(UP1, SERVER), now=0.0) is not None for _ in range(10000))
    assert 6700 < kept < 7300
    back = sum(emu.submit(packet(SERVER, UP1), now=0.0) is not None for _ in range(1000))
    assert back == 1000


def test_gilbert_elliott_bursts() -> None:
    """Bad-state share p_enter / (p_enter + p_leave) = 1/6, mean burst 1 / p_leave = 4."""
    emu = emulator(
        "[routes.up1-server.out]\np_enter_bad = 0.05\np_leave_bad = 0.25\nloss_in_bad = 1.0\n"
    )
    lost = [emu.submit(packet(UP1, SERVER), now=0.0) is None for _ in range(30000)]
    assert 0.14 < sum(lost) / len(lost) < 0.19
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert 3.4 < statistics.mean(bursts) < 4.6


def test_rate_limit_spaces_packets_and_tail_drops() -> None:
    emu = emulator("[links.up1.out]\nrate_kbit = 1000\nburst_bytes = 1250\nqueue_bytes = 12500\n")
    # 125 kB/s: 1250-byte packets leave 10 ms apart; the bucket lets the first one through.
    releases = [emu.submit(packet(UP1, SERVER, 1250), now=0.0) for _ in range(30)]
    kept = [r for r in releases if r is not None]
    assert kept[:3] == pytest.approx([0.0, 0.0, 0.01])
    assert len(kept) == 12  # backlog limit 12500 bytes = 10 packets of wait, plus the burst
    assert emu.stages["up1"]["out"].counters["queue"] == 18
    # Later, the queue has drained: accepted again.
    assert emu.submit(packet(UP1, SERVER, 1250), now=1.0) == pytest.approx(1.0)


def test_jitter_keeps_order_unless_reorder() -> None:
    emu = emulator("[routes.up1-server.out]\ndelay_ms = 20\njitter_ms = 10\n")
    releases = [emu.submit(packet(UP1, SERVER), now=i * 0.001) for i in range(500)]
    assert releases == sorted(releases)  # type: ignore[type-var]
    assert all(r - i * 0.001 >= 0.010 for i, r in enumerate(releases))  # type: ignore[operator]
    emu.set("up1-server", "out", {"reorder": True})
    releases = [emu.submit(packet(UP1, SERVER), now=i * 0.001) for i in range(500)]
    assert releases != sorted(releases)  # type: ignore[type-var]


def test_outages_and_down() -> None:
    emu = emulator("[links.up2]\noutages = [[1, 2]]\n")
    assert emu.submit(packet(UP2, SERVER), now=0.5) is not None
    assert emu.submit(packet(UP2, SERVER), now=1.5) is None
    assert emu.submit(packet(SERVER, UP2), now=1.9) is None
    assert emu.submit(packet(UP2, SERVER), now=2.0) is not None
    assert emu.set("up1-*", "back", {"down": True}) == ["up1-up2", "up1-relay1", "up1-server"]
    assert emu.submit(packet(SERVER, UP1), now=0.0) is None
    assert emu.submit(packet(UP1, SERVER), now=0.0) is not None
    emu.set("up1-server", "both", {"down": False})
    assert emu.submit(packet(SERVER, UP1), now=0.0) is not None
    assert emu.stages["up1-server"]["back"].counters["down"] == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="dealy_ms"):
        normalize_params({"dealy_ms": 5})
    with pytest.raises(ValueError, match="probability"):
        normalize_params({"loss": 5})
    with pytest.raises(ValueError, match="no link or route"):
        emulator().set("up9", "both", {"loss": 0.1})


def test_bundled_scenarios_parse() -> None:
    sc = load_scenario("two-uplinks-two-relays")
    assert sc.nodes == ("client", "wan", "relay1", "relay2", "server")
    assert sc.stages["up2-server"]["back"] == {"loss": 0.05, "delay_ms": 65.0}
    assert sc.stages["relay1-server"]["out"] == {"delay_ms": 10.0}
    for name in ("clean", "bursty-4g"):
        assert load_scenario(name).name == name
    for link in sc.links:
        assert ipaddress.IPv4Network(link.subnet).subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[routes.relay1-up1]\nloss = 0.1\n", "matches none"),
        ("[links.up1]\nloss = 2\n", "probability"),
        ("uplinks = ['Up-1']\n", "not a valid link name"),
        ("uplinks = ['wan']\n", "reserved"),
        ("colour = 'blue'\n", "unknown top-level"),
        ("[routes.up1-server]\nout = 3\n", "must be a table"),
    ],
)
def test_scenario_errors(toml: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario("relays = 1\n" + toml if "uplinks" not in toml else toml)


def test_release_order_is_by_time_then_submission() -> None:
    """Per-pair FIFOs stand in for the heap: what pops must be exactly what a sorted list of
    (release, submission) gives, across pairs, reordering routes, unrouted packets, settings
    changed mid-stream and a clock handed in out of order."""
    emu = emulator(
        "[routes.up1-server]\ndelay_ms = 20\njitter_ms = 15\n"
        "[routes.up2-server]\ndelay_ms = 5\njitter_ms = 5\nreorder = true\n"
        "[links.up1.back]\nrate_kbit = 8000\n[routes.up1-relay1]\nloss = 0.2\n"
    )
    rng = random.Random(5)
    addrs = [UP1, UP2, RELAY1, SERVER, "198.18.77.2"]
    model: list[tuple[float, int, bytes]] = []
    for i in range(4000):
        now = i // 4 * 0.0005 - (0.01 if i % 97 == 0 else 0.0)  # equal releases too
        if i == 1500:
            emu.set("up1-server", "both", {"reorder": True})
        if i == 2500:
            emu.set("up*", "both", {"reorder": False, "jitter_ms": 8})
        src, dst = rng.sample(addrs, 2)
        p = packet(src, dst, rng.randint(60, 1400), ident=i)
        release = emu.submit(p, now)
        if release is not None:
            model.append((release, i, p))
        assert emu.queued == len(model)
        assert emu.next_deadline() == (min(model)[0] if model else None)
        if rng.random() < 0.3:
            due = sorted(e for e in model if e[0] <= now)
            model = [e for e in model if e[0] > now]
            assert emu.pop_due(now) == [e[2] for e in due]
    assert emu.pop_due(1e9) == [e[2] for e in sorted(model)]
    assert emu.queued == 0 and emu.next_deadline() is None


def test_shaper_and_delay_match_the_gcra_formula() -> None:
    """Exact (==) releases and drops of a rate-limited, delayed stage against the GCRA written
    out plainly: the emulator's arithmetic may be reordered for speed, never its results."""
    emu = emulator(
        "[links.up1.out]\nrate_kbit = 2000\nburst_bytes = 3000\nqueue_bytes = 12000\n"
        "delay_ms = 7.3\n"
    )
    rate, tau, queue, delay = 2000 * 1000 / 8, 3000 / (2000 * 1000 / 8), 12000, 7.3
    rng = random.Random(8)
    tat, t, drops, waited = 0.0, 0.0, 0, [0, 0, 0, 0]
    for _ in range(3000):
        t += rng.expovariate(400)
        size = rng.randint(40, 1500)
        depart = max(t, tat - tau)
        if (depart - t) * rate > queue:
            expected = None
            drops += 1
        else:
            tat = max(t, tat) + size / rate
            waited = [w + (depart - t > step) for w, step in zip(waited, WAIT_STEPS, strict=True)]
            expected = depart + delay / 1000.0
        assert emu.submit(packet(UP1, SERVER, size), t) == expected
    counters = emu.stages["up1"]["out"].counters
    assert drops > 100 and counters["queue"] == drops
    assert [counters[k] for k in WAIT_COUNTERS] == waited and waited[3] > 0


def test_counters_and_reset() -> None:
    """Counters are ints in slots; the snapshot and the control socket's reset still see all."""
    emu = emulator("[routes.up1-server.out]\nloss = 0.5\n")
    for _ in range(100):
        emu.submit(packet(UP1, SERVER, 200), now=0.0)
    counters = emu.snapshot(0.0)["stages"]["up1-server"]["out"]["counters"]
    assert counters["packets"] == 100 and counters["bytes"] == 20000
    assert counters["passed"] + counters["loss"] == 100 and counters["loss"] > 20
    assert set(counters) == {"packets", "bytes", "passed", "loss", "burst", "queue", "outage",
                             "down", *WAIT_COUNTERS}  # fmt: skip
    for dirs in emu.stages.values():
        for stage in dirs.values():
            stage.reset()
    assert not any(emu.stages["up1-server"]["out"].counters.values())
    assert emu.stages["up1"]["out"].counters["packets"] == 0


def stage_counters(emu: Emulator) -> dict[str, int]:
    """Every stage's counters in the snapshot (the control socket's `stats`), by stage."""
    return {
        f"{name}.{d}.{key}": value
        for name, dirs in emu.snapshot(0.0)["stages"].items()
        for d, stage in dirs.items()
        for key, value in stage["counters"].items()
    }


def test_control_keeps_the_waited_on_fds(tmp_path: Path) -> None:
    """The loop's fd list follows the control clients (it is no longer built per wake-up), and
    the control socket's `reset` zeroes every stage counter, the shaper's waits too: lab.py's
    `reset_counters` relies on it between a benchmark's phases."""
    emu = emulator("[links.up1.out]\nrate_kbit = 1000\nburst_bytes = 1250\nqueue_bytes = 62500\n")
    for _ in range(60):  # 10 ms apart at 125 kB/s: waits past every step, then tail drops
        emu.submit(packet(UP1, SERVER, 1250), now=0.0)
    before = stage_counters(emu)
    assert all(before[f"up1.out.{key}"] for key in ("packets", "queue", *WAIT_COUNTERS))
    control = _Control(str(tmp_path / "control.sock"), emu)
    listener = control.sock.fileno()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "control.sock"))
            control.on_readable(listener)
            assert len(control.fds) == 2 and control.fds[0] == listener
            client.sendall(b'{"cmd": "reset"}\n')
            control.on_readable(control.fds[1])
            assert client.recv(100) == b'{"ok": true}\n'
            after = stage_counters(emu)
            assert after.keys() == before.keys() and not any(after.values()), after
            assert not any(emu.counters.values())
        control.on_readable(control.fds[1])  # the client hung up
        assert control.fds == [listener] and not control.clients
    finally:
        control.close()
