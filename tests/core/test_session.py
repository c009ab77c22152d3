"""The session core with hand-held time (aioquic style): two sessions, frames moved by hand.

Every time here is explicit; timers are asserted to the microsecond where the core promises an
exact value (RTO after an RTT sample, path timeout, grace period).
"""

from __future__ import annotations

import itertools

import pytest

from dupsession.core import wire
from dupsession.core.errors import LocalProtocolError
from dupsession.core.events import (
    PathDown,
    PathUp,
    SessionClosed,
    StreamData,
    StreamEnded,
)
from dupsession.core.handshake import ClientHandshake
from dupsession.core.negotiate import Features
from dupsession.core.paths import EWMA_GAIN, PathState
from dupsession.core.session import SessionConfig, SessionState
from tests.support.session import (
    PSK,
    T0,
    Pair,
    data_frames,
    drain,
    kinds,
    run_timers,
)

# --- first contact, RTT and the resend timer ---------------------------------------------------


def test_first_transmit_probes_every_path_and_contact_raises_path_up() -> None:
    pair = Pair(paths=3)
    out = pair.client.transmit(T0)
    assert sorted(out) == [0, 1, 2]
    assert all(kinds(frames) == [wire.FrameType.ACK] for frames in out.values())
    pair.deliver(pair.exit, out, T0 + 0.01)
    assert drain(pair.exit) == [PathUp(0), PathUp(1), PathUp(2)]
    assert all(p.state is PathState.UP for p in pair.exit.paths.values())
    assert all(p.state is PathState.PROBING for p in pair.client.paths.values())


def test_rto_before_any_sample_is_half_the_maximum() -> None:
    cfg = SessionConfig()
    assert Pair().client.rto() == pytest.approx(cfg.max_rto / 2 + cfg.ack_delay)


def test_exact_rto_after_rtt_samples() -> None:
    pair = Pair()
    c, e = pair.client, pair.exit
    heard = pair.connect(T0, delay=0.05)  # one sample: 0.1 s
    rtt = c.paths[0].rtt
    assert rtt.samples == 1
    assert rtt.srtt == pytest.approx(0.1, abs=1e-6)
    assert rtt.rttvar == pytest.approx(0.05, abs=1e-6)
    # RFC 6298: srtt + 4 * rttvar, plus the peer's ACK delay; the variance term at most one
    # srtt (RACK-TLP's 2 * SRTT probe timeout), which it is while rttvar is still RTT / 2
    assert c.rto() == pytest.approx(0.1 + min(4 * 0.05, 0.1) + 0.004, abs=1e-6)

    # second sample, 0.2 s: the exit holds the probe 10 ms, and that hold is subtracted
    probe_at = T0 + 0.5
    assert heard < probe_at
    pair.deliver(e, c.transmit(probe_at), probe_at + 0.09)
    pair.deliver(c, e.transmit(probe_at + 0.1), probe_at + 0.21)
    assert rtt.samples == 2
    assert rtt.latest == pytest.approx(0.2, abs=1e-6)
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2, abs=1e-6)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1, abs=1e-6)
    rto = c.rto()  # timestamps travel in whole microseconds: exact to a few of them
    assert rto == pytest.approx(0.1125 + min(4 * 0.0625, 0.1125) + 0.004, abs=1e-5)

    # the resend deadline of a new frame is exactly now + rto, and is the next timer
    now = probe_at + 0.21
    c.send(b"keystroke")
    first = data_frames(c.transmit(now))
    assert len(first) == 1
    assert c.get_timer() == pytest.approx(now + rto, abs=1e-9)
    c.handle_timer(now + rto - 1e-6)
    assert data_frames(c.transmit(now + rto - 1e-6)) == []  # not a microsecond early
    c.handle_timer(now + rto)
    # byte-identical resend; a probe goes twice on a single path (core/recovery.py)
    assert data_frames(c.transmit(now + rto)) == first * 2
    assert c.sender.retransmissions == 1
    # the second timeout doubles (no ACK made progress), still under `max_backoff` here (the
    # cap: test_recovery.py's backoff test)
    assert 2 * rto < c.config.max_backoff
    assert c.sender.next_deadline() == pytest.approx(now + rto + 2 * rto, abs=1e-9)


