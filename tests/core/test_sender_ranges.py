"""`Sender.on_ack` walks each selective range only outside the runs the last ACK took.

Every path's ACK repeats the stream's lowest 32 runs, so at 5 % loss the exit walked the
same hundreds of frame numbers four times per ACK round (6-7 % of relayd's CPU on the
netlab, docs/BENCHMARKS.md "CPU per frame on the netlab"). What it frees, and the RACK line
it keeps, must be exactly what the full walk gives."""

from __future__ import annotations

import random

from dupsession.core.sender import Sender, SentFrame


class CountingFrames(dict[int, SentFrame]):
    """The sender's frame table, counting the frame numbers looked up to be taken."""

    pops = 0

    def pop(self, key: int, default: object = None) -> object:  # type: ignore[override]
        self.pops += 1
        return super().pop(key, default)


def sender_with(frames: int, rng: random.Random | None = None) -> Sender:
    """Frame n sent at n ms; with `rng`, some resent (`sends` 2) up to 300 ms later."""
    sender = Sender(1 << 40)
    sender.push(bytes(100 * frames))
    sender.make_frames(100, lambda seq, payload, fin: bytes(8))
    for seq, sent in sender.frames.items():
        sent.sent_at, sent.sends = seq / 1000, 1
        if rng is not None and rng.random() < 0.3:
            sent.sent_at, sent.sends = seq / 1000 + rng.uniform(0, 0.3), 2
    return sender


def moves_rack(sender: Sender, sent: SentFrame, ambiguous_after: float) -> bool:
    """RFC 8985, 6.2 step 2: a resend acknowledged sooner than a round trip after it answers
    its first copy, and its time does not move the RACK line."""
    return sent.sent_at > sender.rack_sent_at and (
        sent.sends < 2 or sent.sent_at <= ambiguous_after
    )


def full_walk(
    sender: Sender,
    cumulative: int,
    ranges: tuple[tuple[int, int], ...],
    ambiguous_after: float = float("-inf"),
) -> int:
    """The walk without memory (main before this change), on a copy's state."""
    freed = 0
    if cumulative > sender.acked_below:
        for seq in range(sender.acked_below, min(cumulative, sender.next_seq)):
            sent = sender.frames.pop(seq, None)
            if sent is not None:
                freed += 1
                if moves_rack(sender, sent, ambiguous_after):
                    sender.rack_sent_at = sent.sent_at
            else:
                sender._sacked.pop(seq, None)
        sender.acked_below = min(cumulative, sender.next_seq)
        sender.largest_acked = max(sender.largest_acked, sender.acked_below - 1)
    for start, end in ranges:
        for seq in range(max(start, sender.acked_below), min(end, sender.next_seq)):
            sent = sender.frames.pop(seq, None)
            if sent is not None:
                sender._sacked[seq] = sent.payload_len
                freed += 1
                if moves_rack(sender, sent, ambiguous_after):
                    sender.rack_sent_at = sent.sent_at
                sender.largest_acked = max(sender.largest_acked, seq)
    return freed


def test_repeated_ranges_are_not_walked_again() -> None:
    sender = sender_with(1000)
    counting = CountingFrames(sender.frames)
    sender.frames = counting
    ranges = tuple((start, start + 19) for start in range(100, 740, 20))  # 32 runs, 19 each
    assert sender.on_ack(50, ranges) == 50 + 32 * 19
    first = counting.pops
    assert sender.on_ack(50, ranges) == 0  # the same ACK on another path
    assert counting.pops == first  # nothing walked again (was 608 more)
    grown = (*ranges[:-1], (ranges[-1][0], ranges[-1][1] + 5))  # the top run grew by 5
    assert sender.on_ack(50, grown) == 5
    assert counting.pops == first + 5


