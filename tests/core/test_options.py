"""Handshake options: the TLV area in HELLO and WELCOME, the unknown-option rule, and the
encryption/compression agreement that makes a downgrade impossible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import negotiate, wire
from dupsession.core.handshake import ClientHandshake, HandshakeError, ServerHandshake, auth_key
from dupsession.core.negotiate import Compress, Features

PSK = bytes(range(32))
NOW = 1_800_000_000.0
SID = b"S" * 8
TAG = b"h" * wire.TAG_SIZE
#: The base protocol: what an end runs with a peer that answered none of its options.
BASE = Features(echo_recv=False)

option_lists = st.dictionaries(st.integers(1, 255), st.binary(max_size=40), max_size=8).map(
    lambda d: tuple(d.items())
)


# No per-example deadline: the bodies take 0-11 ms, but one stall of the shared VM
# (100+ ms seen beside other work) would fail the run as Flaky (review L16).
@settings(deadline=None)
@given(option_lists, st.text(max_size=60))
def test_hello_options_round_trip_and_size(options: wire.Options, target: str) -> None:
    hello = wire.Hello(1, SID, b"n" * 16, 1, b"p" * 32, target, options)
    try:
        frame = wire.encode_hello(auth_key(PSK), hello)
    except ValueError:
        return  # target over 255 bytes
    assert len(frame) == wire.HELLO_SIZE
    assert wire.decode_hello(wire.verify(auth_key(PSK), frame)) == hello


@settings(deadline=None)
@given(option_lists, st.text(max_size=300))
def test_welcome_options_round_trip_and_stay_smaller_than_hello(
    options: wire.Options, reason: str
) -> None:
    welcome = wire.Welcome(1, SID, 0, b"s" * 16, b"k" * 32, reason, options)
    frame = wire.encode_welcome(auth_key(PSK), TAG, welcome)
    assert len(frame) < wire.HELLO_SIZE
    got = wire.verify_welcome(auth_key(PSK), TAG, frame)
    assert got.options == options
    assert got.reason == reason.encode()[: wire.MAX_REASON].decode(errors="replace")


def test_largest_welcome_is_smaller_than_hello() -> None:
    biggest = tuple((t, bytes(255)) for t in range(1, 3))  # 514 bytes: over the limit
    with pytest.raises(ValueError, match="too long"):
        wire.encode_welcome(
            auth_key(PSK), TAG, wire.Welcome(1, SID, 0, bytes(16), bytes(32), "", biggest)
        )
    fits = ((1, bytes(255)), (2, bytes(253)))  # exactly MAX_WELCOME_OPTIONS
    welcome = wire.Welcome(1, SID, 0, bytes(16), bytes(32), "r" * 300, fits)
    assert len(wire.encode_welcome(auth_key(PSK), TAG, welcome)) < wire.HELLO_SIZE


def test_hello_options_that_do_not_fit_are_refused() -> None:
    many = tuple((t, bytes(255)) for t in range(1, 6))
    with pytest.raises(ValueError, match="too long"):
        wire.encode_hello(auth_key(PSK), wire.Hello(1, SID, bytes(16), 1, bytes(32), "", many))


@pytest.mark.parametrize(
    ("data", "padded"),
    [
        (b"\x01\x02\x00", True),  # value runs past the end
        (b"\x01", True),  # no length byte
        (b"\x01\x00\x01\x00", True),  # a type twice
        (b"\x01\x00\x00\x00\x07", True),  # non-zero bytes in the padding
        (b"\x01\x00\x00", False),  # padding where none is allowed (WELCOME)
    ],
)
def test_malformed_options_are_frame_errors(data: bytes, padded: bool) -> None:
    with pytest.raises(wire.FrameError):
        wire.decode_options(data, padded)


def test_encoder_refuses_repeated_or_reserved_types() -> None:
    for bad in (((1, b""), (1, b"")), ((0, b""),), ((300, b""),), ((1, bytes(256)),)):
        with pytest.raises(ValueError):
            wire.encode_options(bad)


def handshake(
    client_options: wire.Options, exit_answer: wire.Options | None = None
) -> tuple[ClientHandshake, wire.Hello, bytes]:
    """(client, the HELLO the exit decoded, the WELCOME frame answering it with `exit_answer`)."""
    client = ClientHandshake(PSK, "h:1", NOW, client_options)
    server = ServerHandshake(PSK)
    frame = client.hello_frame(0)
    hello = server.verify_hello(frame, NOW)
    if exit_answer is None:
        exit_answer, _ = negotiate.answer(hello.options)
    accepted = server.accept(hello, NOW, exit_answer)
    return client, hello, accepted.welcome_frame(server.auth, 0, frame[-wire.TAG_SIZE :])


def test_options_travel_in_both_directions() -> None:
    offered = ((7, b"seven"), (200, b""))
    client, hello, welcome_frame = handshake(offered, ((9, b"nine"),))
    assert hello.options == offered
    welcome, keys = client.accept(0, welcome_frame)
    assert keys is not None and welcome.options == ((9, b"nine"),)


def test_unknown_critical_option_from_the_exit_fails_the_handshake() -> None:
    """Rule: unknown types below 0x80 are ignored, unknown critical ones refuse."""
    client, _, ignored = handshake((), ((0x7F, b"x"),))
    assert client.accept(0, ignored)[1] is not None
    client, _, critical = handshake((), ((0x80, b"x"),))
    with pytest.raises(HandshakeError, match="unknown handshake option"):
        client.accept(0, critical)
    assert wire.unknown_critical(((0x80, b""), (1, b""), (0xFF, b"")), set()) == [0x80, 0xFF]
    assert wire.unknown_critical(((0x80, b""),), {0x80}) == []


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("compress", list(Compress))
@pytest.mark.parametrize("jumbo", [False, True])
@pytest.mark.parametrize("echo_recv", [False, True])
def test_features_agree_at_both_ends(
    encrypt: bool, compress: Compress, jumbo: bool, echo_recv: bool
) -> None:
    wanted = Features(encrypt, compress, jumbo=jumbo, echo_recv=echo_recv)
    client, hello, welcome_frame = handshake(negotiate.offer(wanted))
    _, exit_features = negotiate.answer(hello.options)
    welcome, _ = client.accept(0, welcome_frame)
    assert negotiate.settle(wanted, welcome.options) == exit_features == wanted


def test_encryption_cannot_be_downgraded() -> None:
    """An exit that does not answer CIPHER (old, or a forged answer) is refused, never used in
    plaintext; a forged WELCOME without the option does not even verify."""
    wanted = Features(encrypt=True, echo_recv=False)  # (CIPHER the last option)
    client, _, stripped = handshake(negotiate.offer(wanted), exit_answer=())
    welcome, _ = client.accept(0, stripped)
    with pytest.raises(negotiate.NegotiationError, match="--no-encrypt"):
        negotiate.settle(wanted, welcome.options)
    # an on-path attacker editing the real WELCOME to drop the option breaks its tag
    client, _, real = handshake(negotiate.offer(wanted))
    body = real[: -wire.TAG_SIZE]
    assert body.endswith(bytes([wire.OptionType.CIPHER, 1, negotiate.CIPHER_CHACHA20]))
    forged = body[:-3] + real[-wire.TAG_SIZE :]
    with pytest.raises(wire.FrameError):
        client.accept(0, forged)


def test_answers_that_were_not_offered_are_refused() -> None:
    cipher = ((wire.OptionType.CIPHER, bytes([negotiate.CIPHER_CHACHA20])),)
    with pytest.raises(negotiate.NegotiationError, match="not offered"):
        negotiate.settle(Features(), cipher)
    zstd_on = ((wire.OptionType.COMPRESS, bytes([negotiate.COMPRESS_ZSTD, 1])),)
    with pytest.raises(negotiate.NegotiationError, match="not offered"):
        negotiate.settle(Features(compress=Compress.AUTO), zstd_on)


def test_exit_leaves_out_what_it_does_not_implement() -> None:
    options, features = negotiate.answer(
        ((wire.OptionType.CIPHER, b"\x09"), (wire.OptionType.COMPRESS, b"\x05\x01"))
    )
    assert options == () and features == BASE
    # and a client that wanted compression goes without it (compression is optional)
    assert negotiate.settle(Features(compress=Compress.ON), ()) == BASE


def test_the_per_frame_cipher_of_older_versions_is_refused_not_misread() -> None:
    """CIPHER 1 (per-frame nonces) and 2 (one keystream per direction) decrypt the same
    frame differently: an end that knows one of them never runs the other's offer."""
    assert negotiate.CIPHER_CHACHA20 == 2
    old_offer = ((wire.OptionType.CIPHER, b"\x01"),)
    assert negotiate.answer(old_offer) == ((), BASE)  # an old client then refuses
    with pytest.raises(negotiate.NegotiationError, match="not offered"):
        negotiate.settle(Features(encrypt=True), old_offer)  # an old exit's answer