def test_resend_timer_follows_the_best_path_not_the_worst() -> None:
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    out = c.transmit(T0)
    pair.deliver(e, out, T0 + 0.01, paths=[0])  # fast path: 10 ms each way
    pair.deliver(c, e.transmit(T0 + 0.01), T0 + 0.02, paths=[0])
    pair.deliver(e, out, T0 + 0.5, paths=[1])  # slow path: 500 ms each way
    pair.deliver(c, e.transmit(T0 + 0.51), T0 + 1.01, paths=[1])
    fast, slow = c.paths[0].rtt, c.paths[1].rtt
    assert fast.srtt == pytest.approx(0.02, abs=1e-6)
    assert slow.srtt == pytest.approx(1.0, abs=1e-6)
    best = 0.02 + min(4 * 0.01, 0.02) + 0.004  # the variance term at most one srtt
    assert c.rto() == pytest.approx(best, abs=1e-6)
    now = T0 + 1.02
    c.send(b"x")
    out = c.transmit(now)
    assert data_frames(out, 0) == data_frames(out, 1) != []  # redundant: on both paths
    assert c.sender.next_deadline() == pytest.approx(now + best, abs=1e-9)
    # with the fast path down, the slow one rules (capped at max_rto)
    c.paths[0].state = PathState.DOWN
    assert c.rto() == pytest.approx(c.config.max_rto)


# --- paths dying and coming back -------------------------------------------------------------


def test_path_down_exactly_after_path_timeout() -> None:
    pair = Pair(client=SessionConfig(path_timeout=2.0, probe_interval=0.5))
    heard = pair.connect()
    seen = run_timers(pair.client, heard, heard + 10)
    downs = [(t, ev) for t, ev in seen if isinstance(ev, PathDown)]
    assert downs == [(pytest.approx(heard + 2.0, abs=1e-9), PathDown(0))]
    assert pair.client.state is SessionState.RESUMING
    assert pair.client.paths[0].state is PathState.DOWN


def test_path_timeout_is_at_least_three_probe_intervals() -> None:
    pair = Pair(client=SessionConfig(path_timeout=0.1, probe_interval=0.5))
    heard = pair.connect()
    downs = [t for t, ev in run_timers(pair.client, heard, heard + 5) if isinstance(ev, PathDown)]
    assert downs == [pytest.approx(heard + 1.5, abs=1e-9)]


def test_down_path_keeps_probing_every_interval() -> None:
    pair = Pair()
    heard = pair.connect()
    run_timers(pair.client, heard, heard + 2.0)
    assert pair.client.paths[0].state is PathState.DOWN
    probes = []
    now = heard + 2.0
    while (t := pair.client.get_timer()) is not None and t < heard + 4.0:
        now = t
        pair.client.handle_timer(now)
        out = pair.client.transmit(now)
        if out:
            assert kinds(out[0]) == [wire.FrameType.ACK]
            probes.append(now)
    assert len(probes) >= 3
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(probes)}
    assert gaps == {pair.client.config.probe_interval}


def test_revived_path_is_rewound_and_gets_every_unacked_frame() -> None:
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    heard = pair.connect()
    c.send(b"A" * 10)
    sent_a = c.transmit(heard)
    c.send(b"B" * 10)
    sent_b = c.transmit(heard + 0.01)
    originals = data_frames(sent_a, 1) + data_frames(sent_b, 1)
    assert len(originals) == 2
    assert data_frames(sent_a, 0) + data_frames(sent_b, 0) == originals
    # nothing arrives: both paths die, and the frames stay unacked
    seen = run_timers(c, heard + 0.01, heard + 3.0)
    assert {ev.path_id for _, ev in seen if isinstance(ev, PathDown)} == {0, 1}
    assert c.paths[1].cursor == 2
    # path 1 comes back: one authenticated frame from the exit on it
    now = heard + 3.0
    revive = e.transmit(now)
    pair.deliver(c, revive, now + 0.05, paths=[1])
    assert drain(c) == [PathUp(1)]
    assert c.state is SessionState.OPEN
    out = c.transmit(now + 0.05)
    assert data_frames(out, 1) == originals  # rewound to the oldest unacked frame
    assert wire.FrameType.ACK in kinds(out[1])  # and it probes back at once
    assert data_frames(out, 0) == []  # the dead path carries no data
    assert c.paths[1].cursor == c.sender.next_seq


