"""Loss recovery with hand-held time: handshake RTT seeds, RACK, probe timeouts, backoff cap.

Each timer is asserted exactly (aioquic's `test_connect_with_loss_1` style): the promise is
"a lost keystroke costs about one RTT more, never seconds", and these are its numbers.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from functools import partial

import pytest

from dupsession.core import wire
from dupsession.core.events import StreamData
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from dupsession.core.session import Role, Session, SessionConfig
from tests.support.session import T0, Pair, data_frames, drain, handshake

ACK_DELAY = SessionConfig().ack_delay


def seq_of(frame: bytes) -> int:
    return int.from_bytes(frame[12:20], "big")


def test_no_sample_means_the_one_second_timer() -> None:
    """The cause of the demo's 1-2 s single-path tails: an end without an RTT sample (the exit,
    for its first frames) resends after max_rto / 2 = 1 s, doubling."""
    pair = Pair()
    assert pair.exit.rto() == pytest.approx(1.0 + ACK_DELAY)


def test_client_seeds_its_rtt_from_the_handshake() -> None:
    sid, keys = handshake()
    client = Session(Role.CLIENT, sid, keys, T0)
    path = client.add_path(0, True, T0, handshake_rtt=0.1)
    path.heard(T0)  # up
    # srtt + 4·rttvar (rttvar = RTT/2 at first) would be 3 RTTs: the variance term is capped
    # at one srtt (RACK-TLP's 2·SRTT probe timeout)
    assert client.rto() == pytest.approx(0.1 + 0.1 + ACK_DELAY, abs=1e-9)
    assert path.rtt.samples == 0 and path.rtt.provisional
    path.rtt.add(0.06)  # the first measured sample replaces the seed, it does not average
    assert path.rtt.srtt == pytest.approx(0.06) and not path.rtt.provisional
    assert client.rto() == pytest.approx(0.06 + 0.06 + ACK_DELAY, abs=1e-9)
    for _ in range(3):  # each agreeing sample takes a quarter off rttvar: 4·rttvar < srtt
        path.rtt.add(0.06)
    assert client.rto() == pytest.approx(0.06 + 4 * 0.03 * 0.75**3 + ACK_DELAY, abs=1e-9)


def test_exit_seeds_its_rtt_from_the_first_frame_after_its_welcome() -> None:
    pair = Pair()  # the exit added the path (sent its WELCOME) at T0
    pair.deliver(pair.exit, pair.client.transmit(T0 + 0.08), T0 + 0.1)
    assert drain(pair.exit)
    assert pair.exit.rto() == pytest.approx(0.1 + 0.1 + ACK_DELAY, abs=1e-9)
    # so its first reply, if lost, is resent after 0.204 s (2 RTTs), not after 1 s
    pair.exit.send(b"banner")
    pair.exit.transmit(T0 + 0.1)
    assert pair.exit.get_timer() == pytest.approx(T0 + 0.1 + 0.204, abs=1e-9)


def test_rack_resends_a_lost_keystroke_when_the_next_one_is_acked() -> None:
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)  # RTT 50 ms
    c.send(b"a")
    lost = data_frames(c.transmit(now))  # never arrives
    rto_deadline = c.get_timer()
    assert rto_deadline is not None
    c.send(b"b")
    pair.deliver(e, c.transmit(now + 0.02), now + 0.045)
    ack_out = e.transmit(now + 0.045 + ACK_DELAY)
    assert data_frames(ack_out) == []
    arrival = now + 0.07 + ACK_DELAY
    assert arrival < rto_deadline
    pair.deliver(c, ack_out, arrival)
    # "b" was sent 20 ms after "a" (more than the 12.5 ms reorder window): "a" is lost now
    assert c.sender.lost_detected == 1
    resent = data_frames(c.transmit(arrival))
    assert resent == lost * 2  # a keystroke's resend goes twice on a single path


def test_rack_waits_out_the_reorder_window_then_resends_exactly_on_time() -> None:
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)  # RTT 50 ms, min RTT 50 ms: reorder window 12.5 ms
    c.send(b"a")
    first = data_frames(c.transmit(now))
    c.send(b"b")
    second = data_frames(c.transmit(now + 0.005))  # 5 ms later: within the window
    for frame in second:
        e.receive_frame(frame, now + 0.03, 0)
    ack_out = e.transmit(now + 0.03 + ACK_DELAY)
    arrival = now + 0.055 + ACK_DELAY
    pair.deliver(c, ack_out, arrival)
    assert c.sender.lost_detected == 0
    # lost once the acked frame's RTT plus the window has passed since "a" was sent
    rack_rtt = arrival - (now + 0.005)
    expected = now + rack_rtt + 0.0125
    assert c.get_timer() == pytest.approx(expected, abs=1e-9)
    c.handle_timer(expected - 1e-6)
    assert data_frames(c.transmit(expected - 1e-6)) == []
    c.handle_timer(expected)
    assert data_frames(c.transmit(expected)) == first * 2


def test_probe_timeout_backoff_never_leaves_a_keystroke_waiting_seconds() -> None:
    pair = Pair()
    c = pair.client
    now = pair.connect(T0, delay=0.15)  # RTT 300 ms: rto 0.604 s, above max_backoff
    rto = c.rto()
    assert rto == pytest.approx(0.3 + 0.3 + ACK_DELAY, abs=1e-9)
    c.send(b"x")
    c.transmit(now)
    sends = [now]
    until = now + 5.0
    while (timer := c.get_timer()) is not None and timer < until:
        c.handle_timer(timer)
        if data_frames(c.transmit(timer)):
            sends.append(timer)
        drain(c)
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    # the path goes down after 2 s of silence; until then resends come every rto (the cap is
    # max(rto, max_backoff)), never doubling into seconds
    assert gaps and max(gaps) <= max(rto, c.config.max_backoff) + 1e-9
    assert gaps[0] == pytest.approx(rto, abs=1e-9)


def test_a_window_sent_into_silence_is_probed_with_backoff_not_frame_by_frame() -> None:
    """Forty frames 2 ms apart, then nothing comes back (an outage). Each frame's deadline
    runs from its own send, so each timed out in its turn: a probe every 2 ms, the window
    resent into the dark every timeout (on a 10 Mbit/s path ~1000 frames a second through a
    2 s outage, whose late ACKs then read as loss: the spiral in tests/sim/test_congestion.py).
    The probe timeout backs off for the session, as RFC 9002's PTO: the oldest frames (twice
    on a lone datagram path) one timeout after the first send, then 2 and 4 timeouts later,
    then every max_backoff."""
    pair = Pair()
    c = pair.client
    now = pair.connect(T0, delay=0.025)
    for i in range(40):
        c.send(bytes(1196))
        assert len(data_frames(c.transmit(now + 0.002 * i))) == 1
    rto, cap = c.recovery.rto_value, c.config.max_backoff
    rounds: list[tuple[float, list[int]]] = []
    until = now + 1.9  # (the path goes down after 2 s of silence)
    while (timer := c.get_timer()) is not None and timer < until:
        c.handle_timer(timer)
        if out := data_frames(c.transmit(timer)):
            rounds.append((timer - now, [seq_of(f) for f in out]))
        drain(c)
    assert 4 * rto < cap < 8 * rto  # (so the fourth round is the cap's)
    expected = [rto, 3 * rto, 7 * rto, 7 * rto + cap, 7 * rto + 2 * cap]
    assert [at for at, _ in rounds] == pytest.approx(expected, abs=1e-9)
    # the first round finds frame 0 alone due (frame 1's deadline is 2 ms later)
    assert [seqs for _, seqs in rounds] == [[0, 0]] + [[0, 0, 1, 1]] * 4


def test_resend_of_a_rack_loss_is_byte_identical_and_counted() -> None:
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)
    c.send(b"one")
    lost = data_frames(c.transmit(now))
    c.send(b"two")
    pair.deliver(e, c.transmit(now + 0.03), now + 0.055)
    pair.deliver(c, e.transmit(now + 0.06), now + 0.085)
    resent = data_frames(c.transmit(now + 0.085))
    assert resent == lost * 2 and seq_of(resent[0]) == 0
    assert c.sender.retransmissions == 1
    assert wire.FrameType.DATA in {f[1] for f in resent}


def test_a_probe_goes_twice_on_a_single_path_and_once_on_each_of_several() -> None:
    # A stream path never loses a frame: its probe goes once even when it is the only path.
    for paths, datagram, copies in ((1, True, 2), (2, True, 1), (1, False, 1)):
        pair = Pair(paths=paths, datagram=datagram)
        c = pair.client
        now = pair.connect(T0, delay=0.025)
        c.send(b"k")
        first = data_frames(c.transmit(now))  # lost on every path
        timer = c.get_timer()
        assert timer == pytest.approx(now + c.rto(), abs=1e-9)
        c.handle_timer(timer)
        out = c.transmit(timer)
        for pid in range(paths):
            assert data_frames(out, pid) == first * copies, (paths, datagram, pid)


@pytest.mark.parametrize("policy", list(Policy))
def test_every_policy_sends_the_copies_a_probe_asks_for(policy: Policy) -> None:
    """Review C1: recovery asks for two copies of a probe when one datagram path is up; the
    stripe and auto schedulers took one (a frame counts as sent after its first copy), so
    their single-path tail stayed at 2.73x RTT while redundant's was 2.36x (sim_tails.py)."""
    pair = Pair(features=Features(schedule=Schedule(policy=policy)))
    c = pair.client
    now = pair.connect(T0, delay=0.025)
    c.send(b"k")
    first = data_frames(c.transmit(now))  # lost
    resent: list[bytes] = []
    while not resent:  # stripe and auto also wake for their own re-injection deadlines
        timer = c.get_timer()
        assert timer is not None and timer - now < 0.2  # within one resend timeout
        c.handle_timer(timer)
        resent = data_frames(c.transmit(timer))
    assert resent == first * 2


