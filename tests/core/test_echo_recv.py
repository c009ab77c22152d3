"""`echo recv` (wire.Ack.echo_recv): the peer's count of our copies when our echoed timestamp
arrived makes a path's loss, and so its in-flight count, exact; the count alone is a lower
bound short by every copy sent after the timestamp that had arrived.

The bound alone wedged CI's loopback echoes (about 1 run in 8): the receiving client, busy
sending, dropped most of the exit's startup burst; silence wrote the rest off; in drain the
window was 4 frames, each ACK (echoing the timestamp that led the burst, counting the burst
too) left those 4 "in flight", and the exit sent 4 frames per stale write-off (0.2 s).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.congestion import MIN_WINDOW, STALE_MIN, ModelRate
from dupsession.core.negotiate import Features
from dupsession.core.paths import received_by_echo
from tests.support.session import Pair, data_frames

SRTT = 0.001


def _after_a_lost_burst() -> ModelRate:
    """The CI exit's controller: 119 copies sent, 3 arrived, the echo it has covers 96 of
    them, then silence wrote the 23 beyond the echo off."""
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 119)
    cc.on_ack(1.002, data_recv=3, rtt=SRTT, srtt=SRTT, sent_by_echo=96, echo_recv=3)
    assert cc.inflight == 23  # the 23 sent after the echoed timestamp: unknown yet
    cc.budget(1.002 + STALE_MIN + 1e-6, SRTT)
    assert cc.inflight == 0  # written off
    return cc


def test_an_ack_counting_a_burst_behind_its_echo_leaves_nothing_in_flight() -> None:
    now = 1.3
    cc = _after_a_lost_burst()
    cc.on_sent(now, MIN_WINDOW)  # our ACK (timestamp after 119 copies) led this burst
    # the peer had 3 when that timestamp came, and all 4 of the burst by its ACK
    cc.on_ack(now + SRTT, data_recv=7, rtt=SRTT, srtt=SRTT, sent_by_echo=119, echo_recv=3)
    assert cc.inflight == 0
    assert cc.budget(now + SRTT, SRTT) > 0  # the window is open again, not at the write-off


def test_without_echo_recv_the_same_ack_keeps_the_burst_in_flight() -> None:
    """What an old peer's ACK still does (the reason for the option): 119 - 7 = 112 lost by
    the bound against 116 really, so the 4 that arrived stay in flight."""
    now = 1.3
    cc = _after_a_lost_burst()
    cc.on_sent(now, MIN_WINDOW)
    cc.on_ack(now + SRTT, data_recv=7, rtt=SRTT, srtt=SRTT, sent_by_echo=119)
    assert cc.inflight == MIN_WINDOW


def test_a_frame_reordered_past_the_timestamp_is_lost_only_until_the_next_echo() -> None:
    """Exact counts are taken as they come (not the largest so far): a copy that overtook
    nothing but came after the timestamp it was sent before counts lost once, then not."""
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 10)
    # the timestamp after 10 copies found 9 there; the tenth came just behind it
    cc.on_ack(1.002, data_recv=10, rtt=SRTT, srtt=SRTT, sent_by_echo=10, echo_recv=9)
    cc.on_sent(1.003, 5)
    cc.on_ack(1.005, data_recv=15, rtt=SRTT, srtt=SRTT, sent_by_echo=15, echo_recv=15)
    assert cc.inflight == 0
    cc.on_sent(1.006, 5)
    cc.on_ack(1.008, data_recv=15, rtt=SRTT, srtt=SRTT, sent_by_echo=15, echo_recv=15)
    assert cc.inflight == 5  # a reorder counted for good would leave 4 here


def test_a_count_above_what_was_sent_by_the_timestamp_is_no_negative_loss() -> None:
    """A copy sent after the timestamp that got to the peer before it (reordered the other
    way) makes the count exceed what was sent by then: none lost, not fewer than none."""
    cc = ModelRate()
    cc.budget(1.0, SRTT)
    cc.on_sent(1.0, 10)
    cc.on_ack(1.002, data_recv=8, rtt=SRTT, srtt=SRTT, sent_by_echo=5, echo_recv=8)
    assert cc.inflight == 2


def test_received_by_echo_unwraps_like_the_counter() -> None:
    assert received_by_echo(2**32 + 5, 5, 2**32 - 3) == 2**32 - 3  # wrapped in between
    assert received_by_echo(100, 100, None) == 100  # no `echo recv`: the count now
    assert received_by_echo(100, 100, 101) == 100  # ahead of the count: not believed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # copies the sender may send this step (its source's limit)
            st.lists(st.booleans(), min_size=40, max_size=40),  # which of them are lost
            st.booleans(),  # whether the peer's ACK comes at the end of the step
        ),
        min_size=1,
        max_size=60,
    )
)
def test_in_flight_is_exactly_the_copies_behind_the_echo_not_yet_counted(
    steps: list[tuple[int, list[bool], bool]],
) -> None:
    """A FIFO path, 10 ms steps (ACK gaps under the write-off's 0.2 s): each step our ACK
    leads a burst, the peer counts what arrives and may ACK at the step's end, echoing that
    ACK's timestamp. After each of its ACKs, in flight is the copies sent after the echoed
    timestamp less those the peer counted: the lost ones among them, which nothing can know
    yet, and nothing else."""
    cc = ModelRate()
    now, sent, recv = 10.0, 0, 0
    for wanted, lost, acks in steps:
        count = min(wanted, cc.budget(now, 0.01))
        cc.on_budget_left(count < wanted)
        echoed_sent, echoed_recv = sent, recv  # our ACK, first in the batch
        arrived = sum(1 for copy in range(count) if not lost[copy])
        if count:
            cc.on_sent(now, count)
        sent, recv = sent + count, recv + arrived
        if acks:
            cc.on_ack(now + 0.005, recv, 0.005, 0.01, echoed_sent, echoed_recv)
            assert cc.inflight == count - arrived, (steps, cc.snapshot())
        now += 0.01


def _round(pair: Pair, now: float, lose: int) -> tuple[int, list[wire.Ack]]:
    """The exit sends what it may on path 0, its first `lose` DATA copies lost; the client
    answers after 10 ms. Returns the copies sent and the client's ACKs."""
    out = pair.exit.transmit(now)
    frames = out[0]
    assert frames[0][1] == wire.FrameType.ACK  # our timestamp leads the batch
    data = data_frames(out)
    pair.deliver(pair.client, {0: [frames[0], *data[lose:]]}, now + 0.005)
    reply = pair.client.transmit(now + 0.01)
    pair.deliver(pair.exit, reply, now + 0.015)
    return len(data), pair.acks(pair.client, reply[0])


@pytest.mark.parametrize("echo_recv", [True, False])
def test_sessions_that_agreed_carry_echo_recv_and_count_exactly(echo_recv: bool) -> None:
    """Round one loses 2 copies, which nothing shows yet (they went behind the timestamp);
    round two's timestamp went after them: its echo proves them lost, and with `echo recv`
    in-flight is empty once round two's copies are counted. An ACK without it (an old peer)
    leaves 2 in flight: the bound takes 2 of round two's arrivals for the lost ones."""
    pair = Pair(features=Features(echo_recv=echo_recv))
    now = pair.connect()
    pair.exit.send(b"x" * 200_000)
    first, acks = _round(pair, now, lose=2)
    assert [a.echo_recv is not None for a in acks] == [echo_recv]
    assert pair.exit.paths[0].cc.inflight == 2
    second, acks = _round(pair, now + 0.02, lose=0)
    assert second >= 2
    path = pair.exit.paths[0]
    if echo_recv:
        assert acks[0].echo_recv == first - 2  # what the client had when round two's ts came
        assert path.cc.inflight == 0
    else:
        assert acks[0].echo_recv is None
        assert path.cc.inflight == 2
    # best-k's own measure (and the twin gate) counts the same way
    assert path.own_lost == (2 if echo_recv else 0)