def test_resume_within_grace_and_timeout_after_it() -> None:
    cfg = SessionConfig(grace_period=5.0, path_timeout=1.5, probe_interval=0.5)
    pair = Pair(client=cfg)
    c = pair.client
    heard = pair.connect()
    seen = run_timers(c, heard, heard + 1.5)
    assert [ev for _, ev in seen] == [PathDown(0)]
    assert c.state is SessionState.RESUMING
    # back within the grace period: the session goes on
    now = heard + 4.0
    pair.deliver(c, pair.exit.transmit(now), now + 0.05)
    assert drain(c) == [PathUp(0)]
    assert c.state is SessionState.OPEN
    # then silence for good: PathDown after the path timeout, TIMEOUT a grace period later
    last = now + 0.05
    seen = run_timers(c, last, last + 20)
    assert [(round(t - last, 9), ev) for t, ev in seen] == [
        (1.5, PathDown(0)),
        (6.5, SessionClosed(wire.CloseCode.TIMEOUT, "no path alive for 5 s", by_peer=False)),
    ]
    assert c.state is SessionState.CLOSED
    assert c.get_timer() is None
    assert c.writable() == 0


def test_grace_counts_from_creation_when_no_path_ever_answers() -> None:
    pair = Pair(client=SessionConfig(grace_period=3.0))
    seen = run_timers(pair.client, T0, T0 + 10)
    assert seen == [
        (T0 + 3.0, SessionClosed(wire.CloseCode.TIMEOUT, "no path alive for 3 s", False))
    ]
    assert pair.client.state is SessionState.CLOSED


def test_down_datagram_path_with_pending_data_does_not_busy_loop() -> None:
    """Regression: the send-budget timer of a down path was due forever (transmit skips it)."""
    pair = Pair(client=SessionConfig(path_timeout=1.5))
    c = pair.client
    heard = pair.connect()
    last = heard
    for step in range(40):  # keep writing while nothing gets through, past the path timeout
        now = heard + 0.1 * step
        run_timers(c, last, now)
        last = now
        c.send(b"x" * 100)
        c.transmit(now)
        timer = c.get_timer()
        assert timer is not None and timer > now
    assert c.paths[0].state is PathState.DOWN
    assert c.paths[0].cursor < c.sender.next_seq


# --- flow control ----------------------------------------------------------------------------


def test_writable_drops_to_zero_when_the_window_is_full_and_recovers_after_acks() -> None:
    pair = Pair(client=SessionConfig(window_bytes=3000))
    c, e = pair.client, pair.exit
    now = pair.connect()
    assert c.writable() == 3000
    c.send(b"x" * 1000)
    assert c.writable() == 2000
    c.send(b"y" * 2000)
    assert c.writable() == 0
    out = c.transmit(now)
    assert len(data_frames(out)) == 3  # 1196 + 1196 + 608
    assert c.writable() == 0  # in flight is still held
    pair.deliver(e, out, now + 0.05)
    assert b"".join(ev.data for ev in drain(e) if isinstance(ev, StreamData)) == (
        b"x" * 1000 + b"y" * 2000
    )
    acked_at = now + 0.05 + e.config.ack_delay
    assert e.get_timer() == pytest.approx(acked_at)
    pair.deliver(c, e.transmit(acked_at), acked_at + 0.05)
    assert c.writable() == 3000
    assert c.sender.unacked_bytes == 0


def test_peer_frame_window_limits_new_frames() -> None:
    pair = Pair(exit=SessionConfig(window_frames=4))
    c = pair.client
    now = pair.connect()
    # Regression: the first ACK's window replaces the 1024-frame guess; it was max()ed with it,
    # so a smaller receive window was never honoured (frames past it dropped, resent, dropped).
    assert c.sender.peer_window_end == 4
    for i in range(6):
        c.send(bytes([i]))
        c.transmit(now + 0.001 * i)
    assert c.sender.next_seq == 4  # frames 4 and 5 wait for the window
    assert c.sender.has_pending()


