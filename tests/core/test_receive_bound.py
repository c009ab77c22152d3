"""Review H1: a paused consumer takes at most `window_bytes` past the pause, in order too.

The frozen window spans `window_frames` frames, and a stream-path frame carries up to 16 KiB
(65 499 bytes with JUMBO): bounded in frames only, relayd's window (7013 frames) let 110 MiB
(438 MiB with JUMBO) through to a target that had stopped reading. In-order frames past the
byte bound are dropped unacked, like frames beyond the window, and resent once it reopens.
"""

from __future__ import annotations

import pytest

from dupsession.core import wire
from dupsession.core.events import StreamData
from dupsession.core.negotiate import Features
from dupsession.core.session import Session, SessionConfig
from tests.support.session import T0, Pair, drain

BUDGET = 1 << 20


def _taken(session: Session) -> bytes:
    return b"".join(ev.data for ev in drain(session) if isinstance(ev, StreamData))


def _frames(pair: Pair, count: int, size: int) -> tuple[list[bytes], bytes]:
    """Frames 0..count-1 of `size`-byte payloads as the client would cut them, and the stream."""
    key, sid = pair.keys.client_to_exit, pair.client.session_id
    payloads = [bytes([seq % 251]) * size for seq in range(count)]
    frames = [wire.encode_data(key, sid, seq, p, False) for seq, p in enumerate(payloads)]
    return frames, b"".join(payloads)


