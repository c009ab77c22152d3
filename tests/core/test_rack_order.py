"""RACK's loss detection (`Sender.detect_lost`) walks frames in send order and stops at the
first one still waiting: the same losses, in the same order, and the same wake-up as the walk
over every frame in flight, which each ACK paid for the slower path's whole flight."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core.sender import Sender, SentFrame

#: One step: (kind, a, b, dt) with kind 0 send new, 1 ACK, 2 detect, 3 resend some of the
#: lost, 4 expire, 5 defer the expired; `now` moves on by dt first.
STEP = st.tuples(st.integers(0, 5), st.integers(0, 40), st.integers(0, 40), st.floats(0.0, 0.03))


class Twins:
    """Two senders fed the same steps: one walks in send order, the other every frame."""

    def __init__(self) -> None:
        self.fast, self.slow = Sender(1 << 40), Sender(1 << 40)
        self.slow._in_order = False  # the frame-number walk
        self.senders = (self.fast, self.slow)
        self.now = 0.0
        self.lost: list[list[SentFrame]] = [[], []]
        self.expired: list[list[SentFrame]] = [[], []]

    def step(self, kind: int, a: int, b: int, dt: float) -> None:
        self.now += dt
        found = [self.act(i, sender, kind, a, b) for i, sender in enumerate(self.senders)]
        assert found[0] == found[1]

    def act(self, i: int, sender: Sender, kind: int, a: int, b: int) -> object:
        now = self.now
        if kind == 0 and a:
            sender.push(bytes(10 * a))
            sender.make_frames(10, lambda seq, payload, fin: bytes(8))
            new = [f for f in sender.frames.values() if not f.sends]
            if b % 2:
                sender.sent_first(new, now, 0.2)
            for frame in new if not b % 2 else ():
                sender.sent(frame, now, 0.2)
        elif kind == 1:  # a cumulative point, and a run above it
            low = sender.acked_below + (a % 4 == 0) * (a // 4)
            run = (low + b // 2, low + b // 2 + 1 + a % 9)
            sender.on_ack(low, (run,) if b % 4 else (), ambiguous_after=now - 0.02)
        elif kind == 2:
            lost, wake = sender.detect_lost(now, 0.001 + a / 4000, b / 400)
            self.lost[i] += lost
            return [f.seq for f in lost], wake
        elif kind == 3:  # resend every other lost frame (by position and `a`)
            alive = [f for f in self.lost[i] if f.seq in sender.frames]
            for frame in alive[a % 2 :: 2]:
                sender.sent(frame, now, 0.2)
            self.lost[i] = alive[1 - a % 2 :: 2]
        elif kind == 4:
            self.expired[i] += sender.expired(now)
        else:
            for frame in self.expired[i]:
                if frame.seq in sender.frames:
                    sender.defer(frame, now + a / 1000)
            self.expired[i] = []
        return None


@settings(max_examples=500, deadline=None)
@given(st.lists(STEP, max_size=100))
def test_send_order_walk_finds_what_the_frame_walk_finds(
    steps: list[tuple[int, int, int, float]],
) -> None:
    twins = Twins()
    for kind, a, b, dt in steps:
        twins.step(kind, a, b, dt)
        fast, slow = twins.fast, twins.slow
        assert fast.largest_acked == slow.largest_acked
        assert fast.rack_sent_at == slow.rack_sent_at
        assert {s: (f.armed, f.sent_at) for s, f in fast.frames.items()} == {
            s: (f.armed, f.sent_at) for s, f in slow.frames.items()
        }
    assert twins.fast._in_order  # time never went back: the send-order walk ran


def test_a_clock_that_steps_back_falls_back_to_the_frame_walk() -> None:
    sender = Sender(1 << 40)
    sender.push(bytes(30))
    sender.make_frames(10, lambda seq, payload, fin: bytes(8))
    frames = list(sender.frames.values())
    sender.sent(frames[0], 1.0, 0.2)
    sender.sent(frames[1], 0.5, 0.2)  # earlier than the send before it
    sender.sent(frames[2], 1.1, 0.2)
    assert not sender._in_order
    sender.on_ack(0, ((2, 3),))  # frame 2 (sent at 1.1) acknowledged
    lost, wake = sender.detect_lost(1.2, 0.05, 0.1)
    assert [f.seq for f in lost] == [0, 1] and wake is None


class CountingFrames(dict[int, SentFrame]):
    """The sender's frame table, counting the frames looked at."""

    looked = 0

    def get(self, key: int, default: object = None) -> object:  # type: ignore[override]
        self.looked += 1
        return super().get(key, default)

    def items(self) -> Iterator[tuple[int, SentFrame]]:  # type: ignore[override]
        for item in super().items():
            self.looked += 1
            yield item