def test_frames_beyond_the_window_are_dropped_unacked() -> None:
    pair = Pair(exit=SessionConfig(window_frames=4))
    c, e = pair.client, pair.exit
    for i in range(6):  # the client does not know the window yet: 1024 frames by default
        c.send(bytes([i]))
        data = data_frames(c.transmit(T0 + 0.001 * i))
        for frame in data:
            e.receive_frame(frame, T0 + 0.05, 0)
    assert e.receiver.cumulative == 4
    assert e.receiver.held_bytes == 0  # 4 and 5 were not kept
    assert b"".join(ev.data for ev in drain(e) if isinstance(ev, StreamData)) == bytes(range(4))


def test_pause_receiving_freezes_the_advertised_window() -> None:
    pair = Pair(exit=SessionConfig(window_frames=4))
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    for i in range(8):
        c.send(bytes([i]))
        pair.deliver(e, c.transmit(now + 0.001 * i), now + 0.05)
    assert e.receiver.cumulative == 4
    now += 0.1
    acks = pair.acks(e, e.transmit(now)[0])
    assert [a.window_end for a in acks] == [4]  # the window did not move with delivery
    pair.deliver(c, {0: [wire.encode_ack(pair.key_of(e), e.session_id, acks[0])]}, now)
    c.transmit(now)
    assert c.sender.next_seq == 4
    # the consumer drains: the next ACK opens the window, and the client sends the rest
    e.pause_receiving(False)
    now += e.config.probe_interval
    out = e.transmit(now)
    assert [a.window_end for a in pair.acks(e, out[0])] == [8]
    pair.deliver(c, out, now + 0.05)
    rest = c.transmit(now + 0.05)
    assert len(data_frames(rest)) == 1  # the bytes that waited go out together
    drain(e)
    pair.deliver(e, rest, now + 0.1)
    assert drain(e) == [StreamData(bytes([4, 5, 6, 7]))]


def test_drained_consumer_acks_the_reopened_window_at_once() -> None:
    """A sender stuck on a frozen window hears of the wider one right away, not a probe later."""
    pair = Pair(exit=SessionConfig(window_frames=4))
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.pause_receiving(True)
    for i in range(6):
        c.send(bytes([i]))
        pair.deliver(e, c.transmit(now + 0.001 * i), now + 0.05)
    now += 0.1
    e.transmit(now)  # the ACK for what arrived; nothing else is pending afterwards
    assert e.transmit(now + 0.001) == {}
    e.pause_receiving(False)
    out = e.transmit(now + 0.002)  # same instant as the drain: no timer, no DATA needed
    assert [a.window_end for a in pair.acks(e, out.get(0, []))] == [8]


# --- duplicates and who arrived first --------------------------------------------------------


def test_duplicates_counted_and_first_arrival_credited_to_the_faster_path() -> None:
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    now = pair.connect()
    drain(e)
    c.send(b"hi")
    out = c.transmit(now)
    assert data_frames(out, 0) == data_frames(out, 1)
    pair.deliver(e, out, now + 0.01, paths=[1])  # path 1 is faster
    pair.deliver(e, out, now + 0.05, paths=[0])
    assert drain(e) == [StreamData(b"hi")]  # one copy delivered
    assert e.duplicates == 1
    fast, slow = e.paths[1].inbound, e.paths[0].inbound
    assert (fast.first, fast.frames) == (1, 1)
    assert (slow.first, slow.frames) == (0, 1)
    assert slow.lag == pytest.approx(EWMA_GAIN * 0.04)
    assert fast.lag == 0.0
    # the ACKs carry the tally back: the client sees its outbound winners
    acked_at = now + 0.05
    pair.deliver(c, e.transmit(acked_at), acked_at + 0.05)
    assert c.paths[1].outbound.first == 1
    assert c.paths[0].outbound.first == 0
    assert c.paths[0].outbound.lag == pytest.approx(EWMA_GAIN * 0.04, abs=1e-5)


