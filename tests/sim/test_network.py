"""The simulator itself (links, determinism, its safety nets) and fixed end-to-end scenarios."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from dupsession.aio.driver import SessionDriver
from dupsession.core import wire
from dupsession.core.events import PathDown, PathUp, SessionClosed, StreamEnded
from dupsession.core.session import Role, Session, SessionConfig, SessionState
from tests.sim.network import (
    START,
    Bottleneck,
    Link,
    LinkSpec,
    LivelockError,
    PathSpec,
    SimResult,
    Simulation,
    flip_bit,
    simulate,
    symmetric,
)
from tests.support.session import handshake_keys

pytestmark = pytest.mark.timeout(60)


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def assert_clean(result: SimResult) -> None:
    """Both streams intact, both sides closed NORMAL: the property every scenario must meet."""
    why = result.describe()
    assert result.exit.received == result.client.sent, why
    assert result.client.received == result.exit.sent, why
    for side in (result.client, result.exit):
        assert side.closed is not None, why
        assert side.closed.code == wire.CloseCode.NORMAL, why
        assert side.state is SessionState.CLOSED, why
        assert side.events.count(StreamEnded()) == 1, why


# --- links -----------------------------------------------------------------------------------


def test_datagram_link_rates_follow_the_spec() -> None:
    spec = LinkSpec(delay=0.01, loss=0.2, duplicate=0.1, corrupt=0.05)
    link = Link(spec, random.Random(1), START)
    frame = bytes(100)
    arrivals = [link.send(frame, START + i * 0.001) for i in range(20_000)]
    s = link.stats
    assert s.sent == 20_000
    assert s.lost / s.sent == pytest.approx(0.2, abs=0.02)
    assert s.duplicated / (s.sent - s.lost) == pytest.approx(0.1, abs=0.02)
    copies = [data for batch in arrivals for _, data in batch]
    assert len(copies) == s.delivered == s.sent - s.lost + s.duplicated
    corrupted = [c for c in copies if c != frame]
    assert len(corrupted) == s.corrupted
    assert len(corrupted) / len(copies) == pytest.approx(0.05, abs=0.01)
    for copy in corrupted:  # exactly one bit flipped
        assert sum(bin(a ^ b).count("1") for a, b in zip(copy, frame, strict=True)) == 1


def test_datagram_link_delay_jitter_and_reordering() -> None:
    steady = Link(LinkSpec(delay=0.05), random.Random(2), START)
    times = [steady.send(b"x", START + i * 0.001)[0][0] for i in range(100)]
    assert times == sorted(times)
    assert times[0] == pytest.approx(START + 0.05)
    shaky = Link(LinkSpec(delay=0.05, jitter=0.02, reorder=0.3), random.Random(3), START)
    times = [shaky.send(b"x", START + i * 0.001)[0][0] for i in range(1000)]
    delays = [t - (START + i * 0.001) for i, t in enumerate(times)]
    assert min(delays) >= 0.05
    assert max(delays) <= 0.05 + 0.02 + 2 * 0.05 + 0.01 + 1e-9
    assert times != sorted(times)  # some overtaken
    assert shaky.stats.reordered == pytest.approx(300, abs=50)


def test_datagram_outage_loses_frames_sent_into_or_across_it() -> None:
    link = Link(LinkSpec(delay=0.1, outages=[(1.0, 2.0)]), random.Random(4), START)
    assert link.send(b"x", START + 0.5) != []  # arrives at 0.6: fine
    assert link.send(b"x", START + 0.95) == []  # in flight when the route dies
    assert link.send(b"x", START + 1.5) == []  # sent into it
    assert link.send(b"x", START + 2.0) != []  # the route is back
    assert link.stats.blackholed == 2


def test_stream_link_is_reliable_in_order_and_stalls_during_outages() -> None:
    spec = LinkSpec(
        delay=0.1, jitter=0.05, loss=0.5, duplicate=0.5, corrupt=0.5, reorder=0.5, datagram=False
    )
    link = Link(spec, random.Random(5), START)
    frames = [bytes([i]) for i in range(200)]
    arrivals = [link.send(f, START + i * 0.001) for i, f in enumerate(frames)]
    assert all(len(a) == 1 for a in arrivals)  # nothing lost or duplicated
    assert [a[0][1] for a in arrivals] == frames  # nothing corrupted
    times = [a[0][0] for a in arrivals]
    assert times == sorted(times)  # never overtaking
    stalled = Link(LinkSpec(delay=0.1, datagram=False, outages=[(1.0, 3.0)]), random.Random(6), 0)
    assert stalled.send(b"a", 0.95) == [(pytest.approx(3.1), b"a")]  # in flight: held
    assert stalled.send(b"b", 2.0) == [(pytest.approx(3.1), b"b")]  # sent into it: held
    dead = Link(LinkSpec(delay=0.1, datagram=False, outages=[(1.0, math.inf)]), random.Random(7), 0)
    assert dead.send(b"c", 1.5) == []


def test_flip_bit() -> None:
    assert flip_bit(b"\x00\x00", 0) == b"\x80\x00"
    assert flip_bit(b"\x00\x00", 15) == b"\x00\x01"


def test_handshake_keys_are_real_and_fresh() -> None:
    sid_a, keys_a = handshake_keys()
    sid_b, keys_b = handshake_keys()
    assert sid_a != sid_b
    assert keys_a != keys_b


# --- the driver ------------------------------------------------------------------------------


def lossy_paths() -> list[PathSpec]:
    bad = LinkSpec(delay=0.04, jitter=0.02, loss=0.3, reorder=0.2, duplicate=0.1, corrupt=0.05)
    return [PathSpec(bad, bad), PathSpec(bad, LinkSpec(delay=0.08, datagram=False))]


def test_same_seed_same_run() -> None:
    paths = [PathSpec(LinkSpec(delay=0.04, loss=0.3), LinkSpec(delay=0.04, loss=0.3))] * 2
    runs = [simulate(paths, seed, [payload(1, 30_000)], [payload(2, 5000)]) for seed in (7, 7, 8)]
    one, again, other = runs
    assert (one.end, one.steps, one.links) == (again.end, again.steps, again.links)
    assert [type(e) for e in one.client.events] == [type(e) for e in again.client.events]
    assert (one.end, one.links) != (other.end, other.links)


def test_clean_network_delivers_both_ways_and_closes() -> None:
    result = simulate(symmetric(LinkSpec(delay=0.02), 2), 1, [payload(3, 100_000)], [b"ok"])
    assert_clean(result)
    assert result.end < 1.0
    assert result.client.snapshot["retransmissions"] == 0
    assert [e for e in result.client.events if isinstance(e, PathUp | PathDown)] == [
        PathUp(0),
        PathUp(1),
    ]


def test_each_side_is_the_real_driver() -> None:
    """The simulator runs `SessionDriver` itself, not a copy of its loop: the driver's sinks
    carry the frames and its endpoint is the simulated application."""
    sim = Simulation(symmetric(LinkSpec(delay=0.02), 2), 1, [payload(8, 20_000)], [b"ok"])
    for side in (sim.client, sim.exit):
        assert type(side.driver) is SessionDriver and side.driver.endpoint is side
        assert sorted(side.driver.sinks) == [0, 1]
    sent: list[int] = []
    sink = sim.client.driver.sinks[0]

    class Counting:
        def send_frames(self, frames: list[bytes]) -> None:
            sent.append(len(frames))
            sink.send_frames(frames)

    sim.client.driver.sinks[0] = Counting()
    result = sim.run()
    assert_clean(result)
    assert sum(sent) == result.links["client:0"].sent  # every frame on path 0 left through it


def test_bad_network_still_delivers_exactly() -> None:
    writes = [(0.1 * i, payload(i, 700 * i)) for i in range(12)]
    result = simulate(lossy_paths(), 11, writes, list(reversed(writes)))
    assert_clean(result)
    assert result.exit.snapshot["duplicates"] > 0
    assert result.client.snapshot["bad_frames"] + result.exit.snapshot["bad_frames"] > 0


def test_backpressure_fills_the_window_and_never_exceeds_it() -> None:
    cfg = SessionConfig(window_bytes=4096)
    result = simulate(
        symmetric(LinkSpec(delay=0.02), 2), 2, [payload(4, 100_000)], [], client_config=cfg
    )
    assert_clean(result)
    assert result.client.max_unacked == 4096  # the window was full, and no more
    assert result.exit.max_held <= 4096
    assert result.end == pytest.approx(100_000 / 4096 * 0.04, rel=0.2)  # one window per RTT


def test_pause_holds_the_stream_back_until_resumed() -> None:
    cfg = SessionConfig(window_frames=8)
    sim = Simulation(
        symmetric(LinkSpec(delay=0.02), 1),
        3,
        [(0.5, payload(5, 200_000))],
        [],
        client_config=cfg,
        exit_config=cfg,
        exit_pauses=[(0.2, 3.0)],
    )
    sim.run(until=2.9)
    held_back = len(sim.exit.received)
    assert held_back <= 8 * wire.MAX_DATAGRAM_PAYLOAD
    assert sim.client.session.sender.has_pending()
    result = sim.run(until=60)
    assert_clean(result)
    assert result.exit.received == result.client.sent


def test_livelock_is_detected() -> None:
    class Stuck(Session):
        def get_timer(self) -> float | None:
            return START  # always due, never satisfied

    sim = Simulation(symmetric(LinkSpec()), 4)
    sid, keys = handshake_keys()
    sim.client.session = Stuck(Role.CLIENT, sid, keys, START)
    sim.client.session.add_path(0, datagram=True, now=START)
    with pytest.raises(LivelockError, match="seed=4"):
        sim.run(until=10)


def test_bounds_violations_name_the_seed() -> None:
    sim = Simulation(symmetric(LinkSpec()), 99, [b"x" * 5000])
    sim.client.session.sender.unacked_bytes = 10**9  # a test of the check, not of the core
    with pytest.raises(AssertionError, match=r"seed=99 .*unacked"):
        sim.run(until=1)


# --- fixed scenarios, including regressions found with the simulator -------------------------


def test_total_outage_within_grace_resumes_without_loss() -> None:
    cfg = SessionConfig(grace_period=30.0)
    outage = [(1.0, 9.0)]
    paths = [
        PathSpec(LinkSpec(delay=0.03, outages=outage), LinkSpec(delay=0.05, outages=outage)),
        PathSpec(
            LinkSpec(delay=0.1, datagram=False, outages=outage),
            LinkSpec(delay=0.1, datagram=False, outages=outage),
        ),
    ]
    writes = [(0.1 * i, payload(i, 300)) for i in range(60)]  # typing on through the outage
    result = simulate(paths, 5, writes, writes, client_config=cfg, exit_config=cfg)
    assert_clean(result)
    downs = [e for e in result.client.events if isinstance(e, PathDown)]
    assert len(downs) >= 2
    assert result.end < 9.0 + 2.0  # resumed promptly once a path came back


def test_every_path_down_past_grace_times_out_both_sides() -> None:
    cfg = SessionConfig(grace_period=4.0, path_timeout=1.5, probe_interval=0.5)
    dead = LinkSpec(delay=0.02, outages=[(1.0, math.inf)])
    paths = [PathSpec(dead, dead), PathSpec(dead, dead)]
    result = simulate(
        paths,
        6,
        [(0.0, b"before"), (2.0, b"after")],
        [b"hello"],
        client_config=cfg,
        exit_config=cfg,
    )
    for side, peer in ((result.client, result.exit), (result.exit, result.client)):
        assert side.closed is not None, result.describe()
        assert side.closed.code == wire.CloseCode.TIMEOUT
        assert not side.closed.by_peer
        assert side.closed_at is not None
        assert 1.0 + 1.5 + 4.0 - 0.5 <= side.closed_at <= 1.0 + 1.5 + 4.0 + 0.1
        assert peer.sent.startswith(side.received)
    assert result.exit.received == b"before"


def test_closed_sessions_go_quiet_on_long_rtt() -> None:
    """Regression: both ends closed NORMAL locally then answered each other's CLOSE forever."""
    result = simulate(symmetric(LinkSpec(delay=0.15), 2), 1, [b"a" * 5000], [b"b" * 15000])
    assert_clean(result)
    assert not result.client.closed.by_peer and not result.exit.closed.by_peer  # type: ignore[union-attr]
    assert result.end < 2.0
    assert sum(stats.sent for stats in result.links.values()) < 100


