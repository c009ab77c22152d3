"""RACK and resends (RFC 8985, 6.2 step 2), hand-held time, the sender alone: an ACK that
comes sooner after a resend than any path's round trip acknowledges an earlier copy, so the
resend's time must not move the RACK line. It did, and one spurious resend then made every
frame sent before it "lost" (the seed-like simulation at 5 % loss: 7,144 resends per 20 MB,
three quarters spurious; 920 after)."""

from __future__ import annotations

import pytest

from dupsession.core import wire
from dupsession.core.recovery import Recovery
from dupsession.core.sender import Sender
from tests.support.session import T0, Pair, data_frames

ACK_DELAY = 0.004

MIN_RTT = 0.05
REORDER = 0.01


def twenty_frames(resent: int = 0) -> Sender:
    """Frames 0-9 sent at t=0, 10-19 at t=0.05; frame `resent` resent at t=0.1 (found lost
    early)."""
    sender = Sender(1 << 20)
    sender.push(bytes(20 * 100))
    sender.make_frames(100, lambda seq, chunk, fin: bytes(chunk))
    for seq in range(20):
        sender.sent(sender.frames[seq], 0.0 if seq < 10 else 0.05, 1.0)
    first = sender.frames[resent]
    first.armed = False
    sender.sent(first, 0.1, 1.0)
    return sender


# Every test: an ACK acknowledges frames 0-9 (frame 0 by some copy) and 12-13 (sent at 0.05);
# frames 10 and 11, sent at 0.05 too, are still on their way.
ACKED, RANGES = 10, ((12, 14),)


def test_an_ack_sooner_than_a_round_trip_after_a_resend_answers_the_first_copy() -> None:
    sender = twenty_frames()
    now = 0.102  # 2 ms after the resend: its first copy's ACK, not the resend's
    assert sender.on_ack(ACKED, RANGES, ambiguous_after=now - MIN_RTT) == 12
    assert sender.rack_sent_at == 0.05  # frames 12-13's send, not frame 0's resend
    lost, wake = sender.detect_lost(now, REORDER, rack_rtt=0.052)
    assert lost == []  # 10 and 11 left with 12 and 13: they wait out the reorder window
    assert wake == 0.05 + 0.052 + REORDER


def test_a_resend_acknowledged_a_round_trip_later_moves_the_line() -> None:
    sender = twenty_frames()
    now = 0.16  # 60 ms after the resend: it may be the resend's own ACK
    sender.on_ack(ACKED, RANGES, ambiguous_after=now - MIN_RTT)
    assert sender.rack_sent_at == 0.1
    lost, _ = sender.detect_lost(now, REORDER, rack_rtt=0.06)
    assert [f.seq for f in lost] == [10, 11]  # sent 50 ms before a frame acknowledged


def test_a_resend_acknowledged_by_a_range_answers_its_first_copy_too() -> None:
    """The same rule where a range, not the cumulative point, takes the resent frame (the
    selective walk, `Sender._take_run`): frame 0 still missing, frame 5 resent at 0.1, an ACK
    2 ms later takes 1-9 and 12-13. Only frame 0 left long enough before 12 and 13 to be lost;
    10 and 11 wait out the reorder window."""
    sender = twenty_frames(resent=5)
    now = 0.102
    assert sender.on_ack(0, ((1, 10), *RANGES), ambiguous_after=now - MIN_RTT) == 11
    assert sender.rack_sent_at == 0.05  # frames 12-13's send, not frame 5's resend
    lost, _ = sender.detect_lost(now, REORDER, rack_rtt=0.052)
    assert [f.seq for f in lost] == [0]


def test_without_the_bound_a_spurious_resend_made_everything_before_it_lost() -> None:
    """The old behaviour, kept as `on_ack`'s default (no bound given)."""
    sender = twenty_frames()
    sender.on_ack(ACKED, RANGES)
    lost, _ = sender.detect_lost(0.102, REORDER, rack_rtt=0.002)
    assert [f.seq for f in lost] == [10, 11]


def data_of(out: dict[int, list[bytes]], seq: int) -> dict[int, list[bytes]]:
    return {
        pid: [f for f in frames if f[1] == wire.FrameType.DATA and seq_of(f) == seq]
        for pid, frames in out.items()
    }


def seq_of(frame: bytes) -> int:
    return int.from_bytes(frame[12:20], "big")


def test_before_any_rtt_sample_the_handshake_rtt_bounds_the_ambiguity() -> None:
    """Review D13: with no RTT sample yet the best minimum RTT was infinite, so no resend ever
    moved the RACK line. The handshake's RTT (50 ms) stands in. "a" and "b" leave 2 ms apart
    and are lost; each is probed one timeout (104 ms) later; the probe of "a" is lost, that
    of "b" is acknowledged 54 ms later (an ACK with no echo: still no sample). "a" left 2 ms
    before "b" did: RACK finds it lost at once, rather than one timeout after its probe."""
    pair = Pair()
    c, e = pair.client, pair.exit
    path = c.paths[0]
    path.rtt.add_provisional(0.05)
    path.heard(T0)
    c.send(b"a")
    c.transmit(T0)  # lost
    c.send(b"b")
    c.transmit(T0 + 0.002)  # lost
    probe_a = c.get_timer()
    assert probe_a == pytest.approx(T0 + 0.104, abs=1e-9)
    c.handle_timer(probe_a)
    lost = data_frames(c.transmit(probe_a))  # lost again
    probe_b = c.get_timer()
    assert probe_b == pytest.approx(T0 + 0.106, abs=1e-9)
    c.handle_timer(probe_b)
    pair.deliver(e, data_of(c.transmit(probe_b), 1), probe_b + 0.025)
    ack_at = probe_b + 0.05 + ACK_DELAY
    pair.deliver(c, e.transmit(probe_b + 0.025 + ACK_DELAY), ack_at)
    assert path.rtt.samples == 0 and c.sender.largest_acked == 1 and 0 in c.sender.frames
    assert c.sender.lost_detected == 1  # "a", by RACK (a probe is no detection)
    assert data_frames(c.transmit(ack_at)) == lost  # twice: a keystroke's flight, one path


def test_the_bound_uses_the_best_estimate_each_path_has() -> None:
    pair = Pair(paths=3)
    first, second, third = (pair.client.paths[pid] for pid in range(3))
    now = T0 + 1
    assert Recovery.ambiguous_after(now, [first, second, third]) == now  # no estimate at all
    second.rtt.add_provisional(0.08)
    assert Recovery.ambiguous_after(now, [first, second, third]) == now - 0.08
    third.rtt.add(0.1)
    third.rtt.add(0.03)
    assert Recovery.ambiguous_after(now, [first, second, third]) == now - 0.03
