"""Frame codec: round trips, truncation, bit flips, cross-session and reflected frames, sizes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from dupsession.core import wire
from dupsession.core.events import StreamData
from dupsession.core.handshake import SessionKeys, auth_key
from dupsession.core.session import Role, Session

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SID = b"\x01\x02\x03\x04\x05\x06\x07\x08"
PSK = bytes(32)


def sample_ack(ranges: tuple[tuple[int, int], ...] = ((12, 14), (20, 21))) -> wire.Ack:
    return wire.Ack(
        path_id=3,
        pseq=7,
        ts_us=123_456_789,
        echo_ts_us=123_000_000,
        echo_delay_us=4000,
        data_sent=99,
        data_recv=98,
        cumulative=10,
        window_end=8202,
        ranges=ranges,
        lag_us=1500,
        first=77,
        loss_bp=250,
    )


def sample_hello(target: str = "127.0.0.1:22") -> wire.Hello:
    return wire.Hello(2, SID, b"n" * 16, 1_800_000_000_000, b"p" * 32, target)


def valid_frames() -> dict[str, bytes]:
    """One valid frame of each authenticated type, sealed with KEY (HELLO: the PSK's auth key)."""
    return {
        "data": wire.encode_data(KEY, SID, 5, b"hello", fin=False),
        "data-fin-empty": wire.encode_data(KEY, SID, 6, b"", fin=True),
        "ack": wire.encode_ack(KEY, SID, sample_ack()),
        "ack-echo-recv": wire.encode_ack(KEY, SID, replace(sample_ack(), echo_recv=97)),
        "close": wire.encode_close(KEY, SID, 1, wire.CloseCode.TIMEOUT, "gone"),
        "hello": wire.encode_hello(auth_key(PSK), sample_hello()),
    }


def decode_any(key: bytes, frame: bytes) -> object:
    """The full receive pipeline for one frame: verify its tag, then decode by type."""
    body = wire.verify(key, frame)
    ftype = wire.peek_prefix(frame).type
    if ftype == wire.FrameType.DATA:
        return wire.decode_data(body)
    if ftype == wire.FrameType.ACK:
        return wire.decode_ack(body)
    if ftype == wire.FrameType.CLOSE:
        return wire.decode_close(body)
    if ftype == wire.FrameType.HELLO:
        return wire.decode_hello(body)
    raise wire.FrameError(f"type {ftype}")


def key_for(name: str) -> bytes:
    return auth_key(PSK) if name == "hello" else KEY


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "payload", "fin"),
    [
        (0, b"", False),
        (1, b"x", True),
        (2**64 - 1, b"\x00\xff" * 7, False),
        (42, bytes(range(256)) * 4 + b"tail", True),
        (7, b"m" * wire.MAX_DATAGRAM_PAYLOAD, False),
        (8, b"s" * wire.MAX_STREAM_PAYLOAD, True),
    ],
)
def test_data_round_trip(seq: int, payload: bytes, fin: bool) -> None:
    frame = wire.encode_data(KEY, SID, seq, payload, fin)
    prefix = wire.peek_prefix(frame)
    assert prefix.version == wire.VERSION
    assert (prefix.type, prefix.session_id) == (wire.FrameType.DATA, SID)
    assert wire.data_seq(frame) == seq
    assert wire.decode_data(wire.verify(KEY, frame)) == (seq, fin, payload)
    assert len(frame) == wire.DATA_HEADER.size + len(payload) + wire.TAG_SIZE


def test_data_frame_fits_its_path() -> None:
    datagram = wire.encode_data(KEY, SID, 0, b"d" * wire.MAX_DATAGRAM_PAYLOAD, fin=True)
    stream = wire.encode_data(KEY, SID, 0, b"s" * wire.MAX_STREAM_PAYLOAD, fin=True)
    assert len(datagram) == wire.MAX_DATAGRAM_FRAME
    assert len(stream) <= wire.MAX_STREAM_FRAME


def test_data_copies_are_byte_identical() -> None:
    """Nothing per-path or per-time in DATA: any copy verifies and the first one wins."""
    first, second = (wire.encode_data(KEY, SID, 9, b"abc", True) for _ in range(2))
    assert first == second