def test_duplicate_after_delivery_still_triggers_an_ack() -> None:
    """A copy of an already delivered frame means our ACK may have been lost: ack again."""
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect()
    c.send(b"x")
    out = c.transmit(now)
    pair.deliver(e, out, now + 0.05)
    e.transmit(now + 0.06)  # ACK sent (and lost)
    resend_at = now + 0.05 + c.rto()  # the sender's timer fired: the resend arrives
    assert e.get_timer() != pytest.approx(resend_at + e.config.ack_delay)
    pair.deliver(e, out, resend_at)
    assert e.get_timer() == pytest.approx(resend_at + e.config.ack_delay)
    acks = pair.acks(e, e.transmit(resend_at + e.config.ack_delay)[0])
    assert [a.cumulative for a in acks] == [1]


def test_redundant_copies_do_not_trigger_more_acks() -> None:
    """Copies of a frame arriving on slower paths right after the first are not acked again:
    otherwise every copy would send an ACK on every path."""
    pair = Pair(paths=3)
    c, e = pair.client, pair.exit
    now = pair.connect()
    c.send(b"x")
    out = c.transmit(now)
    pair.deliver(e, out, now + 0.05, paths=[0])  # the fastest copy
    assert len(e.transmit(now + 0.05 + e.config.ack_delay)) == 3  # acked on every path
    pair.deliver(e, out, now + 0.06, paths=[1, 2])  # the slower copies, 10 ms later
    assert e.transmit(now + 0.06 + e.config.ack_delay) == {}


# --- bad input -------------------------------------------------------------------------------


def _exit_frames(pair: Pair, seqs: range, size: int) -> list[bytes]:
    key, sid = pair.keys.client_to_exit, pair.client.session_id
    return [wire.encode_data(key, sid, seq, bytes(size), False) for seq in seqs]


def test_oversized_data_is_bad_for_its_path_kind() -> None:
    """Review A12: no peer makes a DATA frame above its path kind's maximum."""
    pair = Pair(paths=2)
    pair.exit.add_path(2, False, T0)  # a stream path too
    too_big_for_udp = _exit_frames(pair, range(1, 2), wire.MAX_DATAGRAM_PAYLOAD + 1)[0]
    too_big_for_tcp = _exit_frames(pair, range(2, 3), wire.MAX_STREAM_PAYLOAD + 1)[0]
    pair.exit.receive_frame(too_big_for_udp, T0 + 0.01, 0)
    pair.exit.receive_frame(too_big_for_tcp, T0 + 0.01, 2)
    assert (pair.exit.paths[0].bad_frames, pair.exit.paths[2].bad_frames) == (1, 1)
    assert pair.exit.receiver.held_bytes == 0
    fits = _exit_frames(pair, range(2, 3), wire.MAX_STREAM_PAYLOAD)[0]
    pair.exit.receive_frame(fits, T0 + 0.01, 2)
    assert pair.exit.receiver.held_bytes == wire.MAX_STREAM_PAYLOAD


def test_jumbo_data_only_where_the_handshake_agreed_to_it() -> None:
    """A stream-path payload above 16 KiB is bad unless JUMBO was agreed; with it, up to
    `wire.MAX_JUMBO_PAYLOAD` (the largest frame the u16 length prefix carries)."""
    for features, fits in ((Features(), False), (Features(jumbo=True), True)):
        pair = Pair(paths=0, features=features)
        pair.exit.add_path(0, False, T0)
        jumbo = _exit_frames(pair, range(1, 2), wire.MAX_JUMBO_PAYLOAD)[0]
        assert len(jumbo) == wire.MAX_STREAM_FRAME
        pair.exit.receive_frame(jumbo, T0 + 0.01, 0)
        assert pair.exit.paths[0].bad_frames == (0 if fits else 1)
        assert pair.exit.receiver.held_bytes == (wire.MAX_JUMBO_PAYLOAD if fits else 0)
        too_big = _exit_frames(pair, range(2, 3), wire.MAX_JUMBO_PAYLOAD + 1)[0]
        pair.exit.receive_frame(too_big, T0 + 0.01, 0)
        assert pair.exit.paths[0].bad_frames == (1 if fits else 2)