def test_jumbo_frames_bind_both_ends_or_neither() -> None:
    """JUMBO is ordinary: an old exit ignores it and both ends keep 16 KiB stream frames (its
    absence from the answer tells the client); an answer nobody offered is refused."""
    wanted = Features(jumbo=True, echo_recv=False)
    assert negotiate.offer(wanted) == ((wire.OptionType.JUMBO, negotiate.JUMBO_STREAM),)
    assert negotiate.settle(wanted, ()) == BASE  # an exit that does not know it
    options, features = negotiate.answer(((wire.OptionType.JUMBO, b"\x07"),))
    assert options == () and features == BASE  # a value it does not know: no answer
    with pytest.raises(negotiate.NegotiationError, match="not offered"):
        negotiate.settle(Features(), ((wire.OptionType.JUMBO, negotiate.JUMBO_STREAM),))


def test_echo_recv_binds_both_ends_or_neither() -> None:
    """ECHO_RECV is on by default and ordinary: an old exit ignores it (and would take the
    longer ACKs for broken ones), so without its answer neither end sends them; an old client
    never offers it, so the exit sends it none; a value it does not know goes unanswered."""
    on = ((wire.OptionType.ECHO_RECV, negotiate.ECHO_RECV_ON),)
    assert negotiate.offer(Features()) == on
    assert negotiate.answer(on) == (on, Features())
    assert negotiate.settle(Features(), on) == Features()
    assert negotiate.settle(Features(), ()) == BASE  # an old exit
    assert negotiate.answer(()) == ((), BASE)  # an old client
    assert negotiate.answer(((wire.OptionType.ECHO_RECV, b"\x02"),)) == ((), BASE)
    with pytest.raises(negotiate.NegotiationError, match="not offered"):
        negotiate.settle(BASE, on)