def test_a_lost_resend_is_resent_one_ack_clock_later_not_after_a_backed_off_timeout() -> None:
    """Keystroke "a" is lost, RACK resends it when "b" is acknowledged, and the resend is
    lost too. "c", sent before that resend, is acknowledged next: RACK cannot judge the
    resend (nothing sent after it was acknowledged), and the probe timeout would wait for
    `last progress + rto`. The resend goes again once the ACK clock (RTT of "c" plus the
    reorder window, at least one rto) passed since it left, with no backoff."""
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)  # RTT 50 ms, reorder window 12.5 ms
    c.send(b"a")
    lost = data_frames(c.transmit(now))
    c.send(b"b")
    pair.deliver(e, c.transmit(now + 0.02), now + 0.045)
    c.send(b"c")
    c_out = c.transmit(now + 0.06)
    pair.deliver(c, e.transmit(now + 0.045 + ACK_DELAY), now + 0.07 + ACK_DELAY)
    resend_at = now + 0.07 + ACK_DELAY
    assert data_frames(c.transmit(resend_at)) == lost * 2  # RACK, twice; both lost again
    pair.deliver(e, c_out, now + 0.085)
    acked_at = now + 0.11 + ACK_DELAY
    pair.deliver(c, e.transmit(now + 0.085 + ACK_DELAY), acked_at)
    assert c.sender.acked_below == 0 and c.sender.frames[0].sends == 2
    rto = c.recovery.rto_value
    window = c.recovery.window
    assert window == pytest.approx(0.0125)
    expected = resend_at + max(rto, (acked_at - (now + 0.06)) + window)
    assert expected < acked_at + rto  # what the probe timeout alone would have waited for
    assert c.get_timer() == pytest.approx(expected, abs=1e-9)
    c.handle_timer(expected - 1e-6)
    assert data_frames(c.transmit(expected - 1e-6)) == []
    c.handle_timer(expected)
    assert data_frames(c.transmit(expected)) == lost * 2  # a probe: twice on one path
    # ACKs made progress since its last send: its next deadline is one rto, not two
    resent = c.sender.frames[0]
    assert resent.deadline == pytest.approx(expected + c.recovery.rto_value, abs=1e-9)