def test_a_slow_paths_flight_below_the_acknowledged_frame_is_not_walked() -> None:
    """A fast path acknowledges frames above 500 of the slow path's, sent a moment earlier
    and still within the reorder window: the walk stops at the first of them (was 500)."""
    sender = Sender(1 << 40)
    sender.frames = counting = CountingFrames()
    sender.push(bytes(10 * 600))
    sender.make_frames(10, lambda seq, payload, fin: bytes(8))
    frames = list(sender.frames.values())
    sender.sent_first(frames[:500], 1.000, 0.3)  # the slow path's
    sender.sent_first(frames[500:], 1.001, 0.3)  # the fast path's
    sender.on_ack(0, ((500, 600),))
    counting.looked = 0
    lost, wake = sender.detect_lost(1.02, 0.01, 0.02)
    assert lost == [] and wake == 1.000 + 0.02 + 0.01
    assert counting.looked < 5


def frames_of(sender: Sender, count: int) -> list[SentFrame]:
    """`count` new frames, not sent yet."""
    sender.push(bytes(10 * count))
    sender.make_frames(10, lambda seq, payload, fin: bytes(8))
    return [f for f in sender.frames.values() if not f.sends]


def test_resends_and_first_copies_lost_at_once_come_in_frame_order() -> None:
    """Frames 0-4 lost and resent at 20 ms, 5-9 first sent at 10 ms: one ACK finds both
    lost, and the resends go 0..9 (send order would put 5-9 first)."""
    sender = Sender(1 << 40)
    sender.sent_first(frames_of(sender, 5), 0.0, 0.2)
    sender.sent_first(frames_of(sender, 5), 0.010, 0.2)
    sender.sent_first(frames_of(sender, 5), 0.011, 0.2)
    sender.on_ack(0, ((10, 11),))
    lost, _ = sender.detect_lost(0.012, 0.005, 0.1)
    assert [f.seq for f in lost] == [0, 1, 2, 3, 4]
    for frame in lost:
        sender.sent(frame, 0.020, 0.2)
    sender.sent_first(frames_of(sender, 5), 0.050, 0.2)
    sender.on_ack(0, ((10, 11), (15, 16)))
    lost, _ = sender.detect_lost(0.060, 0.005, 0.1)
    assert [f.seq for f in lost] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]


def test_frames_above_the_highest_acknowledged_are_passed_not_stopped_at() -> None:
    """Frames 5-9 (above the highest acknowledged, 3) sent before the resends of 0-4 that
    an ACK of 3's resend finds lost: the walk passes them and finds 0-2."""
    sender = Sender(1 << 40)
    sender.sent_first(frames_of(sender, 5), 0.0, 0.005)
    sender.sent_first(frames_of(sender, 5), 0.001, 0.2)
    expired = sender.expired(0.006)
    assert [f.seq for f in expired] == [0, 1, 2, 3, 4]
    for frame in expired:
        sender.sent(frame, 0.010, 0.2)
    sender.on_ack(0, ((3, 4),), ambiguous_after=0.05)  # its resend moves the RACK line
    lost, _ = sender.detect_lost(0.05, 0.001, 0.02)
    assert [f.seq for f in lost] == [0, 1, 2]
