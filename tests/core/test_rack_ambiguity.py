"""RACK and resends (RFC 8985, 6.2 step 2), hand-held time, the sender alone: an ACK that
comes sooner after a resend than any path's round trip acknowledges an earlier copy, so the
resend's time must not move the RACK line. It did, and one spurious resend then made every
frame sent before it "lost" (the seed-like simulation at 5 % loss: 7,144 resends per 20 MB,
three quarters spurious; 920 after)."""

from __future__ import annotations

from dupsession.core.sender import Sender

MIN_RTT = 0.05
REORDER = 0.01


def twenty_frames() -> Sender:
    """Frames 0-9 sent at t=0, 10-19 at t=0.05; frame 0 resent at t=0.1 (found lost early)."""
    sender = Sender(1 << 20)
    sender.push(bytes(20 * 100))
    sender.make_frames(100, lambda seq, chunk, fin: bytes(chunk))
    for seq in range(20):
        sender.sent(sender.frames[seq], 0.0 if seq < 10 else 0.05, 1.0)
    first = sender.frames[0]
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


def test_without_the_bound_a_spurious_resend_made_everything_before_it_lost() -> None:
    """The old behaviour, kept as `on_ack`'s default (no bound given)."""
    sender = twenty_frames()
    sender.on_ack(ACKED, RANGES)
    lost, _ = sender.detect_lost(0.102, REORDER, rack_rtt=0.002)
    assert [f.seq for f in lost] == [10, 11]
