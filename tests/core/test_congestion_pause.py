"""A paused peer and a datagram path's controller (`ModelRate`), with hand-held time.

A paused receiver drops what passes its window's bytes unacked (review H1) and goes silent
until its consumer resumes; the ACK that reopens its window is the sender's cue to resend what
the pause dropped, at once and not backed off (3374f29). Those drops are the receiver's, not
the network's: they must not read as loss, and the silence must not read as the path's rate.
"""

from __future__ import annotations

from dupsession.core.congestion import ModelRate
from dupsession.core.session import SessionConfig
from tests.core.test_congestion import cruising
from tests.core.test_receive_bound import STEP, _exchange
from tests.support.session import Pair

WINDOW = SessionConfig(window_bytes=1 << 16, window_frames=1024)  #: drops past 64 KiB


def _paused_upload(pause: float) -> tuple[Pair, ModelRate, float]:
    """192 KiB sent into an exit whose consumer pauses for `pause` s; returns the pair, the
    client's controller and the time of the resume (its window reopened, nothing sent yet)."""
    pair = Pair(paths=1, datagram=True, exit=WINDOW)
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    c.send(bytes(i % 253 for i in range(3 << 16)))
    end = now + pause
    while now < end:
        _, now = _exchange(pair, now)
    assert e.stale_frames > 0  # the pause dropped frames past window_bytes
    e.pause_receiving(False)
    cc = c.paths[0].cc
    assert isinstance(cc, ModelRate)
    return pair, cc, now


def _finish(pair: Pair, now: float) -> None:
    got = 0
    while pair.client.sender.frames and got < 400:
        _, now = _exchange(pair, now)
        got += 1
    assert not pair.client.sender.frames, "every frame acknowledged"


def test_what_a_long_pause_dropped_is_no_loss() -> None:
    """A 2 s pause: the peer goes silent once it drops, and its next ACK echoes past every
    frame it dropped. Counted as a round's loss, the estimate read 0.068 here (and 0.125 after
    one round of a 40 Mbit/s download, pacing 14 % over the link after the resume). What an
    ACK after a silence shows lost is left out (`ModelRate._after_silence`)."""
    pair, cc, now = _paused_upload(2.0)
    assert cc.loss_rate == 0.0
    _finish(pair, now)
    assert cc.loss_rate == 0.0


def test_what_a_short_pause_dropped_is_no_loss() -> None:
    """A 0.15 s pause: the ACK that reopens the window comes before the silence would count
    (3 RTTs, at least 0.2 s), and its echo shows the drops (0.065 read as loss). The session
    tells each path's controller the window reopened (`on_peer_resumed`) before the ACK's
    echo is applied."""
    pair, cc, now = _paused_upload(0.15)
    _finish(pair, now)
    assert pair.exit.stale_frames > 0
    assert cc.loss_rate == 0.0


def test_a_silence_is_not_taken_for_the_paths_rate() -> None:
    """A path delivering 100 frames/s goes silent for a second (a paused peer, an outage) and
    then delivers as before: a delivery-rate sample spanning the silence read ~1 frame/s,
    and with the window's older samples expired the estimate fell to it (a 2.2 s pause of a
    40 Mbit/s download: 2.6 Mbit/s after the resume, 3.1 MB in its first second, not 4.7).
    The sample starts afresh at the first ACK after the silence."""
    cc = cruising(now=1.0, rate=100.0, min_rtt=0.05)
    delivered, now = 0, 1.0
    for end in (2.0, 3.2):
        while now < end:
            now += 0.01
            delivered += 1
            cc.on_sent(now, 1)
            cc.on_ack(now, data_recv=delivered, rtt=0.05, srtt=0.05, sent_by_echo=delivered)
            assert not cc.app_limited
            assert cc.btl_bw >= 95, (now, cc.btl_bw)
        now += 1.0  # silence (the sender still had frames to send)


def test_the_reopening_acks_resends_are_not_backed_off() -> None:
    """The peer answers again, so the frames the reopening ACK finds dropped go with their
    base resend timeout, not the backed-off one of the probes that went unanswered during the
    pause (review I2's `noprogress`: the ACK moves no cumulative point, so without
    `progress_at` set by the reopen every one of them was backed off)."""
    pair, _, now = _paused_upload(1.0)
    c = pair.client
    pair.deliver(c, pair.exit.transmit(now), now + STEP)  # the ACK that reopens the window
    now += STEP
    out = c.transmit(now)
    resent = [f for f in c.sender.frames.values() if f.sent_at == now and f.sends > 1]
    assert len(resent) > 10 and out
    assert all(f.backoff == 0 and f.deadline == now + c.rto() for f in resent), [
        (f.seq, f.backoff) for f in resent if f.backoff
    ]