def test_writing_while_a_datagram_path_is_down_does_not_busy_loop() -> None:
    """Regression: a down datagram path with frames waiting kept a past send-budget timer."""
    link = LinkSpec(delay=0.02, outages=[(1.0, 6.0)])
    writes = [(0.1 * i, b"x" * 500) for i in range(100)]
    result = simulate(symmetric(link, 1), 1, writes, [b"w" * 3000])
    assert_clean(result)


def test_stream_path_dying_leaves_no_frame_too_big_for_the_datagram_path() -> None:
    """Regression: 16 KiB frames cut while only the stream path was up wedged the session."""
    stream = LinkSpec(delay=0.02, datagram=False, outages=[(3.0, math.inf)])
    late_udp = LinkSpec(delay=0.02, outages=[(0.0, 5.0)])
    cfg = SessionConfig(grace_period=30)
    result = simulate(
        [PathSpec(stream, stream), PathSpec(late_udp, late_udp)],
        1,
        [(2.99, payload(6, 40_000)), (8.0, b"y" * 100)],
        [],
        client_config=cfg,
        exit_config=cfg,
        until=120,
    )
    assert_clean(result)


def test_small_receive_window_is_honoured_from_the_first_ack() -> None:
    """Regression: the sender ignored windows under its 1024-frame initial guess; frames past
    the window were dropped and resent with growing backoff (10x slower at 10 % loss)."""
    cfg = SessionConfig(window_frames=16)
    result = simulate(
        symmetric(LinkSpec(delay=0.03, loss=0.1), 1),
        5,
        [(1.0, payload(7, 200_000))],
        [],
        client_config=cfg,
        exit_config=cfg,
    )
    assert_clean(result)
    assert result.exit.max_held_frames < 16
    assert result.end < 1.0 + 5.0
    assert isinstance(result.exit.closed, SessionClosed)