@pytest.mark.parametrize(
    "ranges",
    [
        (),
        ((11, 12),),
        ((12, 14), (20, 21)),
        tuple((10 + 3 * i + 1, 10 + 3 * i + 3) for i in range(wire.MAX_ACK_RANGES)),
    ],
)
def test_ack_round_trip(ranges: tuple[tuple[int, int], ...]) -> None:
    ack = sample_ack(ranges)
    frame = wire.encode_ack(KEY, SID, ack)
    assert wire.peek_prefix(frame).path_id == 3
    assert wire.decode_ack(wire.verify(KEY, frame)) == ack


def test_ack_keeps_only_the_lowest_ranges_that_fit() -> None:
    ranges = tuple((10 + 3 * i + 1, 10 + 3 * i + 2) for i in range(wire.MAX_ACK_RANGES + 5))
    decoded = wire.decode_ack(wire.verify(KEY, wire.encode_ack(KEY, SID, sample_ack(ranges))))
    assert decoded.ranges == ranges[: wire.MAX_ACK_RANGES]


def test_ack_counters_wrap_and_saturate() -> None:
    ack = wire.Ack(
        path_id=0,
        pseq=2**32 + 5,
        ts_us=1,
        echo_ts_us=0,
        echo_delay_us=2**40,
        data_sent=2**32 + 1,
        data_recv=2**33 + 2,
        cumulative=0,
        window_end=1,
        lag_us=2**40,
        first=2**32 + 3,
        loss_bp=10**6,
    )
    decoded = wire.decode_ack(wire.verify(KEY, wire.encode_ack(KEY, SID, ack)))
    assert (decoded.pseq, decoded.data_sent, decoded.data_recv, decoded.first) == (5, 1, 2, 3)
    assert decoded.echo_delay_us == decoded.lag_us == 0xFFFFFFFF
    assert decoded.loss_bp == 10000


def resealed_ack(patch: Callable[[bytearray], None]) -> bytes:
    """A valid ACK (two ranges) whose body `patch` edits, sealed again: only the decoder judges."""
    body = bytearray(wire.verify(KEY, wire.encode_ack(KEY, SID, sample_ack())))
    patch(body)
    return wire.seal(KEY, bytes(body))


@pytest.mark.parametrize(("start", "length"), [(0, 1), (1, 0), (0, 0)])
def test_ack_with_empty_range_rejected(start: int, length: int) -> None:
    """A well-tagged ACK whose range is empty or starts at the cumulative point is malformed."""

    def patch(body: bytearray) -> None:
        wire.RANGE.pack_into(body, wire.ACK_FIXED.size, start, length)

    with pytest.raises(wire.FrameError, match="range"):
        wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))


def test_every_paths_copy_of_an_ack_decodes_to_the_same_runs() -> None:
    """Copies of one ACK on other paths (their own path, counter, timestamps) share the
    first copy's decoded runs: decoded once (13 us of 32 runs each), and `Sender.on_ack`
    knows the repeat by one comparison. A malformed copy is still refused after them."""
    ranges = tuple((10 + 3 * i + 1, 10 + 3 * i + 3) for i in range(wire.MAX_ACK_RANGES))
    copies = (sample_ack(ranges), replace(sample_ack(ranges), path_id=4, pseq=8, ts_us=5))
    first, second = (
        wire.decode_ack(wire.verify(KEY, wire.encode_ack(KEY, SID, ack))) for ack in copies
    )
    assert first.ranges == ranges and second.ranges is first.ranges
    assert (second.path_id, second.pseq, second.ts_us) == (4, 8, 5)

    def patch(body: bytearray) -> None:  # its second run empty
        wire.RANGE.pack_into(body, wire.ACK_FIXED.size + wire.RANGE.size, 4, 0)

    with pytest.raises(wire.FrameError, match="range"):
        wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))
    decoded = wire.decode_ack(wire.verify(KEY, wire.encode_ack(KEY, SID, sample_ack())))
    assert decoded.ranges == ((12, 14), (20, 21))