@pytest.mark.parametrize("jumbo", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_a_paused_consumer_takes_at_most_window_bytes_in_order(jumbo: bool, batched: bool) -> None:
    """Max-size frames up to the frozen window's end: at most `window_bytes` (plus one frame)
    reach the paused consumer, one frame at a time or as one read's run; after the resume the
    resent frames complete the stream, every byte once and in order."""
    size = wire.MAX_JUMBO_PAYLOAD if jumbo else wire.MAX_STREAM_PAYLOAD
    config = SessionConfig(window_bytes=BUDGET, window_frames=1024)
    pair = Pair(paths=0, exit=config, features=Features(jumbo=jumbo))
    e = pair.exit
    e.add_path(0, False, T0)
    e.pause_receiving(True)
    frames, stream = _frames(pair, e.receiver.advertised_end + 4, size)
    assert len(stream) > 10 * BUDGET  # the frame window alone would let all of it in
    if batched:
        e.receive_frames(frames, T0 + 0.01, 0)
    else:
        for frame in frames:
            e.receive_frame(frame, T0 + 0.01, 0)
            e.pause_receiving(True)  # paused again (another pause_writing): not a new count
    got = _taken(e)
    assert BUDGET - size < len(got) <= BUDGET + size
    assert got == stream[: len(got)]
    assert e.stale_frames > 0  # dropped unacked: the sender still holds them
    e.pause_receiving(False)
    frames_left = frames[e.receiver.cumulative :]  # the sender resends what is unacked
    if batched:
        e.receive_frames(frames_left, T0 + 0.02, 0)
    else:
        for frame in frames_left:
            e.receive_frame(frame, T0 + 0.02, 0)
    assert got + _taken(e) == stream


def _upload_step(pair: Pair, stream: bytes, sent: int, now: float) -> tuple[int, float]:
    """The client writes what it may of the rest of `stream`, then both ends exchange."""
    c = pair.client
    while sent < len(stream) and (room := c.writable()) > 0:
        c.send(stream[sent : sent + room])
        sent += min(room, len(stream) - sent)
    now = pair.exchange(now, rounds=2, step=0.001)
    drain(c)
    return sent, now


@pytest.mark.parametrize("jumbo", [False, True])
def test_an_honest_upload_into_a_paused_consumer_stops_at_window_bytes_and_completes(
    jumbo: bool,
) -> None:
    """A real client writing whenever writable into an exit whose consumer paused: the exit
    takes at most `window_bytes` past the pause; once it resumes, the client's resends bring
    the rest, every byte once and in order."""
    config = SessionConfig(window_bytes=BUDGET, window_frames=1024)
    pair = Pair(paths=1, datagram=False, client=config, exit=config, features=Features(jumbo=jumbo))
    e = pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    stream = bytes(i % 253 for i in range(6 * BUDGET))
    sent, got = 0, b""
    for _ in range(400):
        sent, now = _upload_step(pair, stream, sent, now)
        got += _taken(e)
    size = wire.MAX_JUMBO_PAYLOAD if jumbo else wire.MAX_STREAM_PAYLOAD
    assert len(got) <= BUDGET + size
    assert got == stream[: len(got)]
    e.pause_receiving(False)
    for _ in range(4000):
        sent, now = _upload_step(pair, stream, sent, now)
        got += _taken(e)
        if len(got) == len(stream):
            break
    assert got == stream


STEP = 0.005  #: one-way delay of `Pair.exchange` here: a round trip of one to two steps


def _exchange(pair: Pair, now: float, rounds: int = 1) -> tuple[bytes, float]:
    now = pair.exchange(now, rounds=rounds, step=STEP)
    drain(pair.client)
    return _taken(pair.exit), now


@pytest.mark.parametrize("datagram", [True, False])
def test_the_ack_that_reopens_the_window_brings_the_dropped_frames_within_a_round_trip(
    datagram: bool,
) -> None:
    """What a paused exit dropped past `window_bytes` is resent as its consumer resumes: the
    ACK that reopens the window makes the client resend every frame it leaves unacknowledged
    though sent a round trip before, and the stream completes a few round trips after the
    resume. Before, those frames waited for their probe timeout, backed off during the pause
    (the resume here comes just after a probe): 0.155 s on a stream path, 0.055 s on a
    datagram path, against 0.010 and 0.020 s now. Nothing is sent twice to the exit."""
    config = SessionConfig(window_bytes=1 << 16, window_frames=1024)
    pair = Pair(paths=1, datagram=datagram, exit=config)
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    stream = bytes(i % 253 for i in range(3 << 16))
    c.send(stream)
    got = b""
    for _ in range(200):  # a second: the client's probes back off
        more, now = _exchange(pair, now)
        got += more
    probes = c.sender.retransmissions
    while c.sender.retransmissions == probes:  # until a probe went out...
        more, now = _exchange(pair, now)
        got += more
    more, now = _exchange(pair, now, rounds=2)  # ...and was refused
    got += more
    assert len(got) <= (1 << 16) + wire.MAX_STREAM_PAYLOAD
    assert e.stale_frames > 0
    unacked, resent = len(c.sender.frames), c.sender.retransmissions
    e.pause_receiving(False)
    resumed = now
    while len(got) < len(stream) and now < resumed + 1:
        more, now = _exchange(pair, now)
        got += more
    assert got == stream
    assert now - resumed <= 5 * STEP
    assert e.duplicates == 0
    assert c.sender.retransmissions - resent <= unacked


def test_the_reopening_ack_queues_its_resends_lowest_first() -> None:
    """Review I2: the frames the reopening ACK finds dropped join what already waits for a
    resend (here the last frame, as RACK on another path or the scheduler's want of budget
    leaves one), and the resends leave lowest first: the peer delivers in order, so a frame
    above the dropped ones sent ahead of them is held, not taken."""
    config = SessionConfig(window_bytes=1 << 16, window_frames=1024)
    pair = Pair(paths=1, datagram=True, exit=config)
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    c.send(bytes(i % 253 for i in range(3 << 16)))
    for _ in range(200):  # the pause drops what passes window_bytes; the probes back off
        _, now = _exchange(pair, now)
    assert e.stale_frames > 0
    last = c.sender.frames[max(c.sender.frames)]
    last.armed = False  # queued for a resend, left waiting
    c.recovery.keep_waiting([last])
    e.pause_receiving(False)
    pair.deliver(c, e.transmit(now), now + STEP)  # the ACK that reopens the window
    resend = [f.seq for f in c.recovery.take_resends(c.sender)]
    assert len(resend) > 1
    assert resend == sorted(resend)


@pytest.mark.parametrize("datagram", [True, False])
def test_a_short_pause_that_dropped_nothing_resends_nothing(datagram: bool) -> None:
    """A pause shorter than what the window lets through drops nothing: the ACK that reopens
    the window finds every frame acknowledged or sent within the last round trip, and no
    frame goes twice."""
    pair = Pair(paths=1, datagram=datagram)
    c, e = pair.client, pair.exit
    now = pair.connect()
    stream = bytes(i % 253 for i in range(200_000))
    c.send(stream)
    got = b""
    for step in range(60):
        e.pause_receiving(step % 3 == 0)  # a pause every third round, one round long
        more, now = _exchange(pair, now)
        got += more
    e.pause_receiving(False)
    more, now = _exchange(pair, now, rounds=20)
    assert got + more == stream
    assert e.stale_frames == 0
    assert c.sender.retransmissions == 0
    assert e.duplicates == 0
