"""Replay and reflection rules of the core: fresh ACKs only, challenges, RESET, address book.

The end-to-end attacks are in tests/e2e/test_attacks.py; these pin each rule down alone,
with hand-held time, plus one property: an unvalidated address never gets more than 3x.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import wire
from dupsession.core.addresses import AMPLIFICATION, MAX_CANDIDATES, PathAddresses, Verdict
from dupsession.core.best_k import BestK
from dupsession.core.events import SessionClosed
from dupsession.core.handshake import reset_token
from tests.support.session import PSK, T0, Pair, data_frames, drain, kinds


def _ack_frames(out: dict[int, list[bytes]], pid: int = 0) -> list[bytes]:
    return [f for f in out.get(pid, []) if f[1] == wire.FrameType.ACK]


# --- freshness -----------------------------------------------------------------------------


def test_replayed_ack_is_stale_dropped_and_names_no_path() -> None:
    pair = Pair(paths=1)
    now = pair.connect()
    ack = _ack_frames(pair.client.transmit(now + 1))[0]
    assert pair.exit.receive_frame(ack, now + 1.01, None) == 0  # fresh: names its path
    for later in (1.02, 5.0, 60.0):  # the same ACK again, at any age: moves nothing
        assert pair.exit.receive_frame(ack, now + later, None) is None
    assert pair.exit.stale_frames == 3
    rtt = pair.exit.paths[0].rtt
    assert rtt.samples <= 2  # the replays gave no RTT samples


def test_older_ack_after_a_newer_one_is_stale() -> None:
    pair = Pair(paths=1)
    now = pair.connect()
    first = _ack_frames(pair.client.transmit(now + 1))[0]
    second = _ack_frames(pair.client.transmit(now + 2))[0]
    assert pair.exit.receive_frame(second, now + 2.01, 0) == 0
    assert pair.exit.receive_frame(first, now + 2.02, 0) is None
    assert pair.exit.stale_frames == 1


def test_pseq_wraps_at_32_bits_without_turning_every_ack_stale() -> None:
    """Review A10: after 2**32 ACKs on a path the wire's u32 `pseq` wraps; the next ACKs are
    still fresh (serial-number order), and a replayed pre-wrap one still is not."""
    pair = Pair(paths=1)
    now = pair.connect()
    pair.client.paths[0].ack_pseq = 2**32 - 3  # as after ~4 billion ACKs, both ends
    pair.exit.paths[0].peer_pseq = 2**32 - 3
    before = _ack_frames(pair.client.transmit(now + 1))[0]
    assert pair.exit.receive_frame(before, now + 1.01, 0) == 0
    for step in range(2, 6):  # pseq 2**32 - 1, then 0, 1, 2 on the wire
        ack = _ack_frames(pair.client.transmit(now + step))[0]
        assert pair.exit.receive_frame(ack, now + step + 0.01, 0) == 0
    assert pair.exit.paths[0].peer_pseq == 2**32 + 2  # unwrapped
    assert pair.exit.paths[0].acks_lost == 0
    assert pair.exit.receive_frame(before, now + 6, 0) is None  # the replay is stale
    assert pair.exit.stale_frames == 1


def test_rtt_samples_beyond_ten_seconds_are_ignored() -> None:
    pair = Pair(paths=1)
    now = pair.connect()
    samples = pair.client.paths[0].rtt.samples
    late = pair.exit.transmit(now + 1)  # the exit's ACK, echoing the client's ts
    pair.deliver(pair.client, late, now + 1 + 30)  # held 30 s by an attacker
    assert pair.client.paths[0].rtt.samples == samples


# --- duplicates never trigger ACKs toward unknown sources ---------------------------------


def _delivered_once() -> tuple[Pair, float, list[bytes]]:
    """A connected pair whose exit received one DATA frame on path 0; that frame's copies."""
    pair = Pair(paths=1)
    now = pair.connect()
    pair.client.send(b"x" * 100)
    data = [f for f in pair.client.transmit(now)[0] if f[1] == wire.FrameType.DATA]
    pair.exit.receive_frame(data[0], now + 0.01, 0)
    return pair, now, data