def test_key_holder_holds_at_most_window_bytes_out_of_order() -> None:
    """Review A12: max-size frames 1..n with frame 0 never sent once pinned n x 64 KB on the
    exit (460 MB per session with relayd's window in frames); held bytes stay within
    `window_bytes`, and the stream still completes once the hole is filled."""
    budget = 1 << 20
    pair = Pair(exit=SessionConfig(window_bytes=budget, window_frames=1024), datagram=False)
    e = pair.exit
    frames = _exit_frames(pair, range(0, 200), wire.MAX_STREAM_PAYLOAD)
    for frame in frames[1:]:  # 3.2 MB of frames, the first one withheld
        e.receive_frame(frame, T0 + 0.01, 0)
    assert 0 < e.receiver.held_bytes <= budget
    dropped = e.stale_frames
    assert dropped == 200 - 1 - budget // (wire.MAX_STREAM_PAYLOAD + 28)
    e.receive_frame(frames[0], T0 + 0.02, 0)  # the hole filled: the held ones come out
    for frame in frames[1:]:  # the sender resends the rest
        e.receive_frame(frame, T0 + 0.03, 0)
    got = sum(len(ev.data) for ev in drain(e) if isinstance(ev, StreamData))
    assert got == 200 * wire.MAX_STREAM_PAYLOAD
    assert e.receiver.held_bytes == 0


def test_corrupted_and_foreign_frames_are_counted_and_dropped() -> None:
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect()
    c.send(b"secret")
    (frame,) = data_frames(c.transmit(now))
    bad = bytearray(frame)
    bad[-1] ^= 1
    e.receive_frame(bytes(bad), now, 0)
    e.receive_frame(b"\x01\x03", now, 0)  # too short
    e.receive_frame(ClientHandshake(PSK, "x", 0).hello_frame(0), now, 0)  # HELLO: not ours
    assert drain(e) == []
    assert e.bad_frames == 3
    assert e.receiver.cumulative == 0
    e.receive_frame(frame, now, 0)  # the genuine copy still wins
    assert drain(e) == [StreamData(b"secret")]


def test_ack_and_close_name_their_path_inside_the_tag() -> None:
    """Roaming: the glue learns the path from the authenticated frame, not from the socket."""
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    out = c.transmit(T0)
    assert e.receive_frame(out[1][0], T0, None) == 1
    assert e.receive_frame(out[0][0], T0, 1) == 0  # what the tag says wins
    c.abort(wire.CloseCode.SHUTDOWN, "bye", T0)
    close = c.transmit(T0)
    assert e.receive_frame(close[1][0], T0, None) == 1
    assert drain(e)[-1] == SessionClosed(wire.CloseCode.SHUTDOWN, "bye", by_peer=True)


# --- closing ---------------------------------------------------------------------------------


def test_half_closes_end_both_sides_normally() -> None:
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    now = pair.connect()
    c.send(b"ls\n")
    c.close_stream()
    assert c.writable() == 0
    with pytest.raises(LocalProtocolError):
        c.send(b"more")
    now = pair.exchange(now)
    assert drain(e) == [StreamData(b"ls\n"), StreamEnded()]
    assert c.state is SessionState.OPEN  # the exit's direction is still open
    e.send(b"file\n")
    e.close_stream()
    pair.exchange(now)
    events_c, events_e = drain(c), drain(e)
    assert events_c == [
        StreamData(b"file\n"),
        StreamEnded(),
        SessionClosed(wire.CloseCode.NORMAL, "session ended", by_peer=events_c[-1].by_peer),
    ]
    assert events_e == [events_e[0]]
    assert isinstance(events_e[0], SessionClosed)
    assert events_e[0].code == wire.CloseCode.NORMAL
    assert c.state is e.state is SessionState.CLOSED
    assert c.writable() == 0
    with pytest.raises(LocalProtocolError):
        e.send(b"x")


def test_closed_sessions_do_not_answer_each_others_close() -> None:
    """Regression: two locally closed sessions bounced CLOSE frames forever (RTT > 0.1 s)."""
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    pair.connect()
    now = T0 + 1
    c.abort(wire.CloseCode.SHUTDOWN, "client done", now)
    e.abort(wire.CloseCode.SHUTDOWN, "exit done", now)
    from_c, from_e = c.transmit(now), e.transmit(now)
    assert sorted(from_c) == sorted(from_e) == [0, 1]  # one CLOSE per path
    for k in range(5):
        pair.deliver(e, from_c, now + 0.3 * (k + 1))
        pair.deliver(c, from_e, now + 0.3 * (k + 1))
        assert c.transmit(now + 0.3 * (k + 1)) == {}
        assert e.transmit(now + 0.3 * (k + 1)) == {}


