"""Typing beside a download, end to end: real OpenSSH through dupsession on issue 9's
seed-like two-uplink network (`seed_like`) at a tenth of its rates: 5 + 3 Mbit/s down, 2 + 1
up, one-way delays 20/35 and 45/30 ms, routers queueing up to 200 ms and tail-dropping.

One session types a line every 50 ms; a second session runs `ssh cat FILE`. The download must
arrive byte-exact and the typing session's echoes intact, with its p99 during the download
within its idle p99 + MARGIN_MS. Without congestion control a download keeps the routers'
200 ms queues full and every keystroke waits behind them (the issue measured idle 58 ms,
during 308 ms: +250), and with the TCP paths' standing queues today it rose 139 ms here; the
bound fails once the download holds more than 60 % of the queue. With the datagram paths'
controllers the p99 rose 28-29 ms on a quiet machine and 52-78 ms at a load average of 4.4 on
2 cores: MARGIN_MS leaves that room to a loaded CI machine's scheduling.

One UDP path per uplink: these are the paths whose queue dupsession's own controller keeps
short. The issue's TCP paths beside them do not yet (docs/BENCHMARKS.md, "Under load"), which
the benchmark shows. Needs root; about 20 s per policy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrib.netlab import Lab
from dupsession.echo import percentile
from tests.lab.world import SEED_LIKE, EchoSession, World, require_lab, seed_like
from tests.support.bulk import write_random_file

pytestmark = pytest.mark.timeout(90)

SCALE = 0.1  #: of the seed-like rates: few MB make a download of several seconds
SIZE = 4_000_000
IDLE_SECONDS = 4.0
MARGIN_MS = 120.0  #: 60 % of the routers' 200 ms queue (see the module docstring)
WARM = 1.0  #: s after the first byte before keystrokes count: the download ramps up
TAIL = 0.5  #: s before the last byte where they stop counting
TRANSFER_TIMEOUT = 40.0  #: 4 MB at 5 Mbit/s takes 6.4 s


@pytest.fixture
def seed_world(tmp_path: Path) -> Iterator[World]:
    require_lab()
    with Lab(seed_like(loss=0.0, seed=9, scale=SCALE)) as lab:
        world = World(lab, tmp_path)
        try:
            yield world.start()
        finally:
            world.close()


# The default (None) is auto; redundant is what a peer that names no policy gets.
@pytest.mark.parametrize("policy", [None, "redundant"], ids=["default", "redundant"])
def test_typing_beside_a_download_keeps_its_tail(
    seed_world: World, tmp_path: Path, policy: str | None
) -> None:
    world = seed_world
    source = tmp_path / "bigfile"
    expected = write_random_file(source, SIZE)
    routes = [f"{uplink}-server" for uplink in SEED_LIKE]
    config = world.write_paths_config(f"{policy}.toml", policy, routes)
    echo = EchoSession(world, world.proxy(config, "typing")).start()
    time.sleep(1.0)
    idle_from = time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle = echo.latencies(since=idle_from, until=time.monotonic())
    got = world.download(config, source, "download", TRANSFER_TIMEOUT)
    busy = echo.latencies(since=got.first + WARM, until=got.last - TAIL)
    assert echo.finish() == 0, echo.ssh_stderr + world.diagnostics(echo.proxy)
    echo.check_stream()
    assert echo.proxy is not None and echo.proxy.wait() == 0, world.diagnostics(echo.proxy)
    assert (got.received, got.digest) == (SIZE, expected)
    mbit = SIZE * 8 / (got.last - got.first) / 1e6
    idle_p99, busy_p99 = percentile(idle, 0.99), percentile(busy, 0.99)
    print(
        f"\n{policy or 'default'}: typing p99 idle {idle_p99:.0f} ms ({len(idle)} echoes), "
        f"during the download {busy_p99:.0f} ms ({len(busy)}); download {mbit:.1f} Mbit/s "
        f"of {sum(down for *_, down in SEED_LIKE.values()) * SCALE / 1000:g}"
    )
    assert len(busy) >= 40, f"the download was too short to judge: {got}"
    assert busy_p99 <= idle_p99 + MARGIN_MS, world.diagnostics(echo.proxy)
    world.check_logs_clean()