def test_stale_duplicate_data_from_no_known_path_triggers_no_ack() -> None:
    pair, now, data = _delivered_once()
    pair.exit.transmit(now + 0.05)  # acked
    for i in range(50):  # replayed from an unknown address, a resend timeout later: no ACK
        pair.exit.receive_frame(data[0], now + 0.2 + i * 0.001, None)
    assert pair.exit.duplicates == 50
    out = pair.exit.transmit(now + 0.3)  # before the next probe is due
    assert not _ack_frames(out)
    pair.exit.transmit(now + 0.6)  # the probe interval's ACK
    pair.exit.receive_frame(data[0], now + 0.7, 0)  # the same copy on the known path: acked
    assert _ack_frames(pair.exit.transmit(now + 0.71))


def test_resent_duplicates_trigger_at_most_one_ack_per_half_rto() -> None:
    pair, now, data = _delivered_once()
    pair.exit.transmit(now + 0.05)
    acks = 0
    t = now + 1.0
    for _ in range(40):  # 40 copies within 4 ms on a known path
        pair.exit.receive_frame(data[0], t, 0)
        acks += len(_ack_frames(pair.exit.transmit(t + 0.0041)))
        t += 0.0001
    assert acks == 1


# --- duplicates count only when genuine, and once per path (review A1) ---------------------


def _forged(frame: bytes) -> bytes:
    """The same stale frame number with a tag nobody computed: an off-path attacker's copy."""
    return frame[:-1] + bytes([frame[-1] ^ 1])


def test_forged_duplicate_data_is_bad_and_counts_into_nothing() -> None:
    pair, now, data = _delivered_once()
    path = pair.exit.paths[0]
    pair.exit.transmit(now + 1.0)  # acked, and the probe interval's ACK just went
    before = (path.data_recv, path.inbound.frames, pair.exit.duplicates)
    for i in range(200):  # a resend timeout after the first: a genuine copy would arm an ACK
        pair.exit.receive_frame(_forged(data[0]), now + 1.0 + i * 0.001, 0)
    assert (path.data_recv, path.inbound.frames, pair.exit.duplicates) == before
    assert pair.exit.bad_frames == path.bad_frames == 200
    assert not _ack_frames(pair.exit.transmit(now + 1.21))  # and armed no ACK
    pair.exit.receive_frame(data[0], now + 1.22, 0)  # the genuine copy does
    assert _ack_frames(pair.exit.transmit(now + 1.23))


def test_replayed_genuine_copy_counts_once_per_path() -> None:
    pair = Pair(paths=2)
    now = pair.connect()
    pair.client.send(b"x" * 100)
    (frame,) = [f for f in pair.client.transmit(now)[0] if f[1] == wire.FrameType.DATA]
    for i in range(50):  # the first copy on path 0, then a captured copy replayed on both
        pair.exit.receive_frame(frame, now + 0.01 + i * 0.001, 0)
        pair.exit.receive_frame(frame, now + 0.01 + i * 0.001, 1)
    assert [pair.exit.paths[p].data_recv for p in (0, 1)] == [1, 1]
    assert pair.exit.duplicates == 99  # still seen, for the statistics


def _sender_rate(copies: int, forge: bool) -> tuple[float, int]:
    """A bulk transfer over one path delivering 5 frames per 5 ms; `copies` extra copies of an
    old frame injected on the path per step. The sender's (btl_bw, frames acked received)."""
    pair = Pair(paths=1)
    now = pair.connect()
    pair.client.send(b"x" * 500_000)
    injected = None
    for _ in range(150):
        now += 0.005
        frames = pair.client.transmit(now).get(0, [])
        datas = [f for f in frames if f[1] == wire.FrameType.DATA][:5]
        for f in [f for f in frames if f[1] != wire.FrameType.DATA] + datas:
            pair.exit.receive_frame(f, now + 0.01, 0)
        if injected is None and datas:
            injected = _forged(datas[0]) if forge else datas[0]
        for _ in range(copies if injected else 0):
            pair.exit.receive_frame(injected, now + 0.01, 0)
        pair.deliver(pair.client, pair.exit.transmit(now + 0.01), now + 0.02)
        pair.client.handle_timer(now + 0.02)
        pair.exit.handle_timer(now + 0.02)
        drain(pair.client)
        drain(pair.exit)
    return pair.client.paths[0].cc.btl_bw, pair.client.paths[0].peer_data_recv