#: An exit configured as relayd's with a 1 MiB buffer (relayd/server.py: the window in bytes
#: and in datagram-payload frames), and its consumer pausing at spans long and short.
RELAYD_EXIT = SessionConfig(
    window_bytes=1 << 20, window_frames=(1 << 20) // wire.MAX_DATAGRAM_PAYLOAD
)
EXIT_PAUSES = [
    (0.5, 1.0),
    (1.3, 1.35),
    (1.6, 2.4),
    (2.6, 2.62),
    (3.0, 3.5),
    (4.0, 4.3),
    (4.5, 4.51),
    (4.6, 4.9),
]


@pytest.mark.parametrize(("jitter", "seed"), [(0.0, 1), (0.01, 3)])
def test_the_reopening_ack_resends_only_what_the_pause_dropped(jitter: float, seed: int) -> None:
    """Review I2: an 8 MB upload over a 40 ms stream path at 16 Mbit/s into an exit that
    pauses again and again. Unlike `Pair.exchange`, the path has frames in flight when the
    consumer resumes: those sent within the last round trip may arrive after the resume and
    be taken, so the reopening ACK must leave them to their timers. Resending every unacked
    frame there instead (review I2's `nomargin`) sent 30 resends for 7 dropped frames, 23 of
    them duplicates at the exit (with 10 ms of jitter: 25 resends, 25 duplicates); half the
    margin, 18 and 11."""
    hop = LinkSpec(delay=0.02, datagram=False, jitter=jitter)
    up = replace(hop, bottleneck=Bottleneck(2e6))
    data = payload(seed, 8_000_000)
    sim = Simulation(
        [PathSpec(up, hop)],
        seed,
        [(0.1, data)],
        [],
        exit_config=RELAYD_EXIT,
        exit_pauses=EXIT_PAUSES,
    )
    assert_clean(sim.run(until=120))
    client, exit_ = sim.client.session, sim.exit.session
    assert exit_.stale_frames > 0  # the pauses dropped frames past window_bytes...
    assert client.sender.retransmissions <= exit_.stale_frames  # ...and only those went again
    assert exit_.duplicates == 0