def test_a_keystroke_sent_before_the_last_ones_ack_is_probed_one_timeout_after_its_send() -> None:
    """The demo's tail: keystrokes every 50 ms on a 50 ms path, so "b" leaves a few ms before
    the ACK for "a" arrives. That ACK made progress, and the probe timeout counted from it, so
    a lost "b" was probed that much late (2-10 ms in the demo's traces; twice when its echo was
    lost too: 161-169 ms against the 164.5 ms target). With fewer than four frames in flight
    the probe goes one timeout after the frame's own send (RFC 7765, RTO Restart)."""
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)  # RTT 50 ms
    c.send(b"a")
    pair.deliver(e, c.transmit(now), now + 0.025)
    ack = e.transmit(now + 0.025 + ACK_DELAY)
    c.send(b"b")
    sent_at = now + 0.05
    lost = data_frames(c.transmit(sent_at))  # never arrives
    rto = c.recovery.rto_value
    pair.deliver(c, ack, now + 0.05 + ACK_DELAY)  # acknowledges "a": progress after "b" left
    assert c.recovery.last_progress == now + 0.05 + ACK_DELAY
    expected = sent_at + rto
    assert c.get_timer() == pytest.approx(expected, abs=1e-9)
    c.handle_timer(expected - 1e-6)
    assert data_frames(c.transmit(expected - 1e-6)) == []
    c.handle_timer(expected)
    assert data_frames(c.transmit(expected)) == lost * 2