def test_closed_session_answers_stragglers_with_close_rate_limited() -> None:
    pair = Pair(paths=2)
    c, e = pair.client, pair.exit
    now = pair.connect()
    e.abort(wire.CloseCode.SHUTDOWN, "going away", now)
    assert sorted(e.transmit(now)) == [0, 1]
    c.send(b"late")
    straggler = c.transmit(now)
    pair.deliver(e, straggler, now + 0.05, paths=[1])
    answer = e.transmit(now + 0.05)
    assert list(answer) == [1]
    code, reason = wire.decode_close(wire.verify(pair.key_of(e), answer[1][0]))
    assert (code, reason) == (wire.CloseCode.SHUTDOWN, "going away")
    pair.deliver(e, straggler, now + 0.06, paths=[0])  # within the tombstone interval
    assert e.transmit(now + 0.06) == {}
    bad = bytearray(straggler[0][0])
    bad[-1] ^= 1
    e.receive_frame(bytes(bad), now + 1, 0)  # unauthenticated: never answered
    assert e.transmit(now + 1) == {}
    pair.deliver(c, answer, now + 0.1)
    assert drain(c)[-1] == SessionClosed(wire.CloseCode.SHUTDOWN, "going away", by_peer=True)


# --- frame size ------------------------------------------------------------------------------


def test_large_frames_only_when_no_path_is_a_datagram_path() -> None:
    stream_only = Pair(datagram=False)
    assert stream_only.client.max_payload() == wire.MAX_STREAM_PAYLOAD
    mixed = Pair(paths=1, datagram=False)
    mixed.client.add_path(1, datagram=True, now=T0)
    mixed.connect()
    mixed.client.paths[1].state = PathState.DOWN
    # Regression: a 16 KiB frame cut while only the stream path was up could never be resent
    # on the datagram path if the stream path then died: the session wedged.
    assert mixed.client.max_payload() == wire.MAX_DATAGRAM_PAYLOAD
    small = Pair(datagram=False, client=SessionConfig(large_frames=False))
    assert small.client.max_payload() == wire.MAX_DATAGRAM_PAYLOAD
    jumbo = Pair(datagram=False, features=Features(jumbo=True))
    assert jumbo.client.max_payload() == wire.MAX_JUMBO_PAYLOAD
    jumbo_mixed = Pair(paths=1, datagram=False, features=Features(jumbo=True))
    jumbo_mixed.client.add_path(1, datagram=True, now=T0)
    assert jumbo_mixed.client.max_payload() == wire.MAX_DATAGRAM_PAYLOAD


def test_stream_paths_carry_large_frames() -> None:
    pair = Pair(datagram=False)
    now = pair.connect()
    pair.client.send(b"z" * 40_000)
    sizes = [len(f) for f in data_frames(pair.client.transmit(now))]
    overhead = wire.DATA_HEADER.size + wire.TAG_SIZE
    assert sizes == [wire.MAX_STREAM_PAYLOAD + overhead] * 2 + [40_000 - 2 * 16384 + overhead]


def test_stream_paths_carry_jumbo_frames_when_agreed() -> None:
    pair = Pair(datagram=False, features=Features(jumbo=True))
    now = pair.connect()
    data = bytes(range(256)) * 600  # 153 600 bytes
    pair.client.send(data)
    frames = data_frames(pair.client.transmit(now))
    overhead = wire.DATA_HEADER.size + wire.TAG_SIZE
    assert [len(f) for f in frames] == [wire.MAX_STREAM_FRAME] * 2 + [
        len(data) - 2 * wire.MAX_JUMBO_PAYLOAD + overhead
    ]
    pair.deliver(pair.exit, {0: frames}, now + 0.001)
    got = b"".join(e.data for e in drain(pair.exit) if isinstance(e, StreamData))
    assert got == data