def test_injected_duplicates_do_not_inflate_the_senders_rate() -> None:
    """Review A1: 200 bad-tag copies of an old frame per step once made the sender's
    delivery-rate estimate 51x the path's; forged or replayed, they change nothing now."""
    clean = _sender_rate(0, forge=False)
    assert clean[0] > 0
    assert _sender_rate(60, forge=True) == clean
    assert _sender_rate(60, forge=False) == clean


def _lossy_path(replay: bool) -> tuple[float, float, float, int]:
    """Review G3's repro: one path loses half the first copies for 30 rounds; with `replay`,
    an on-path observer puts an earlier genuine copy on the path in each lost one's place.
    The client's (peer-reported outbound loss, own loss, best-k's score, peer data_recv)."""
    pair = Pair(paths=1)
    now = pair.connect()
    for _ in range(30):
        pair.client.send(bytes(4 * 1100))
        frames = data_frames(pair.client.transmit(now))
        for i, frame in enumerate(frames):
            if i % 2 == 0:
                pair.exit.receive_frame(frame, now + 0.01, 0)
            elif replay:
                pair.exit.receive_frame(frames[0], now + 0.01, 0)
        now = pair.exchange(now + 0.01, rounds=60)
        drain(pair.client)
        drain(pair.exit)
    path = pair.client.paths[0]
    score = BestK.expected_delivery(path, now, pair.client.recovery.rto_value)
    return path.outbound.loss, path.own_outbound.loss, score, pair.exit.paths[0].data_recv


def test_replayed_genuine_copies_do_not_make_a_lossy_path_look_clean_to_best_k() -> None:
    """Review G3: the peer's loss figure counts a genuine copy that comes on the path again as
    arrived (a resend there is no loss), so replayed copies read as arrivals: the lossy path
    showed no loss, and best-k, which ranked paths by that figure, would choose it. best-k
    now ranks by the sender's own measure, from the peer's `data received` (a frame once per
    path): the replay moves nothing it decides by."""
    honest, replayed = _lossy_path(replay=False), _lossy_path(replay=True)
    assert honest[0] > 0.2 and replayed[0] == 0.0  # the attack works on the peer's figure...
    assert honest[1] > 0.2  # ...the own measure sees the loss (a bias to more, not less)...
    assert replayed[1:] == honest[1:]  # ...and the replay changed neither it nor best-k's score


# --- path challenges -------------------------------------------------------------------------


def test_challenge_is_answered_at_once_with_its_token() -> None:
    pair = Pair(paths=2)
    now = pair.connect()
    token = (1 << 62) + 12345
    samples = pair.exit.paths[1].rtt.samples
    frame = pair.exit.challenge_frame(1, token, now + 0.1)
    assert frame is not None
    pair.client.transmit(now + 0.1)  # nothing due right now
    counted = pair.client.paths[1].peer_ts_recv
    pair.client.paths[1].data_recv += 7  # (as if DATA had come since: a token is no `ts`)
    pair.client.receive_frame(frame, now + 0.11, 1)
    assert pair.client.paths[1].peer_ts_recv == counted
    out = pair.client.transmit(now + 0.11)
    answer = [a for a in pair.acks(pair.client, out.get(1, [])) if a.path_id == 1]
    assert answer and answer[0].echo_ts_us == token
    assert answer[0].echo_recv is None  # `echo recv` belongs to a timestamp, not a token
    logged = list(pair.exit.paths[1].ack_log)
    assert logged
    assert pair.exit.receive_frame(out[1][-1], now + 0.12, None) == 1
    assert pair.exit.paths[1].peer_echo_us == token
    assert pair.exit.paths[1].rtt.samples == samples  # the token's echo is no RTT sample
    # nor one of our timestamps: our log of them stays for the next echo (it emptied it, and
    # the next echo found nothing: no RTT sample, no loss measure for a round)
    assert list(pair.exit.paths[1].ack_log) == logged


# --- stateless reset ------------------------------------------------------------------------


