"""A UDP and a TCP path on one uplink: bulk goes on the datagram path alone (issue 9).

Two flows through one bottleneck each size their window from their own rate estimate, and
those estimates add up to more than the link (each flow's windowed maximum comes from the
other's quiet moments), so the excess stands in the router's queue, in front of every
keystroke of every session on that uplink. With the paths naming the same access link
(`Path.link`), `auto` keeps bulk off the stream path (`scheduler.benched`). In the simulator,
3 MB up a 10 Mbit/s uplink (50 ms RTT, 200 ms queue) shared by both paths: the bottleneck's
queue after startup, median / p95, 77.6 / 161.7 ms when the paths do not know they share it,
4.9 / 14.8 ms when they do, at the same goodput (9.58 and 9.54 Mbit/s).
"""

from __future__ import annotations

import statistics

from dupsession.core.congestion import ModelRate
from dupsession.core.negotiate import Features
from dupsession.core.paths import Path
from dupsession.core.policy import Policy, Schedule
from dupsession.core.scheduler import benched
from dupsession.core.session import SessionConfig
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, Simulation

MBIT = 1e6 / 8  #: bytes per second
SMALL_FRAMES = SessionConfig(large_frames=False)
SIZE = 3_000_000
RATE = 10 * MBIT


def upload(link: str | None) -> tuple[Simulation, Bottleneck, float]:
    """(the simulation, the uplink's bottleneck, goodput in bytes/s) of 3 MB up one uplink
    that a UDP path and a TCP path share, both naming `link`."""
    up = Bottleneck(RATE, queue=0.2)
    specs = [
        PathSpec(
            LinkSpec(delay=0.025, datagram=datagram, bottleneck=up),
            LinkSpec(delay=0.025, datagram=datagram),
            link=link,
        )
        for datagram in (True, False)
    ]
    sim = Simulation(
        specs,
        1,
        [bytes(SIZE)],
        [],
        client_config=SMALL_FRAMES,
        exit_config=SMALL_FRAMES,
        features=Features(schedule=Schedule(Policy.AUTO)),
    )
    result = sim.run(until=60)
    assert result.exit.received == result.client.sent, result.describe()
    assert result.exit.closed_at is not None, result.describe()
    return sim, up, SIZE / result.exit.closed_at


def p95(waits: list[float]) -> float:
    return sorted(waits)[int(0.95 * len(waits))]


def test_bulk_stays_off_a_stream_path_that_shares_a_datagram_paths_link() -> None:
    sim, up, goodput = upload("up1")
    datagram, stream = sim.client.session.paths[0], sim.client.session.paths[1]
    # the stream path carried next to nothing: copies while the datagram path had room
    assert stream.data_sent < 0.05 * datagram.data_sent, (stream.data_sent, datagram.data_sent)
    assert goodput >= 0.9 * RATE, goodput
    steady = up.waits[len(up.waits) // 3 :]
    assert statistics.median(steady) < 0.01, statistics.median(steady)
    assert p95(steady) < 0.025, p95(steady)


def test_paths_that_do_not_share_a_link_both_carry_bulk_and_queue() -> None:
    """The same paths without a shared link name: both carry the upload, and the uplink's
    queue stands several times deeper (what the netlab showed with UDP and TCP paths)."""
    sim, up, goodput = upload(None)
    datagram, stream = sim.client.session.paths[0], sim.client.session.paths[1]
    assert stream.data_sent > 0.3 * (datagram.data_sent + stream.data_sent)
    assert goodput >= 0.9 * RATE, goodput
    _, shared, _ = upload("up1")
    steady = up.waits[len(up.waits) // 3 :]
    benched = shared.waits[len(shared.waits) // 3 :]
    assert statistics.median(steady) > 4 * statistics.median(benched)


def test_a_stream_path_is_benched_only_beside_a_live_datagram_path() -> None:
    def paths() -> list[Path]:
        out = [Path(0, True, link="up1"), Path(1, False, link="up1"), Path(2, False, link="up2")]
        for path in out:
            path.cc = ModelRate()
            path.last_recv = 10.0
        return out

    assert benched(paths(), 10.1) == {1}  # up2 has no datagram path: its TCP path carries bulk
    lossy = paths()
    assert isinstance(lossy[0].cc, ModelRate)
    lossy[0].cc.loss_rate = 0.05  # random loss: the datagram path recovers it itself
    assert benched(lossy, 10.1) == {1}
    assert benched(paths(), 12.0) == set()  # the datagram path went silent
    unnamed = paths()
    for path in unnamed:
        path.link = None  # the glue could not tell: nothing is assumed shared
    assert benched(unnamed, 10.1) == set()