def test_a_filled_hole_walks_the_frame_that_filled_it_not_the_run_above() -> None:
    """A resend fills the hole between two runs and they merge: the merged run starts where
    the lower one did, yet only the resent frame is new (was: the whole upper run again)."""
    sender = sender_with(1000)
    counting = CountingFrames(sender.frames)
    sender.frames = counting
    assert sender.on_ack(10, ((20, 150), (151, 700), (701, 900))) == 10 + 130 + 549 + 199
    before = counting.pops
    assert sender.on_ack(10, ((20, 700), (701, 900))) == 1  # frame 150 came
    assert counting.pops == before + 1  # was 551: 150 to 700
    assert sender.on_ack(10, ((20, 900),)) == 1  # frame 700
    assert counting.pops == before + 2  # was 201 more
    assert sender.largest_acked == 899 and not set(range(20, 900)) & sender.frames.keys()


class CountingRanges(tuple[tuple[int, int], ...]):
    """An ACK's runs, counting how often they are walked."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).walks += 1
        return super().__iter__()


def test_another_paths_copy_of_the_last_ack_is_known_without_walking_its_runs() -> None:
    sender = sender_with(1000)
    runs = CountingRanges((start, start + 19) for start in range(100, 740, 20))
    assert sender.on_ack(50, runs) == 50 + 32 * 19
    walks = CountingRanges.walks
    assert sender.on_ack(50, runs) == 0  # the same runs, the same cumulative point
    assert sender.on_ack(40, runs) == 0  # an older cumulative point beside them too
    assert CountingRanges.walks == walks  # one comparison each (was a walk of 32 runs)
    assert sender.on_ack(51, runs) == 1  # the cumulative point moved (frame 50): walked
    assert CountingRanges.walks > walks
    assert sender.acked_below == 51


def test_runs_past_what_was_sent_are_walked_again_once_it_is_sent() -> None:
    """A forged ACK naming frames not sent yet takes what was sent; the same ACK again,
    after more was sent, takes the rest (the repeat is not taken for a copy)."""
    sender = sender_with(100)
    assert sender.on_ack(0, ((50, 150),)) == 50
    sender.push(bytes(100 * 100))
    sender.make_frames(100, lambda seq, payload, fin: bytes(8))
    assert sender.on_ack(0, ((50, 150),)) == 50


def test_the_same_frames_freed_and_rack_line_as_the_full_walk() -> None:
    """Random ACK streams (runs that grow, merge, reorder, an older ACK late) free exactly
    what the memoryless walk frees, ACK by ACK, and keep the same RACK line: frames resent
    at random, each ACK's ambiguity bound at random (review K2: with every frame sent once
    the rule was never exercised)."""
    for seed in range(30):
        rng = random.Random(seed)
        new, ref = sender_with(600, random.Random(seed)), sender_with(600, random.Random(seed))
        got: set[int] = set()
        cumulative = 0
        history: list[tuple[int, tuple[tuple[int, int], ...]]] = []
        for _ in range(120):
            got.update(rng.sample(range(600), 12))
            while cumulative in got:
                cumulative += 1
            runs: list[tuple[int, int]] = []
            seq = cumulative
            while seq < 600 and len(runs) < 32:
                while seq < 600 and seq not in got:
                    seq += 1
                start = seq
                while seq < 600 and seq in got:
                    seq += 1
                if seq > start:
                    runs.append((start, seq))
            ack = (cumulative, tuple(runs))
            history.append(ack)
            if rng.random() < 0.2:
                ack = rng.choice(history)  # a reordered, older ACK
            bound = rng.uniform(0.0, 0.9)  # the ACK's `ambiguous_after`
            assert new.on_ack(*ack, ambiguous_after=bound) == full_walk(ref, *ack, bound)
            assert new.frames.keys() == ref.frames.keys()
            assert new._sacked == ref._sacked
            assert (new.rack_sent_at, new.largest_acked, new.acked_below) == (
                ref.rack_sent_at,
                ref.largest_acked,
                ref.acked_below,
            )
