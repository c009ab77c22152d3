"""The datagram paths' controller (`ModelRate`) with hand-held time: exact budgets and state."""

from __future__ import annotations

import pytest

from dupsession.core.congestion import (
    INITIAL_WINDOW,
    MIN_BURST,
    STALE_MIN,
    STARTUP_GAIN,
    CongestionController,
    ModelRate,
)

SRTT = 0.05


def test_stream_paths_are_not_limited_by_the_base_controller() -> None:
    cc = CongestionController()
    assert cc.budget(0.0, SRTT) is None
    assert cc.wake_at(SRTT) is None


def test_first_budget_is_the_initial_window_then_pacing_refills_it() -> None:
    cc = ModelRate()
    assert cc.budget(10.0, SRTT) == INITIAL_WINDOW
    cc.on_sent(10.0, INITIAL_WINDOW)
    assert cc.budget(10.0, SRTT) == 0
    # no estimate yet: paced at startup gain x initial window per RTT
    rate = STARTUP_GAIN * INITIAL_WINDOW / SRTT
    assert cc.pacing_rate(SRTT) == pytest.approx(rate)
    # the next wake is when a burst's worth (at least MIN_BURST frames, 1 ms) has refilled...
    need = max(1.0, rate * 0.001)
    assert cc.wake_at(SRTT) == pytest.approx(10.0 + min(MIN_BURST, need) / rate)
    # ...and tokens never pile up beyond one burst (2 ms at the rate, at least MIN_BURST)
    assert cc.budget(10.01, SRTT) == int(max(MIN_BURST, rate * 0.002))


def test_inflight_counts_what_the_peer_received_and_what_its_echo_shows_lost() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 20)
    cc.on_ack(1.05, data_recv=10, rtt=0.05, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == 10
    # the echoed timestamp left after 20 frames; the peer has 17: 3 were lost
    cc.on_ack(1.06, data_recv=17, rtt=0.05, srtt=SRTT, sent_by_echo=20)
    assert cc.inflight == 0
    assert cc.min_rtt == pytest.approx(0.05)


def test_silence_releases_the_window() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    window = cc.cwnd(SRTT)
    cc.on_sent(1.0, window)
    cc.on_ack(1.05, data_recv=0, rtt=0.05, srtt=SRTT, sent_by_echo=None)
    assert cc.inflight == window
    assert cc.budget(1.05 + STALE_MIN - 1e-6, SRTT) == 0  # window full, still waiting
    assert cc.budget(1.05 + STALE_MIN + 1e-6, SRTT) > 0  # silent too long: counted lost
    assert cc.inflight == 0


def test_counter_wraparound_and_reordered_acks() -> None:
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    start = 2**32 - 5
    cc.on_ack(1.0, data_recv=start, rtt=None, srtt=SRTT, sent_by_echo=None)
    cc.on_ack(1.01, data_recv=5, rtt=None, srtt=SRTT, sent_by_echo=None)  # wrapped: +10
    cc.on_ack(1.02, data_recv=3, rtt=None, srtt=SRTT, sent_by_echo=None)  # older: ignored
    assert cc.snapshot()["kind"] == "model-rate"
    assert cc._delivered == start + 10
