"""The emulator's impairment maths and the scenario format, without root or namespaces.

Why: the sans-IO core decides every delay and drop; testing it with a virtual clock is fast
and exact, so the namespace tests only have to show the plumbing around it works.
"""

from __future__ import annotations

import ipaddress
import statistics
import struct

import pytest

from contrib.netlab.emulator import Emulator, normalize_params
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