def test_with_a_window_in_flight_the_probe_timeout_still_counts_from_the_last_ack() -> None:
    """A transfer: while ACKs keep making progress, a queue that grows the RTT past one
    timeout must not time frames out (RACK judges them); the probe waits for one timeout
    after the last progress."""
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)
    c.send(b"a")
    pair.deliver(e, c.transmit(now), now + 0.025)
    ack = e.transmit(now + 0.025 + ACK_DELAY)
    for i in range(4):
        c.send(bytes([i]))
        c.transmit(now + 0.05)  # four frames, each its own
    assert len(c.sender.frames) == 5
    progress = now + 0.05 + ACK_DELAY
    pair.deliver(c, ack, progress)
    assert len(c.sender.frames) == 4
    assert c.get_timer() == pytest.approx(progress + c.recovery.rto_value, abs=1e-9)


def test_a_transfers_rack_resend_goes_once_on_a_single_path() -> None:
    """Two copies of each resend are for a keystroke's flight; with four frames or more in
    flight a second copy would cost a transfer the loss rate again."""
    pair = Pair()
    c, e = pair.client, pair.exit
    now = pair.connect(T0, delay=0.025)  # reorder window 12.5 ms
    c.send(bytes(1196))
    first = data_frames(c.transmit(now))  # lost
    c.send(bytes(1196 * 5))
    pair.deliver(e, c.transmit(now + 0.02), now + 0.045)
    c.send(bytes(1196 * 4))
    c.transmit(now + 0.03)  # still on its way when the ACK comes
    acked_at = now + 0.07 + ACK_DELAY
    pair.deliver(c, e.transmit(now + 0.045 + ACK_DELAY), acked_at)
    assert c.sender.lost_detected == 1 and len(c.sender.frames) > 4
    resent = [f for f in data_frames(c.transmit(acked_at)) if seq_of(f) == 0]
    assert resent == first


