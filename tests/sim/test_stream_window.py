"""Stream paths (TCP, SSH) in the simulator: our in-flight limit keeps the queue in front of
the bottleneck short (issue 9 item 2).

The simulator's stream link queues without bound, like a TCP send buffer with the kernel's
window behind it: whatever the core hands a stream path waits at the bottleneck. Frames are
datagram-sized, as in the netlab's mix of UDP and TCP paths. Before the limit, a 3 MB upload
over a 10 Mbit/s uplink (50 ms RTT) stood up to 3.46 s deep there (median 2.3 s after the
first third) and moved 6.8 Mbit/s; with it, in-flight stays within 1.25 bandwidth-delay
products, the queue ~20 ms after startup, and the link busy (9.3 Mbit/s).
"""

from __future__ import annotations

import statistics

from dupsession.core.congestion import ACK_AGGREGATION
from dupsession.core.session import SessionConfig
from dupsession.core.stream_window import STREAM_CWND_GAIN, StreamWindow
from tests.sim.network import Bottleneck, LinkSpec, PathSpec, Simulation

MBIT = 1e6 / 8  #: bytes per second
SMALL_FRAMES = SessionConfig(large_frames=False)


def test_a_stream_path_keeps_in_flight_near_one_bdp_and_the_queue_short() -> None:
    rate, size, delay = 10 * MBIT, 3_000_000, 0.025
    up = Bottleneck(rate, queue=0.2)
    spec = PathSpec(
        LinkSpec(delay=delay, datagram=False, bottleneck=up),
        LinkSpec(delay=delay, datagram=False),
    )
    sim = Simulation(
        [spec], 1, [bytes(size)], [], client_config=SMALL_FRAMES, exit_config=SMALL_FRAMES
    )
    peak: dict[str, int] = {}

    def track(sim: Simulation) -> bool:
        cc = sim.client.session.paths[0].cc
        assert isinstance(cc, StreamWindow)
        peak[cc.mode] = max(peak.get(cc.mode, 0), cc.inflight)
        return False

    result = sim.run(until=60, stop=track)
    assert result.exit.received == result.client.sent, result.describe()
    assert result.exit.closed_at is not None, result.describe()
    # the link stays busy: >= 85 % of its rate over the whole transfer, startup included
    assert size / result.exit.closed_at >= 0.85 * rate, result.describe()
    cc = sim.client.session.paths[0].cc
    assert isinstance(cc, StreamWindow)
    assert abs(cc.min_rtt - 2 * delay) < 0.005, cc.snapshot()
    assert abs(cc.btl_bw * 1232 - rate) <= 0.05 * rate, cc.snapshot()
    # after startup, in flight (frames) stays within the window: 1.25 x the BDP
    bdp = cc.btl_bw * (2 * delay + ACK_AGGREGATION)
    assert peak["probe"] <= STREAM_CWND_GAIN * bdp + 1, (peak, bdp)
    # the bottleneck's queue: startup overshoots once (116 ms), then it stays short
    steady = up.waits[len(up.waits) // 3 :]
    assert max(up.waits) < 0.15, max(up.waits)
    assert statistics.median(steady) < 0.025, statistics.median(steady)
    assert max(steady) < 0.03, max(steady)