def test_reset_with_the_right_token_ends_the_client_session() -> None:
    pair = Pair(paths=1)
    now = pair.connect()
    sid = pair.client.session_id
    wrong = wire.encode_reset(reset_token(bytes(32), sid), sid, 0)
    pair.client.receive_frame(wrong, now, 0)
    assert pair.client.closed_event is None and pair.client.bad_frames == 1
    right = wire.encode_reset(reset_token(PSK, sid), sid, 0)
    assert len(right) == wire.RESET_SIZE == 28
    pair.exit.receive_frame(right, now, 0)  # the exit never accepts one
    assert pair.exit.closed_event is None
    pair.client.receive_frame(right, now, 0)
    events = drain(pair.client)
    assert events[-1] == SessionClosed(
        wire.CloseCode.UNKNOWN_SESSION,
        "the exit no longer knows this session (it restarted or dropped it)",
        by_peer=True,
    )
    assert kinds(pair.client.transmit(now).get(0, [])) == []  # a reset is not answered


# --- the address book -------------------------------------------------------------------------


def _token_counter() -> object:
    counter = iter(range(1 << 62, (1 << 62) + 10_000))
    return lambda: next(counter)


def test_first_address_is_a_candidate_with_a_budget_until_it_echoes() -> None:
    book: PathAddresses[str] = PathAddresses(_token_counter())  # type: ignore[arg-type]
    assert book.heard(1, "a", 1200, 0, T0) is Verdict.CHALLENGE
    token = book.challenge(1, "a", T0)
    assert book.spend(1, "a", 100)
    addr, frames = book.route(1, [b"x" * 1000] * 5)
    assert addr == "a" and len(frames) == 3  # 3600 - 100 left: three 1000-byte frames
    assert book.heard(1, "a", 80, 0, T0 + 0.001) is Verdict.WAIT
    assert book.heard(1, "a", 80, token, T0 + 0.002) is Verdict.VALIDATED
    assert book.route(1, [b"y"] * 100) == ("a", [b"y"] * 100)


def test_a_candidate_never_replaces_a_validated_address_without_echo() -> None:
    book: PathAddresses[str] = PathAddresses(_token_counter())  # type: ignore[arg-type]
    book.heard(1, "home", 100, 0, T0)
    book.heard(1, "home", 100, book.challenge(1, "home", T0), T0)
    assert book.validated == {1: "home"}
    for i in range(10):
        verdict = book.heard(1, "evil", 80, 0, T0 + i)
        assert verdict is Verdict.CHALLENGE
        book.challenge(1, "evil", T0 + i)
        assert book.route(1, [b"data"]) == ("home", [b"data"])
    # A genuine move: the new address echoes the token sent to it.
    book.heard(1, "new", 80, 0, T0 + 20)
    token = book.challenge(1, "new", T0 + 20)
    assert book.heard(1, "new", 80, token, T0 + 20.05) is Verdict.VALIDATED
    assert book.route(1, [b"d"]) == ("new", [b"d"])
    assert book.path_of("evil") is None  # the other candidates are gone


def test_candidates_per_path_are_bounded() -> None:
    book: PathAddresses[int] = PathAddresses()
    for addr in range(100):
        book.heard(1, addr, 80, 0, T0)
    assert sum(book.path_of(a) == 1 for a in range(100)) == MAX_CANDIDATES


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["heard", "challenge", "route", "spend"]),
            st.integers(1, 3),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 1500),
        ),
        max_size=60,
    )
)
def test_unvalidated_addresses_never_get_more_than_three_times(ops: list) -> None:
    """Property: whatever the order of events, bytes sent to an address that never echoed a
    challenge stay within AMPLIFICATION x the bytes it sent."""
    book: PathAddresses[str] = PathAddresses(_token_counter())  # type: ignore[arg-type]
    received: dict[str, int] = {}
    sent: dict[str, int] = {}
    now = T0
    for op, pid, addr, size in ops:
        now += 0.05
        if op == "heard":
            book.heard(pid, addr, size, 0, now)  # never the right echo
            received[addr] = received.get(addr, 0) + size
        elif op == "challenge" and book.path_of(addr) == pid:
            book.challenge(pid, addr, now)
        elif op == "spend" and book.spend(pid, addr, size):
            sent[addr] = sent.get(addr, 0) + size
        elif op == "route":
            to, frames = book.route(pid, [b"z" * size] * 3)
            if to is not None:
                sent[to] = sent.get(to, 0) + sum(map(len, frames))
    assert not book.validated
    for addr, total in sent.items():
        assert total <= AMPLIFICATION * received.get(addr, 0), (addr, total, received)
