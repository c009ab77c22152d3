"""The per-path DATA loss figure (`inbound.loss`, reported back as the peer's `outbound.loss`;
`dupsession status`'s loss columns): of the copies put on a path between two of its ACKs, the
fraction that never arrived there.

The sender's `data sent` counts every copy, a resend on the same path too; the receiver's
`data_recv` takes a frame once per path (a replayed copy must not inflate the count the
congestion controller trusts). Compared alone, a resend on a path whose first copy had arrived
there read as a loss: a path that lost nothing showed loss whenever frames were resent on it
because another path lost them, or because an ACK came late.
"""

from __future__ import annotations

from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from tests.support.session import Out, Pair, data_frames, drain

STEP = 0.01  #: one-way delay (s)


def _resend(pair: Pair, now: float) -> tuple[float, Out]:
    """Run the client's timers, nothing coming back, until it sends DATA again: its resends."""
    client = pair.client
    while True:
        now = max(now, client.get_timer() or now)
        client.handle_timer(now)
        out = client.transmit(now)
        if data_frames(out, None):
            return now, out


def _settle(pair: Pair, now: float) -> None:
    """Everything both ways, nothing lost, until both sides have reported on every path."""
    pair.exchange(now, rounds=200, step=STEP)
    drain(pair.client)
    drain(pair.exit)


def _arrived(pair: Pair, path_id: int) -> int:
    path = pair.exit.paths[path_id]
    return path.data_recv + path.repeats_recv


def test_a_resend_that_arrives_on_the_path_that_had_delivered_it_is_no_loss() -> None:
    """Every copy arrives; the exit's ACKs of the first copies are lost, so the client resends
    them on the same path. Before: 4 of the 8 copies counted lost (inbound loss 1/16 * 1/2)."""
    pair = Pair(paths=1)
    now = pair.connect()
    pair.client.send(bytes(4 * 1100))
    first = pair.client.transmit(now)
    assert len(data_frames(first)) == 4
    pair.deliver(pair.exit, first, now + STEP)
    pair.exit.transmit(now + STEP)  # its ACKs: lost
    now, again = _resend(pair, now)
    assert len(data_frames(again)) == 4  # the same four frames, on the same path
    pair.deliver(pair.exit, again, now + STEP)
    _settle(pair, now + STEP)
    assert pair.client.paths[0].data_sent == 8
    assert (pair.exit.paths[0].data_recv, pair.exit.paths[0].repeats_recv) == (4, 4)
    assert pair.exit.paths[0].inbound.loss == 0.0
    assert pair.client.paths[0].outbound.loss == 0.0  # what `status` shows as loss up


def test_a_copy_lost_on_the_path_counts_even_when_its_resend_arrives_there() -> None:
    """Two of four first copies lost, all four resent on the same path and arriving: 2 of the
    8 copies never arrived. Counting distinct frames instead would read no loss at all, which
    on a single lossy path (every resend on it) hides the path's loss."""
    pair = Pair(paths=1)
    now = pair.connect()
    pair.client.send(bytes(4 * 1100))
    frames = data_frames(pair.client.transmit(now))
    for frame in frames[0::2]:  # frames 1 and 3 lost
        pair.exit.receive_frame(frame, now + STEP, 0)
    pair.exit.transmit(now + STEP)  # its ACKs: lost
    now, again = _resend(pair, now)
    pair.deliver(pair.exit, again, now + STEP)
    _settle(pair, now + STEP)
    sent = pair.client.paths[0].data_sent
    assert sent - _arrived(pair, 0) == 2
    loss = pair.exit.paths[0].inbound.loss
    assert 0 < loss <= 2 / sent
    assert pair.client.paths[0].outbound.loss == round(loss * 10000) / 10000


def test_a_clean_path_shows_no_loss_for_resends_of_another_paths_losses() -> None:
    """`redundant`: every frame on both paths; path 1 loses the first copies, so the frames are
    resent on both. Path 0 lost nothing and must show nothing (before: the same loss as path 1,
    which lost half its copies); path 1's loss is its own."""
    pair = Pair(paths=2, features=Features(schedule=Schedule(policy=Policy.REDUNDANT)))
    now = pair.connect()
    pair.client.send(bytes(4 * 1100))
    first = pair.client.transmit(now)
    assert len(data_frames(first, 0)) == len(data_frames(first, 1)) == 4
    lost = set(data_frames(first, 1))
    pair.deliver(pair.exit, {0: first[0], 1: [f for f in first[1] if f not in lost]}, now + STEP)
    pair.exit.transmit(now + STEP)  # its ACKs: lost
    now, again = _resend(pair, now)
    assert set(data_frames(again, 0)) & set(data_frames(again, 1))  # resent on both paths
    pair.deliver(pair.exit, again, now + STEP)
    _settle(pair, now + STEP)
    sent = [pair.client.paths[p].data_sent for p in (0, 1)]
    assert sent[0] > 4
    assert [sent[p] - _arrived(pair, p) for p in (0, 1)] == [0, 4]
    assert pair.exit.paths[0].inbound.loss == 0.0
    assert pair.client.paths[0].outbound.loss == 0.0
    assert pair.exit.paths[1].inbound.loss > 0
