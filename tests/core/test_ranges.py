"""RangeSet (selective acks, held frames), plus the Sender and Receiver buffers built on it."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from dupsession.core.errors import LocalProtocolError
from dupsession.core.ranges import RangeSet
from dupsession.core.receiver import Receiver
from dupsession.core.sender import (
    INITIAL_PEER_WINDOW,
    MAX_BACKOFF_EXPONENT,
    PENDING_LIMIT,
    SMALL_PIECE,
    Sender,
)

TAG = bytes(range(16))  #: a first copy's tag, as the session passes it


def runs(rs: RangeSet) -> list[tuple[int, int]]:
    return list(rs)


def from_set(values: set[int]) -> list[tuple[int, int]]:
    """The canonical runs of a plain set: the model RangeSet must match."""
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0], v + 1)
        else:
            out.append((v, v + 1))
    return out


# --- RangeSet ----------------------------------------------------------------------------------


def test_empty() -> None:
    rs = RangeSet()
    assert not rs
    assert len(rs) == 0
    assert runs(rs) == []
    assert 0 not in rs
    assert rs.lowest(4) == ()


def test_add_single_values_merge_when_adjacent() -> None:
    rs = RangeSet()
    rs.add(5)
    rs.add(7)
    assert runs(rs) == [(5, 6), (7, 8)]
    rs.add(6)
    assert runs(rs) == [(5, 8)]
    rs.add(4)
    rs.add(8)
    assert runs(rs) == [(4, 9)]


def test_add_range_bridges_and_swallows() -> None:
    rs = RangeSet()
    for start in (0, 10, 20, 30):
        rs.add(start, start + 2)
    rs.add(1, 21)  # overlaps the first, swallows the second, touches the third
    assert runs(rs) == [(0, 22), (30, 32)]
    rs.add(22, 30)  # exactly fills the gap
    assert runs(rs) == [(0, 32)]


def test_add_empty_or_inverted_is_a_no_op() -> None:
    rs = RangeSet()
    rs.add(5, 5)
    rs.add(9, 3)
    assert not rs


def test_add_inside_existing_run_changes_nothing() -> None:
    rs = RangeSet()
    rs.add(0, 10)
    rs.add(3, 4)
    rs.add(0, 10)
    assert runs(rs) == [(0, 10)]


def test_contains() -> None:
    rs = RangeSet()
    rs.add(3, 6)
    rs.add(10)
    assert [v for v in range(12) if v in rs] == [3, 4, 5, 10]


def test_remove_below() -> None:
    rs = RangeSet()
    rs.add(0, 3)
    rs.add(5, 9)
    rs.add(12, 14)
    rs.remove_below(6)
    assert runs(rs) == [(6, 9), (12, 14)]
    rs.remove_below(9)  # exactly at a run's end: the run goes
    assert runs(rs) == [(12, 14)]
    rs.remove_below(100)
    assert not rs


def test_first_pop_first_lowest() -> None:
    rs = RangeSet()
    for v in (40, 20, 30, 10):
        rs.add(v)
    assert rs.first() == (10, 11)
    assert rs.lowest(2) == ((10, 11), (20, 21))
    assert rs.pop_first() == (10, 11)
    assert runs(rs) == [(20, 21), (30, 31), (40, 41)]
    assert len(rs.lowest(10)) == 3


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_plain_set(seed: int) -> None:
    rng = random.Random(seed)
    rs, model = RangeSet(), set[int]()
    for _ in range(300):
        op = rng.random()
        if op < 0.6:
            start = rng.randrange(200)
            end = start + rng.randrange(0, 6)
            rs.add(start, end if end > start else None)
            model.update(range(start, end) if end > start else {start})
        elif op < 0.7:
            bound = rng.randrange(200)
            rs.remove_below(bound)
            model = {v for v in model if v >= bound}
        expected = from_set(model)
        assert runs(rs) == expected, f"seed={seed}"
        assert len(rs) == len(expected)
        probe = rng.randrange(210)
        assert (probe in rs) == (probe in model), f"seed={seed} probe={probe}"


# --- Receiver ----------------------------------------------------------------------------------


def test_receiver_delivers_in_order_once() -> None:
    rx = Receiver(window_frames=16)
    assert rx.accept(1, False, b"b", 0.0, 0, TAG) == []
    assert rx.accept(2, False, b"c", 0.0, 1, TAG) == []
    assert rx.held_bytes == 2
    assert runs(rx.ranges) == [(1, 3)]
    assert rx.accept(0, False, b"a", 0.0, 0, TAG) == [b"a", b"b", b"c"]
    assert rx.cumulative == 3
    assert rx.held_bytes == 0
    assert not rx.ranges
    assert all(rx.is_duplicate(s) for s in range(3))
    assert not rx.is_duplicate(3)


def test_receiver_fin_after_hole() -> None:
    rx = Receiver(window_frames=16)
    rx.accept(1, True, b"", 0.0, 0, TAG)
    assert not rx.fin_delivered
    assert rx.is_duplicate(1)
    assert rx.accept(0, False, b"x", 0.0, 0, TAG) == [b"x"]
    assert rx.fin_delivered


def test_receiver_window_and_pause() -> None:
    rx = Receiver(window_frames=4)
    assert rx.window_end() == 4
    assert rx.in_window(3)
    assert not rx.in_window(4)
    rx.accept(0, False, b"x", 0.0, 0, TAG)
    rx.pause(True)
    frozen = rx.window_end()
    assert frozen == 5
    for seq in range(1, 5):
        rx.accept(seq, False, b"x", 0.0, 0, TAG)
    assert rx.window_end() == frozen  # consuming no longer opens the window
    assert not rx.in_window(5)
    rx.pause(False)
    assert rx.window_end() == 5 + 4
    assert rx.in_window(8)


def test_receiver_remembers_first_arrival() -> None:
    rx = Receiver(window_frames=16)
    rx.accept(0, False, b"x", 1.5, 2, TAG)
    assert rx.first_arrival(0) == (0, 1.5, 2, TAG, 1 << 2)
    assert rx.first_arrival(1) is None
    rx.accept(8192, False, b"x", 2.5, 0, TAG)  # the same ring slot, a newer frame
    assert rx.first_arrival(0) is None


# --- Sender ------------------------------------------------------------------------------------


def encode(seq: int, payload: bytes, fin: bool) -> bytes:
    return seq.to_bytes(8, "big") + bytes([fin]) + payload


def test_sender_cuts_frames_within_the_peer_window() -> None:
    tx = Sender(window_bytes=1 << 20)
    tx.peer_window_end = 3
    tx.push(b"a" * 25)
    tx.make_frames(10, encode)
    assert tx.next_seq == 3
    assert [f.payload_len for f in tx.frames.values()] == [10, 10, 5]
    assert tx.fin_seq is None
    tx.close()
    assert tx.has_pending()  # the FIN still needs a frame
    tx.make_frames(10, encode)
    assert tx.next_seq == 3  # window full: the FIN waits
    tx.peer_window_end = 4
    tx.make_frames(10, encode)
    assert tx.fin_seq == 3
    assert tx.frames[3].fin
    assert tx.frames[3].payload_len == 0
    assert not tx.has_pending()


def test_sender_initial_peer_window() -> None:
    tx = Sender(window_bytes=1 << 30)
    tx.push(b"x" * (INITIAL_PEER_WINDOW + 10))
    tx.make_frames(1, encode)
    assert tx.next_seq == INITIAL_PEER_WINDOW


def test_sender_learns_the_peer_window_from_the_first_ack() -> None:
    tx = Sender(window_bytes=1 << 20)
    assert tx.peer_window_end == INITIAL_PEER_WINDOW
    tx.on_peer_window(16, 0)  # smaller than the guess: believed
    assert tx.peer_window_end == 16
    tx.on_peer_window(40, 0)
    tx.on_peer_window(20, 0)  # an older ACK, reordered: never shrinks the window
    assert tx.peer_window_end == 40


def test_sender_tells_a_reopened_window_from_a_moving_one() -> None:
    """A moving window leaves the same room past the peer's cumulative point on every ACK; a
    frozen one (the peer's consumer paused) leaves less as frames are delivered, and the ACK
    that reopens it leaves more: that one, and only that one, says so."""
    tx = Sender(window_bytes=1 << 20)
    assert not tx.on_peer_window(100, 0)  # the first ACK replaces the guess
    # (the session asks before the ACK moves the cumulative point: `acked_below` is the last's)
    assert not tx.on_peer_window(110, 10)  # moving: the same room
    tx.acked_below = 10
    assert not tx.on_peer_window(110, 60)  # frozen: less room
    tx.acked_below = 60
    assert not tx.on_peer_window(105, 5)  # an older ACK, reordered
    assert tx.on_peer_window(160, 60)  # reopened: more room past the same point
    assert not tx.on_peer_window(170, 70)  # moving again


def test_sender_writable_counts_pending_and_unacked() -> None:
    tx = Sender(window_bytes=100)
    assert tx.writable() == 100
    tx.push(b"x" * 60)
    assert tx.writable() == 40
    tx.make_frames(30, encode)
    assert tx.unacked_bytes == 60
    assert tx.writable() == 40
    tx.on_ack(1, ())
    assert tx.writable() == 70
    tx.close()
    assert tx.writable() == 0
    with pytest.raises(LocalProtocolError):
        tx.push(b"late")


def test_selective_ack_frees_frames_not_window() -> None:
    """A SACKed frame sits in the peer's reorder buffer behind the hole: it keeps counting."""
    tx = Sender(window_bytes=40)
    tx.push(b"x" * 40)
    tx.make_frames(10, encode)
    assert tx.writable() == 0
    assert tx.on_ack(0, ((1, 4),)) == 3
    assert sorted(tx.frames) == [0]  # nothing to resend but frame 0
    assert tx.unacked_bytes == 40
    assert tx.writable() == 0
    assert tx.on_ack(4, ()) == 1  # the hole filled: everything is released at once
    assert tx.unacked_bytes == 0
    assert tx.writable() == 40
    assert not tx.frames


def test_ack_beyond_what_was_sent_is_clamped() -> None:
    tx = Sender(window_bytes=100)
    tx.push(b"abc")
    tx.make_frames(1, encode)
    tx.on_ack(50, ((60, 70),))
    assert tx.acked_below == 3
    assert tx.unacked_bytes == 0


def test_resend_deadlines_back_off() -> None:
    tx = Sender(window_bytes=100)
    tx.push(b"a")
    tx.make_frames(10, encode)
    frame = tx.frames[0]
    tx.sent(frame, now=10.0, rto=0.1)
    tx.sent(frame, now=10.05, rto=0.1)  # a copy on a slower path: same round, no re-arm
    assert tx.next_deadline() == pytest.approx(10.1)
    assert tx.expired(10.09) == []
    deadlines = []
    now = 10.1
    for _ in range(MAX_BACKOFF_EXPONENT + 3):
        assert tx.expired(now) == [frame]
        tx.sent(frame, now, rto=0.1)
        deadline = tx.next_deadline()
        assert deadline is not None
        deadlines.append(round(deadline - now, 9))
        now = deadline
    assert deadlines == [
        0.1 * 2 ** min(i, MAX_BACKOFF_EXPONENT) for i in range(1, len(deadlines) + 1)
    ]
    assert tx.retransmissions == len(deadlines)
    tx.on_ack(1, ())
    assert tx.next_deadline() is None


def test_uncut_bytes_are_bounded_per_turn() -> None:
    """Past PENDING_LIMIT bytes not yet cut into frames the source pauses (writable 0) until a
    transmit cuts them: one loop turn must not read and seal a whole window (docs/BENCHMARKS.md,
    "Loopback bulk: the two ends took turns")."""
    tx = Sender(window_bytes=8 * 1024 * 1024)
    assert tx.writable() == PENDING_LIMIT
    tx.push(bytes(PENDING_LIMIT - 1))
    assert tx.writable() == 1
    tx.push(b"xy")
    assert tx.writable() == 0
    tx.make_frames(1000, lambda seq, payload, fin: bytes(payload))
    assert tx.writable() == PENDING_LIMIT  # all cut, and the window has room for more


def push_as(tx: Sender, piece: bytes, kind: int) -> None:
    """Push `piece` as bytes (0), a view of bytes (1), a bytearray (2) or a read-only view of
    one (3); the owner of a buffer overwrites it right after."""
    if kind == 0:
        tx.push(piece)
    elif kind == 1:
        tx.push(memoryview(b"@" + piece)[1:])
    else:
        reused = bytearray(piece)
        tx.push(reused if kind == 2 else memoryview(reused).toreadonly())
        reused[:] = b"!" * len(reused)


def test_sender_frames_carry_the_pushed_pieces_in_order() -> None:
    """Pieces are held, not copied, until cut: frames spanning pieces are joined, a mutable
    buffer is copied at `push` (its owner may reuse it), and `backlog` counts bytes."""
    rng = random.Random(7)
    tx = Sender(window_bytes=1 << 30)
    expected = bytearray()
    for _ in range(200):
        piece = rng.randbytes(rng.randrange(0, 40))
        expected += piece
        push_as(tx, piece, rng.randrange(3))
        if rng.random() < 0.2:
            tx.make_frames(rng.randrange(1, 50), encode)
    assert tx.backlog() == len(expected)
    tx.close()
    tx.make_frames(16, encode)
    frames = [tx.frames[seq] for seq in sorted(tx.frames)]
    assert b"".join(f.frame[9:] for f in frames) == expected
    assert [f.payload_len for f in frames] == [len(f.frame) - 9 for f in frames]
    assert frames[-1].fin and not tx.has_pending()


def test_small_and_large_pieces_of_every_kind_come_out_in_order() -> None:
    """Short pieces joined onto a short last one, long ones held as they came (views into
    them), mutable buffers and read-only views of them copied at `push`: the frames carry
    exactly the pushed bytes, in order, whatever the owners do with their buffers after."""
    rng = random.Random(11)
    tx = Sender(window_bytes=1 << 30)
    tx.on_peer_window(1 << 30, 0)
    expected = bytearray()
    for _ in range(300):
        piece = rng.randbytes(rng.choice((1, 7, SMALL_PIECE - 1, SMALL_PIECE, 3000)))
        expected += piece
        push_as(tx, piece, rng.randrange(4))
        if rng.random() < 0.2:
            tx.make_frames(rng.choice((5, 700, 1200)), encode)
    assert tx.backlog() == len(expected)
    tx.close()
    tx.make_frames(1200, encode)
    frames = [tx.frames[seq] for seq in sorted(tx.frames)]
    assert b"".join(f.frame[9:] for f in frames) == expected


def test_a_trickle_of_tiny_pushes_is_held_in_memory_bounded_by_its_bytes() -> None:
    """A source read a few bytes at a time (a target trickling, the peer's window shut) fills
    `PENDING_LIMIT` with tiny pieces; held one object each (a view and the bytes under it,
    ~400 bytes per 2-byte piece) that was 55 MB per session, where a buffer held 256 KiB."""
    tx = Sender(window_bytes=1 << 30)
    tracemalloc.start()
    try:
        while tx.writable():
            tx.push(memoryview(bytes(64))[:2])  # a compressed session's RAW piece: a view
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tx.backlog() == PENDING_LIMIT
    assert held < 3 * PENDING_LIMIT