def test_auto_on_one_path_adds_no_spread_to_the_reorder_window() -> None:
    """auto's reorder spread was the only path's 2·rttvar: 25-40 ms early in a session, so
    RACK waited that much longer to call a lost echo lost. One path reorders against none."""
    pair = Pair(features=Features(schedule=Schedule(policy=Policy.AUTO)))
    c = pair.client
    now = pair.connect(T0, delay=0.025)
    assert c.paths[0].rtt.rttvar > 0.02  # one sample: rttvar is RTT / 2
    c.send(b"k")
    c.transmit(now)
    assert c.scheduler.reorder_spread == 0.0


class _Typing:
    """Keystrokes every 20 ms on one path of 15 ms each way, each echoed at once by the exit;
    the client's timers fire `late[0]` after their time, the exit's `late[1]` (asyncio rounds
    its poll timeout up to whole ms, then the wake-up waits for the CPU), so an ACK comes that
    much after the delayed-ACK time. The RTT is steady: rttvar decays to nothing and the
    timeout to srtt + 1 ms + ACK delay."""

    ONE_WAY, INTERVAL = 0.015, 0.02

    def __init__(self, datagram: bool, late: tuple[float, float]) -> None:
        self.pair = Pair(datagram=datagram)
        self.late = late
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()

    def push(self, at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (at, next(self.order), action))

    def flush(self, s: Session, at: float) -> None:
        arrive = at + self.ONE_WAY
        for pid, frames in s.transmit(at).items():
            self.push(arrive, partial(self.receive, self.pair.peer(s), pid, frames, arrive))
        timer = s.get_timer()
        if timer is not None:
            due = max(timer, at) + self.late[s is self.pair.exit]
            self.push(due, partial(self.fire, s, due))

    def receive(self, s: Session, pid: int, frames: list[bytes], at: float) -> None:
        for frame in frames:
            s.receive_frame(frame, at, pid)
        echo = [ev.data for ev in drain(s) if isinstance(ev, StreamData)]
        if echo and s is self.pair.exit:
            s.send(b"".join(echo))
        self.flush(s, at)

    def fire(self, s: Session, at: float) -> None:
        timer = s.get_timer()
        if timer is not None and timer + self.late[s is self.pair.exit] <= at:  # not moved
            s.handle_timer(at)
            self.flush(s, at)

    def type(self, at: float) -> None:
        self.pair.client.send(b"k")
        self.flush(self.pair.client, at)

    def run(self, keystrokes: int) -> Pair:
        pair = self.pair
        start = pair.connect(T0, delay=self.ONE_WAY)
        for i in range(keystrokes):
            self.push(start + i * self.INTERVAL, partial(self.type, start + i * self.INTERVAL))
        end = start + keystrokes * self.INTERVAL + 0.2
        while self.queue and self.queue[0][0] <= end:
            heapq.heappop(self.queue)[2]()
        assert pair.client.sender.acked_below == pair.exit.sender.acked_below == keystrokes
        return pair


def test_no_spurious_probe_of_a_keystroke_on_a_lone_stream_path() -> None:
    """A stream path loses no frame (TCP resends it itself), and a probe queued behind a
    keystroke on the same connection cannot arrive before it: with only stream paths up the
    probe timeout counts from the last ACK progress, not from each frame's send (RTO restart
    finds a lost keystroke sooner on a datagram path). It restarted there too, and an ACK
    held for the ACK delay by a timer 1.5 ms late came after srtt + 1 ms + ACK delay: 44
    keystrokes of these 100 went twice; the SSH relay test's sessions resent 3-7 keystrokes
    (client) and 4-6 echoes (exit) in 150, on top of relayd's probe-echo spin."""
    pair = _Typing(datagram=False, late=(0.0, 0.0015)).run(keystrokes=100)
    assert pair.client.sender.retransmissions == 0
    assert pair.exit.sender.retransmissions == 0
