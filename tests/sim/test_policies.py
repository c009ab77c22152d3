"""Scheduling policies and tiers in the simulator, on hand-held virtual time.

Each test records every DATA copy the client puts on each path (time, frame number) by
wrapping the simulator's links, so it can say which path carried which frame and when.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import pytest

from dupsession.core import wire
from dupsession.core.negotiate import Features
from dupsession.core.paths import Path
from dupsession.core.policy import Policy, Schedule, Tier
from dupsession.core.sender import Sender
from dupsession.core.session import SessionConfig
from dupsession.core.stripe import Stripe
from tests.sim.network import START, LinkSpec, PathSpec, Simulation
from tests.support.controllers import Window

FAST = LinkSpec(delay=0.005)
SLOW = LinkSpec(delay=0.02)


#: Give each path a 24-frame window (see `Window`).
CAPPED = 24

Copies = dict[int, list[tuple[float, int]]]


def run(
    paths: Sequence[PathSpec],
    schedule: Schedule,
    client_writes: Sequence[bytes | tuple[float, bytes]],
    window: int | None = None,
    until: float = 60.0,
    seed: int = 1,
) -> tuple[Simulation, Copies]:
    sim = Simulation(
        paths,
        seed,
        client_writes,
        features=Features(schedule=schedule),
    )
    if window is not None:
        for side in (sim.client, sim.exit):
            for path in side.session.paths.values():
                path.cc = Window(window)
    copies: Copies = {pid: [] for pid in range(len(paths))}
    for pid in copies:
        link = sim.links["client", pid]
        send = link.send

        def record(frame: bytes, now: float, pid: int = pid, send=send):  # type: ignore[no-untyped-def]
            if frame[1] == wire.FrameType.DATA:
                copies[pid].append((now - START, struct.unpack_from("!Q", frame, 12)[0]))
            return send(frame, now)

        link.send = record  # type: ignore[method-assign]
    result = sim.run(until)
    sent = b"".join(w if isinstance(w, bytes) else w[1] for w in client_writes)
    assert result.exit.received == sent, result.describe()  # exact, nothing delivered twice
    return sim, copies


def bulk(size: int, seed: int = 7) -> list[bytes]:
    return [random.Random(seed).randbytes(size)]


def keystrokes(count: int, every: float = 0.05, start: float = 0.2) -> list[tuple[float, bytes]]:
    return [(start + i * every, b"k") for i in range(count)]


def seqs(copies: list[tuple[float, int]], after: float = 0.0) -> set[int]:
    return {seq for at, seq in copies if at >= after}


def test_redundant_puts_every_frame_on_every_path() -> None:
    # a window wide enough for the whole transfer: with the session's own controller the slow
    # path would rightly skip frames the fast one got acknowledged before its budget refilled
    _, copies = run(
        [PathSpec(FAST, FAST), PathSpec(SLOW, SLOW)], Schedule(), bulk(60_000), window=4096
    )
    assert seqs(copies[0]) == seqs(copies[1]) == set(range(len(seqs(copies[0]))))


def test_stripe_sends_each_frame_once_and_the_tail_on_the_fast_path() -> None:
    _, copies = run(
        [PathSpec(FAST, FAST), PathSpec(SLOW, SLOW)], Schedule(Policy.STRIPE), bulk(600_000), CAPPED
    )
    fast, slow = seqs(copies[0]), seqs(copies[1])
    total = len(fast | slow)
    assert fast and slow  # both paths carry the transfer
    # nearly every frame went once: only re-injections and resends are copies
    assert len(copies[0]) + len(copies[1]) <= total * 1.05
    # the last frames (ECF: the slow path idles when the fast one will deliver sooner)
    last = max(fast | slow)
    assert {last, last - 1, last - 2} <= fast
    assert max(slow) < last - 5


def test_stripe_keystrokes_go_on_the_fast_path_alone() -> None:
    _, copies = run(
        [PathSpec(SLOW, SLOW), PathSpec(FAST, FAST)], Schedule(Policy.STRIPE), keystrokes(20)
    )
    assert len(seqs(copies[1])) >= 20
    assert not copies[0]


def test_auto_duplicates_keystrokes_and_stripes_a_transfer() -> None:
    paths = [PathSpec(FAST, FAST), PathSpec(SLOW, SLOW)]
    _, copies = run(paths, Schedule(Policy.AUTO), keystrokes(20), CAPPED)
    assert seqs(copies[0]) == seqs(copies[1])  # idle paths: every keystroke on both
    _, copies = run(paths, Schedule(Policy.AUTO), bulk(600_000), CAPPED)
    both = seqs(copies[0]) & seqs(copies[1])
    assert len(both) < 0.3 * len(seqs(copies[0]) | seqs(copies[1]))  # saturated: mostly once


def test_stripe_resends_frames_late_on_a_blacked_out_path_on_the_fast_one() -> None:
    dark = LinkSpec(delay=0.02, outages=((0.1, 30.0),))
    sim, copies = run(
        [PathSpec(FAST, FAST), PathSpec(dark, SLOW)], Schedule(Policy.STRIPE), bulk(600_000), CAPPED
    )
    scheduler, sender = sim.client.session.scheduler, sim.client.session.sender
    # by deadline re-injection or by RACK, whichever sees it first; never by a backed-off timer
    assert isinstance(scheduler, Stripe) and scheduler.reinjections + sender.retransmissions > 0
    lost_on_slow = seqs(copies[1], after=0.1)
    assert lost_on_slow and lost_on_slow <= seqs(copies[0])  # each went again on the fast path
    # the transfer does not wait for the dark path's 30 s outage, nor for backed-off timers
    assert sim.exit.closed_at is not None and sim.exit.closed_at < 0.5


def test_stripe_tail_goes_again_on_the_fast_path_rather_than_wait_for_the_slow_one() -> None:
    slow = LinkSpec(delay=0.03, jitter=0.4)  # late, not lost: up to 430 ms one way
    sim, copies = run(
        [PathSpec(FAST, FAST), PathSpec(slow, SLOW)], Schedule(Policy.STRIPE), bulk(300_000), CAPPED
    )
    assert seqs(copies[1]) & seqs(copies[0])  # the late ones went again on the fast path
    assert sim.exit.closed_at is not None and sim.exit.closed_at < 0.25


def fast_and_slow(frames: int) -> tuple[Sender, Path, Path]:
    """Hand-held scheduling: a sender with `frames` frames cut, a 20 ms and an 80 ms path."""
    sender = Sender(1 << 24)
    sender.push(bytes(frames * 1196))
    sender.make_frames(1196, lambda seq, chunk, fin: seq.to_bytes(28, "big") + chunk)
    fast, slow = Path(0, datagram=True), Path(1, datagram=True)
    fast.rtt.add(0.02)
    slow.rtt.add(0.08)
    return sender, fast, slow


def test_stripe_reinjects_a_single_copy_once_its_ack_is_overdue() -> None:
    """Hand-held time, the scheduler alone: frames on the slow path whose ACK is overdue
    (srtt + 2 rttvar of that path) go once more on the fast path when it has room."""
    sender, fast, slow = fast_and_slow(200)
    fast.cc, slow.cc = Window(4), Window(10)
    stripe = Stripe()
    out = stripe.schedule(0.0, [fast, slow], sender, [], 0.05)
    assert len(out[0]) == 4 and len(out[1]) == 10  # a long queue: the slow path helps
    on_slow = out[1]
    fast.note_delivery(4)  # the peer reports the fast path's copies (its ACKs were lost)
    out = stripe.schedule(0.1, [fast, slow], sender, [], 0.05)
    assert stripe.reinjections == 0  # 0.1 s: not yet overdue (0.08 + 2 x 0.04 + slack)
    fast.note_delivery(8)
    out = stripe.schedule(0.17, [fast, slow], sender, [], 0.05)
    assert stripe.reinjections == 4 and out[0] == on_slow[:4]  # the fast path's whole room
    fast.note_delivery(12)
    out = stripe.schedule(0.25, [fast, slow], sender, [], 0.05)
    assert out[0][:4] != on_slow[:4]  # each only once


def test_best_k_uses_the_k_best_paths_and_replaces_a_degraded_one_within_a_second() -> None:
    dark = LinkSpec(delay=0.004, outages=((2.0, 60.0),))
    paths = [PathSpec(dark, dark), PathSpec(FAST, FAST), PathSpec(LinkSpec(delay=0.03), SLOW)]
    _, copies = run(paths, Schedule(Policy.BEST_K, best_k=2), keystrokes(80))
    before = [len([1 for at, _ in copies[p] if 0.2 <= at < 2.0]) for p in range(3)]
    assert before[0] >= 30 and before[1] >= 30  # the two best carry every keystroke
    assert before[2] <= 10  # the third: a probe copy now and then
    took_over = min(at for at, _ in copies[2] if at >= 2.0 and _ > 0)
    carried = [at for at, _ in copies[2] if 2.0 <= at < 3.0]
    assert len(carried) >= 10 and took_over < 3.0, took_over


def test_backup_stays_silent_then_takes_over_within_a_second() -> None:
    dark = LinkSpec(delay=0.01, outages=((2.0, 60.0),))
    backup = LinkSpec(delay=0.05)
    schedule = Schedule(Policy.AUTO, tiers=((1, Tier.BACKUP),))
    sim, copies = run([PathSpec(dark, dark), PathSpec(backup, backup)], schedule, keystrokes(80))
    assert not [at for at, _ in copies[1] if at < 2.0]  # no data while the primary is up
    first = min(at for at, _ in copies[1])
    assert 2.0 < first < 3.0, first
    assert sim.client.session.snapshot(sim.now).paths[1].tier == "backup"
    # while the primary is up the backup carries probes only: a few hundred bytes/s each way
    sim, _ = run([PathSpec(FAST, FAST), PathSpec(backup, backup)], schedule, keystrokes(30))
    for side in (sim.client, sim.exit):
        path = side.session.paths[1]
        assert path.data_sent == 0
        assert path.bytes_sent / sim.result().end < 400, path.bytes_sent


def test_overflow_carries_data_only_when_the_primary_is_saturated() -> None:
    schedule = Schedule(Policy.STRIPE, tiers=((1, Tier.OVERFLOW),))
    paths = [PathSpec(FAST, FAST), PathSpec(FAST, FAST)]
    _, copies = run(paths, schedule, keystrokes(20), CAPPED)
    assert not copies[1]
    _, copies = run(paths, schedule, bulk(600_000), CAPPED)
    assert copies[1]  # the transfer saturates the primary's budget
    overflow = seqs(copies[1])
    assert len(overflow & seqs(copies[0])) <= 0.05 * len(overflow)  # single copies, bar resends


def test_redundant_with_an_overflow_path_does_not_spin_after_an_outage() -> None:
    """Regression (found by the policy property): after every path was down, the exit held lost
    frames for resend while the overflow path's pacing time lay in the past; the timer woke for
    that path, the policy never sent the resends there, and the timer fired again at once (a
    busy loop at 100 % CPU on a real exit). The simulator raises LivelockError on that."""
    link = LinkSpec(delay=0.125, outages=((1.0, 3.0),))
    fast = LinkSpec(delay=0.0625, outages=((1.0, 3.0),))
    paths = [PathSpec(up=link, down=link), PathSpec(up=fast, down=link)]
    paths.append(PathSpec(up=fast, down=link))
    for tier in (Tier.OVERFLOW, Tier.BACKUP):
        payload = b"\x00" + random.Random(0).randbytes(1197)
        config = SessionConfig(grace_period=40.0)
        sim = Simulation(
            paths,
            0,
            [],
            [(0.0, payload[:1]), (1.0, payload[1:])],
            client_config=config,
            exit_config=config,
            features=Features(schedule=Schedule(Policy.REDUNDANT, 1, ((2, tier),))),
        )
        result = sim.run(3600.0)
        assert result.client.received == payload, tier


def test_auto_resends_a_keystroke_lost_on_every_path_without_waiting_for_the_slow_path() -> None:
    """Both copies of a keystroke lost (an outage on both routes at that instant): the next
    keystroke's ACK finds it lost at once. It went first on the fast path, so the reorder
    window is not widened by the slow path's delay (auto's copies are not stripe's single
    copies); widened by it (~110 ms), the resend left at 0.599 s instead of 0.52."""
    fast = LinkSpec(delay=0.005, outages=((0.495, 0.505),))
    slow = LinkSpec(delay=0.06, outages=((0.495, 0.505),))
    keys = keystrokes(10, every=0.01, start=0.5)
    sim, copies = run([PathSpec(fast, FAST), PathSpec(slow, SLOW)], Schedule(Policy.AUTO), keys)
    first = [at for at, seq in copies[0] if seq == 0]
    assert first[0] == pytest.approx(0.5) and len(first) == 2
    # the next keystroke left at 0.51, reached the exit 5 ms later, its ACK came back within
    # the exit's ACK delay + 5 ms: the resend follows that ACK
    assert 0.52 <= first[1] <= 0.527, first
    scheduler = sim.client.session.scheduler
    assert isinstance(scheduler, Stripe) and scheduler.reorder_spread < 0.01


def test_stripe_tells_a_paths_controller_which_frames_it_carried_before() -> None:
    """A resend on the path that carried the frame is a repeat there: the peer counts a frame
    once per path, and the controller's loss measure leaves repeats out (core/congestion.py)."""
    sender, fast, slow = fast_and_slow(20)
    fast.cc, slow.cc = Recording(10), Recording(10)
    stripe = Stripe()
    out = stripe.schedule(0.0, [fast, slow], sender, [], 0.05)
    assert len(out[0]) == 10 and fast.cc.repeats == [0]
    first = sender.frames[0]  # sent on the fast path; it is lost and resent there
    first.armed = False
    out = stripe.schedule(0.03, [fast, slow], sender, [first], 0.05)
    assert out[0][0] == first.frame and fast.cc.repeats[-1] == 1


class Recording(Window):
    """A `Window` that keeps the repeats each send reported."""

    def __init__(self, frames: int) -> None:
        super().__init__(frames)
        self.repeats: list[int] = []

    def on_sent(self, now: float, count: int, repeats: int = 0) -> None:
        super().on_sent(now, count, repeats)
        self.repeats.append(repeats)