def test_ack_with_too_many_ranges_rejected() -> None:
    extra = wire.MAX_ACK_RANGES - 1  # sample_ack has 2 ranges: make it MAX + 1

    def patch(body: bytearray) -> None:
        body[wire.ACK_FIXED.size - 1] = wire.MAX_ACK_RANGES + 1
        at = wire.ACK_FIXED.size + 2 * wire.RANGE.size
        body[at:at] = b"".join(wire.RANGE.pack(100 + 2 * i, 1) for i in range(extra))

    with pytest.raises(wire.FrameError):
        wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))


@pytest.mark.parametrize("echo_recv", [0, 95, 2**32 + 95])
def test_ack_echo_recv_round_trips_behind_its_flag(echo_recv: int) -> None:
    """`echo recv` rides after the tail only with its flag: four bytes more, wrapping like the
    other counters, and an ACK without it is byte for byte the old one."""
    plain = wire.encode_ack(KEY, SID, sample_ack())
    frame = wire.encode_ack(KEY, SID, replace(sample_ack(), echo_recv=echo_recv))
    assert len(frame) == len(plain) + wire.ECHO_RECV.size
    assert frame[2] == wire.AckFlags.ECHO_RECV and plain[2] == 0
    decoded = wire.decode_ack(wire.verify(KEY, frame))
    assert decoded == replace(sample_ack(), echo_recv=echo_recv & 0xFFFFFFFF)
    assert wire.decode_ack(wire.verify(KEY, plain)).echo_recv is None


def test_ack_echo_recv_flag_must_match_length() -> None:
    """The flag without the four bytes, or the bytes without the flag, is a broken ACK (what
    an end that does not know the flag makes of a longer ACK: why it is negotiated)."""

    def flag_only(body: bytearray) -> None:
        body[2] |= wire.AckFlags.ECHO_RECV

    def bytes_only(body: bytearray) -> None:
        body += bytes(wire.ECHO_RECV.size)

    for patch in (flag_only, bytes_only):
        with pytest.raises(wire.FrameError, match="length"):
            wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))


def test_ack_with_loss_above_100_percent_rejected() -> None:
    def patch(body: bytearray) -> None:
        body[-2:] = (10001).to_bytes(2, "big")  # loss_bp closes the body

    with pytest.raises(wire.FrameError, match="loss"):
        wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))


def test_ack_range_count_must_match_length() -> None:
    def patch(body: bytearray) -> None:
        body[wire.ACK_FIXED.size - 1] = 3  # claims three ranges, carries two

    with pytest.raises(wire.FrameError, match="length"):
        wire.decode_ack(wire.verify(KEY, resealed_ack(patch)))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("", ""),
        ("target said no", "target said no"),
        ("ünïcödé ✓", "ünïcödé ✓"),
        ("r" * 500, "r" * wire.MAX_REASON),
    ],
)
def test_close_round_trip(reason: str, expected: str) -> None:
    frame = wire.encode_close(KEY, SID, 2, wire.CloseCode.SHUTDOWN, reason)
    assert wire.peek_prefix(frame).path_id == 2
    assert wire.decode_close(wire.verify(KEY, frame)) == (wire.CloseCode.SHUTDOWN, expected)


