"""Scheduling policies and tiers end to end: real OpenSSH through dupsession over three
rate-limited routes of different capacity and delay (AGGREGATION), in the network lab.

- each policy carries a download byte-exact, and the exit follows the policy the client asked
  for in the handshake: redundant puts the file on every route, stripe about once in all;
- a backup path stays silent (probes only) while the primary is up, then takes over within a
  second of the primary's route dying.
Run with -s to see the figures. Needs root; about a minute.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrib.netlab import Lab
from tests.lab.world import EchoSession, World, rate_limited, require_lab

pytestmark = pytest.mark.timeout(120)

#: route -> (one-way delay ms, upload kbit/s, download kbit/s). Sum down: 14 Mbit/s.
AGGREGATION: dict[str, tuple[float, float, float]] = {
    "up1-server": (10, 4000, 8000),
    "up2-server": (25, 2000, 4000),
    "up1-relay1": (15, 1000, 2000),
}
SIZE = 2_000_000
TRANSFER_TIMEOUT = 60.0


def write_config(world: World, policy: str, tiers: dict[str, str] | None = None) -> Path:
    return world.write_paths_config(f"{policy}.toml", policy, AGGREGATION, tiers)


@pytest.fixture
def agg_world(tmp_path: Path) -> Iterator[World]:
    require_lab()
    with Lab(rate_limited(AGGREGATION, loss=0.0, seed=5)) as lab:
        world = World(lab, tmp_path)
        try:
            yield world.start()
        finally:
            world.close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("agg") / "payload.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def download(world: World, config: Path, source: Path, name: str) -> tuple[str, int, float]:
    """`ssh cat SOURCE`: (sha256, bytes, seconds)."""
    got = world.download(config, source, name, TRANSFER_TIMEOUT)
    return got.digest, got.received, got.seconds


def route_bytes(world: World, direction: str) -> dict[str, int]:
    stages = world.lab.stats()["stages"]
    return {r: stages[r][direction]["counters"]["bytes"] for r in AGGREGATION}


@pytest.mark.parametrize("policy", ["redundant", "best-k", "stripe", "auto"])
def test_download_is_byte_exact_and_follows_the_policy(
    agg_world: World, payload: tuple[Path, str], policy: str
) -> None:
    source, expected = payload
    agg_world.lab.reset_counters()
    digest, received, seconds = download(agg_world, write_config(agg_world, policy), source, policy)
    assert (received, digest) == (SIZE, expected)
    down = route_bytes(agg_world, "back")
    total = sum(down.values())
    print(
        f"\n{policy}: {SIZE / 1e6:.0f} MB in {seconds:.2f} s ({SIZE * 8 / seconds / 1e6:.1f} "
        f"Mbit/s of 14), bytes on the wire per payload byte {total / SIZE:.2f}; per route "
        + ", ".join(f"{r} {b / 1e6:.2f} MB" for r, b in down.items())
    )
    if policy == "redundant":
        # copies on every route; a slower route skips what the peer already acknowledged
        assert total > 1.6 * SIZE and all(b > SIZE / 8 for b in down.values()), down
    elif policy == "stripe":
        assert total < 1.5 * SIZE  # each frame about once
        assert all(b > SIZE / 20 for b in down.values()), down  # and every route helped
    agg_world.check_logs_clean()


def test_backup_path_stays_silent_then_takes_over(agg_world: World) -> None:
    """up1-server primary, up2-server backup: while the primary is up the backup carries
    probes only; when the primary's route dies, echoes go on over the backup within 1 s."""
    world = agg_world
    config = write_config(world, "auto", {"up2-server": "backup", "up1-relay1": "backup"})
    echo = EchoSession(world, world.proxy(config, "backup")).start()
    time.sleep(1.0)
    world.lab.reset_counters()
    time.sleep(4.0)
    idle_up, idle_down = route_bytes(world, "out"), route_bytes(world, "back")
    cut_at = time.monotonic()
    world.set_routes([("up1", "server")], down=True)
    time.sleep(4.0)
    after_down = route_bytes(world, "back")
    code = echo.finish()
    assert code == 0, echo.ssh_stderr + world.diagnostics(echo.proxy)
    echo.check_stream()
    assert echo.proxy.wait() == 0, world.diagnostics(echo.proxy)
    backup = idle_up["up2-server"] + idle_down["up2-server"]
    primary = idle_up["up1-server"] + idle_down["up1-server"]
    after = echo.latencies(since=cut_at)
    print(
        f"\nwhile the primary was up (4 s): backup {backup} B ({backup / 4:.0f} B/s), primary "
        f"{primary} B ({backup / primary:.1%}); after the cut: {len(after)} echoes, "
        f"max {max(after):.0f} ms; backup carried {after_down['up2-server']} B down"
    )
    assert backup / 4 < 600  # probes only: a few hundred bytes per second, both ways
    assert len(after) > 40
    assert max(after) < 1000, world.diagnostics(echo.proxy)
    assert after_down["up2-server"] > idle_down["up2-server"] + 2000
    world.check_logs_clean()