def test_close_reason_cut_inside_a_character_still_decodes() -> None:
    reason_in = "a" + "é" * wire.MAX_REASON  # the byte cut lands inside an "é"
    frame = wire.encode_close(KEY, SID, 0, wire.CloseCode.NORMAL, reason_in)
    code, reason = wire.decode_close(wire.verify(KEY, frame))
    assert code == wire.CloseCode.NORMAL
    assert reason == "a" + "é" * (wire.MAX_REASON // 2 - 1) + "\ufffd"


@pytest.mark.parametrize("target", ["", "127.0.0.1:22", "vnc.example:5901", "t" * 255])
def test_hello_round_trip(target: str) -> None:
    hello = sample_hello(target)
    frame = wire.encode_hello(auth_key(PSK), hello)
    assert len(frame) == wire.HELLO_SIZE
    assert wire.decode_hello(wire.verify(auth_key(PSK), frame)) == hello


def test_hello_target_limits() -> None:
    with pytest.raises(ValueError, match="too long"):
        wire.encode_hello(auth_key(PSK), sample_hello("t" * 256))
    body = bytearray(wire.verify(auth_key(PSK), wire.encode_hello(auth_key(PSK), sample_hello())))
    body[wire.HELLO_FIXED.size] = 0xFF  # not UTF-8
    with pytest.raises(wire.FrameError, match="UTF-8"):
        wire.decode_hello(wire.verify(auth_key(PSK), wire.seal(auth_key(PSK), bytes(body))))


@pytest.mark.parametrize("status", list(wire.WelcomeStatus))
def test_welcome_round_trip(status: wire.WelcomeStatus) -> None:
    hello_tag = b"h" * wire.TAG_SIZE
    welcome = wire.Welcome(4, SID, status, b"s" * 16, b"k" * 32, "" if status == 0 else "no")
    frame = wire.encode_welcome(KEY, hello_tag, welcome)
    assert wire.verify_welcome(KEY, hello_tag, frame) == welcome


def test_welcome_is_bound_to_its_hello() -> None:
    welcome = wire.Welcome(0, SID, wire.WelcomeStatus.OK, b"s" * 16, b"k" * 32, "")
    frame = wire.encode_welcome(KEY, b"a" * wire.TAG_SIZE, welcome)
    with pytest.raises(wire.FrameError):
        wire.verify_welcome(KEY, b"b" * wire.TAG_SIZE, frame)
    with pytest.raises(wire.FrameError):
        wire.verify_welcome(OTHER_KEY, b"a" * wire.TAG_SIZE, frame)


def test_prefix_checks() -> None:
    frame = wire.encode_data(KEY, SID, 1, b"x", fin=False)
    with pytest.raises(wire.FrameError, match="version"):
        wire.peek_prefix(b"\x02" + frame[1:])
    with pytest.raises(wire.FrameError):
        wire.peek_prefix(frame[: wire.PREFIX.size + wire.TAG_SIZE - 1])
    with pytest.raises(wire.FrameError):
        wire.data_seq(frame[: wire.DATA_HEADER.size + wire.TAG_SIZE - 1])


# --- truncation and bit flips ------------------------------------------------------------


@pytest.mark.parametrize("name", ["data", "data-fin-empty", "ack", "close", "hello"])
def test_every_truncation_rejected(name: str) -> None:
    frame = valid_frames()[name]
    key = key_for(name)
    decode_any(key, frame)  # the whole frame is valid
    for cut in range(len(frame)):
        with pytest.raises(wire.FrameError):
            decode_any(key, frame[:cut])


@pytest.mark.parametrize("name", ["ack", "close", "hello"])
def test_every_truncated_body_rejected_by_its_decoder(name: str) -> None:
    """Length-carrying frames are rejected by the decoder too, not only by the tag."""
    frame = valid_frames()[name]
    body = bytes(wire.verify(key_for(name), frame))
    decode = {"ack": wire.decode_ack, "close": wire.decode_close, "hello": wire.decode_hello}[name]
    decode(memoryview(body))
    for cut in range(len(body)):
        with pytest.raises(wire.FrameError):
            decode(memoryview(body[:cut]))
    with pytest.raises(wire.FrameError):
        decode(memoryview(body + b"\x00"))  # trailing garbage


def test_every_truncated_welcome_rejected() -> None:
    hello_tag = b"h" * wire.TAG_SIZE
    welcome = wire.Welcome(0, SID, wire.WelcomeStatus.REFUSED, bytes(16), bytes(32), "nope")
    frame = wire.encode_welcome(KEY, hello_tag, welcome)
    for cut in range(len(frame)):
        with pytest.raises(wire.FrameError):
            wire.verify_welcome(KEY, hello_tag, frame[:cut])


def flip(frame: bytes, bit: int) -> bytes:
    data = bytearray(frame)
    data[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(data)


@pytest.mark.parametrize("name", ["data", "data-fin-empty", "ack", "close"])
def test_every_bit_flip_rejected(name: str) -> None:
    frame = valid_frames()[name]
    wire.verify(KEY, frame)
    for bit in range(len(frame) * 8):
        with pytest.raises(wire.FrameError):
            wire.verify(KEY, flip(frame, bit))


def test_every_bit_flip_of_a_welcome_rejected() -> None:
    hello_tag = b"h" * wire.TAG_SIZE
    welcome = wire.Welcome(0, SID, wire.WelcomeStatus.OK, b"s" * 16, b"k" * 32, "")
    frame = wire.encode_welcome(KEY, hello_tag, welcome)
    for bit in range(len(frame) * 8):
        with pytest.raises(wire.FrameError):
            wire.verify_welcome(KEY, hello_tag, flip(frame, bit))


# --- frames that verify only where they belong -----------------------------------------------


def keys(seed: int) -> SessionKeys:
    return SessionKeys(bytes([seed]) * 32, bytes([seed + 100]) * 32)


def open_session(role: Role, sid: bytes, session_keys: SessionKeys) -> Session:
    session = Session(role, sid, session_keys, 10.0)
    session.add_path(0, datagram=True, now=10.0)
    return session


def data_frames_of(session: Session, now: float) -> list[bytes]:
    frames = session.transmit(now)[0]
    return [f for f in frames if f[1] == wire.FrameType.DATA]


@pytest.mark.parametrize("same_id", [False, True])
def test_data_from_another_session_rejected(same_id: bool) -> None:
    """Keys differ per session (and per run), so its frames never verify elsewhere."""
    a_client = open_session(Role.CLIENT, SID, keys(1))
    b_exit = open_session(Role.EXIT, SID if same_id else b"B" * 8, keys(2))
    a_client.send(b"not for b")
    (frame,) = data_frames_of(a_client, 10.0)
    b_exit.receive_frame(frame, 10.01, 0)
    assert b_exit.next_event() is None
    assert b_exit.bad_frames == 1
    assert b_exit.receiver.cumulative == 0
    # the control: the right exit takes the very same frame
    a_exit = open_session(Role.EXIT, SID, keys(1))
    a_exit.receive_frame(frame, 10.01, 0)
    events = [a_exit.next_event() for _ in range(2)]
    assert StreamData(b"not for b") in events
    assert a_exit.bad_frames == 0


def test_reflected_frames_rejected() -> None:
    """A frame sealed exit->client and fed back to the exit never verifies: one key each way."""
    exit_ = open_session(Role.EXIT, SID, keys(3))
    exit_.send(b"echo me back")
    exit_.close_stream()
    reflected = exit_.transmit(10.0)[0]  # DATA (with FIN) and a probe ACK
    assert {f[1] for f in reflected} == {wire.FrameType.DATA, wire.FrameType.ACK}
    for frame in reflected:
        exit_.receive_frame(frame, 10.05, 0)
    assert exit_.next_event() is None
    assert exit_.bad_frames == len(reflected)
    assert exit_.sender.acked_below == 0  # the reflected ACK acked nothing
    assert exit_.paths[0].acks_received == 0
    # and a reflected CLOSE does not close it
    closing = open_session(Role.EXIT, SID, keys(3))
    closing.abort(wire.CloseCode.SHUTDOWN, "bye", 10.0)
    (close,) = closing.transmit(10.0)[0]
    exit_.receive_frame(close, 10.1, 0)
    assert exit_.closed_event is None
    assert exit_.bad_frames == len(reflected) + 1


# --- no amplification ----------------------------------------------------------------------


def test_hello_is_exactly_hello_size() -> None:
    for target in ("", "x" * 255):
        assert len(wire.encode_hello(auth_key(PSK), sample_hello(target))) == wire.HELLO_SIZE


@pytest.mark.parametrize("status", list(wire.WelcomeStatus))
def test_every_welcome_is_smaller_than_hello(status: wire.WelcomeStatus) -> None:
    longest = "é" * wire.MAX_REASON  # 2 bytes each: cut to MAX_REASON bytes on the wire
    for reason in ("", "r" * wire.MAX_REASON, longest, "r" * 10_000):
        welcome = wire.Welcome(255, SID, status, b"\xff" * 16, b"\xff" * 32, reason)
        frame = wire.encode_welcome(KEY, b"h" * wire.TAG_SIZE, welcome)
        assert len(frame) < wire.HELLO_SIZE
        assert len(frame) <= wire.WELCOME_FIXED.size + wire.MAX_REASON + wire.TAG_SIZE
