"""Handshake: keys agree, a wrong PSK gets no answer, stale and replayed HELLOs are refused."""

from __future__ import annotations

import pytest

from dupsession.core import wire
from dupsession.core.handshake import (
    MAX_CLOCK_SKEW,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
    SessionKeys,
    auth_key,
    replay_expiry,
)

PSK = bytes(range(32))
WRONG_PSK = bytes(range(1, 33))
NOW = 1_800_000_000.0
TARGET = "127.0.0.1:22"


def complete(
    client: ClientHandshake, server: ServerHandshake, path_id: int = 0, now: float = NOW
) -> tuple[SessionKeys, SessionKeys]:
    """(client's keys, exit's keys) after one HELLO/WELCOME exchange on `path_id`."""
    hello_frame = client.hello_frame(path_id)
    hello = server.verify_hello(hello_frame, now)
    accepted = server.accept(hello, now)
    welcome = accepted.welcome_frame(server.auth, path_id, hello_frame[-wire.TAG_SIZE :])
    answer, keys = client.accept(path_id, welcome)
    assert answer.status == wire.WelcomeStatus.OK
    assert keys is not None
    return keys, accepted.keys


def test_keys_agree() -> None:
    client_keys, exit_keys = complete(ClientHandshake(PSK, TARGET, NOW), ServerHandshake(PSK))
    assert client_keys == exit_keys
    assert client_keys.client_to_exit != client_keys.exit_to_client
    assert len(client_keys.client_to_exit) == len(client_keys.exit_to_client) == 32
    assert PSK not in (client_keys.client_to_exit, client_keys.exit_to_client)


def test_hello_carries_what_the_exit_needs() -> None:
    client = ClientHandshake(PSK, TARGET, NOW)
    hello = ServerHandshake(PSK).verify_hello(client.hello_frame(3), NOW)
    assert (hello.path_id, hello.session_id, hello.target) == (3, client.session_id, TARGET)
    assert hello.unix_ms == int(NOW * 1000)


def test_every_path_gets_the_same_session() -> None:
    """HELLO copies on several paths are one session: the exit answers each, keys agree."""
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    frames = {pid: client.hello_frame(pid) for pid in range(3)}
    assert len(set(frames.values())) == 3  # the path id is inside the tag
    hello = server.verify_hello(frames[0], NOW)
    accepted = server.accept(hello, NOW)
    for pid, frame in frames.items():
        again = server.verify_hello(frame, NOW)  # a copy, not a replay
        assert again.session_id == hello.session_id
        welcome = accepted.welcome_frame(server.auth, pid, frame[-wire.TAG_SIZE :])
        _, keys = client.accept(pid, welcome)
        assert keys == accepted.keys


def test_wrong_psk_gets_no_answer() -> None:
    """A HELLO that fails its tag is a FrameError: the exit has nothing it may answer."""
    client = ClientHandshake(WRONG_PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    with pytest.raises(wire.FrameError):
        server.verify_hello(client.hello_frame(0), NOW)
    # the same server still serves the right PSK: the failure left no state behind
    complete(ClientHandshake(PSK, TARGET, NOW), server)


def test_welcome_under_wrong_psk_rejected() -> None:
    client = ClientHandshake(PSK, TARGET, NOW)
    rogue = ServerHandshake(WRONG_PSK)
    hello = ServerHandshake(PSK).verify_hello(client.hello_frame(0), NOW)
    accepted = rogue.accept(hello, NOW)
    welcome = accepted.welcome_frame(rogue.auth, 0, client.hello_frame(0)[-wire.TAG_SIZE :])
    with pytest.raises(wire.FrameError):
        client.accept(0, welcome)


def test_welcome_for_another_hello_rejected() -> None:
    """A WELCOME is bound to the HELLO it answers: not to another path's, nor another client's."""
    client = ClientHandshake(PSK, TARGET, NOW)
    other = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    accepted = server.accept(server.verify_hello(client.hello_frame(0), NOW), NOW)
    welcome = accepted.welcome_frame(server.auth, 0, client.hello_frame(0)[-wire.TAG_SIZE :])
    with pytest.raises(wire.FrameError):
        client.accept(1, welcome)
    with pytest.raises(wire.FrameError):
        other.accept(0, welcome)
    client.accept(0, welcome)  # the control


@pytest.mark.parametrize("skew", [-MAX_CLOCK_SKEW - 1, MAX_CLOCK_SKEW + 1, -3600.0, 86400.0])
def test_stale_or_future_timestamp_refused(skew: float) -> None:
    client = ClientHandshake(PSK, TARGET, NOW + skew)
    with pytest.raises(HandshakeError, match="clock skew"):
        ServerHandshake(PSK).verify_hello(client.hello_frame(0), NOW)


@pytest.mark.parametrize("skew", [-MAX_CLOCK_SKEW + 1, 0.0, MAX_CLOCK_SKEW - 1])
def test_timestamp_within_skew_accepted(skew: float) -> None:
    client = ClientHandshake(PSK, TARGET, NOW + skew)
    assert ServerHandshake(PSK).verify_hello(client.hello_frame(0), NOW).target == TARGET


def test_replayed_nonce_refused() -> None:
    """A nonce already used by one session is refused for any other session."""
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    server.accept(server.verify_hello(client.hello_frame(0), NOW), NOW)
    forged = wire.Hello(
        0,
        b"another!",
        client.hello.client_nonce,
        client.hello.unix_ms,
        client.hello.client_public,
        TARGET,
    )
    with pytest.raises(HandshakeError, match="replayed"):
        server.verify_hello(wire.encode_hello(auth_key(PSK), forged), NOW + 1)


def test_clock_ahead_hello_is_remembered_until_it_expires() -> None:
    """Review A11: a client 110 s ahead makes a HELLO valid until accept + 230 s; its nonce
    must be remembered that long (it was forgotten at accept + 120 s, and the same HELLO
    then opened a session again)."""
    client = ClientHandshake(PSK, TARGET, NOW + 110)
    server = ServerHandshake(PSK, max_nonces=1)  # every check purges expired nonces
    frame = client.hello_frame(0)
    server.accept(server.verify_hello(frame, NOW), NOW)
    assert replay_expiry(client.hello, NOW) == NOW + 110 + MAX_CLOCK_SKEW
    for later in (125.0, 229.0):
        hello = server.verify_hello(frame, NOW + later)  # still inside its skew window...
        assert server.seen(hello)  # ...and still known: the exit refuses it as a replay
    with pytest.raises(HandshakeError, match="clock skew"):
        server.verify_hello(frame, NOW + 231)


def test_captured_hello_refused_once_its_window_passes() -> None:
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    frame = client.hello_frame(0)
    server.accept(server.verify_hello(frame, NOW), NOW)
    with pytest.raises(HandshakeError):
        server.verify_hello(frame, NOW + MAX_CLOCK_SKEW + 1)


def test_nonce_cache_is_bounded() -> None:
    server = ServerHandshake(PSK, max_nonces=4)
    for _ in range(4):
        client = ClientHandshake(PSK, TARGET, NOW)
        server.accept(server.verify_hello(client.hello_frame(0), NOW), NOW)
    late = ClientHandshake(PSK, TARGET, NOW)
    with pytest.raises(HandshakeError, match="too many"):
        server.accept(server.verify_hello(late.hello_frame(0), NOW), NOW)
    # once the window has passed the old nonces expire and handshakes work again
    later = NOW + MAX_CLOCK_SKEW + 1
    fresh = ClientHandshake(PSK, TARGET, later)
    complete(fresh, server, now=later)


def test_two_handshakes_with_one_psk_give_different_keys() -> None:
    server = ServerHandshake(PSK)
    first, _ = complete(ClientHandshake(PSK, TARGET, NOW), server)
    second, _ = complete(ClientHandshake(PSK, TARGET, NOW), server)
    assert first.client_to_exit != second.client_to_exit
    assert first.exit_to_client != second.exit_to_client


def test_refusal_gives_no_keys() -> None:
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    frame = client.hello_frame(2)
    hello = server.verify_hello(frame, NOW)
    refusal = server.refusal_frame(frame, hello, wire.WelcomeStatus.REFUSED, "not allowed")
    assert len(refusal) < len(frame)
    welcome, keys = client.accept(2, refusal)
    assert keys is None
    assert (welcome.status, welcome.reason) == (wire.WelcomeStatus.REFUSED, "not allowed")


def test_welcome_for_another_session_refused() -> None:
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    frame = client.hello_frame(0)
    welcome = wire.Welcome(0, b"someone!", wire.WelcomeStatus.OK, bytes(16), bytes(32), "")
    with pytest.raises(HandshakeError, match="another session"):
        client.accept(0, wire.encode_welcome(server.auth, frame[-wire.TAG_SIZE :], welcome))


def test_low_order_public_key_refused() -> None:
    """An all-zero X25519 key would make the shared secret zero: both sides refuse it."""
    client = ClientHandshake(PSK, TARGET, NOW)
    server = ServerHandshake(PSK)
    h = client.hello
    bad = wire.Hello(0, h.session_id, h.client_nonce, h.unix_ms, bytes(32), TARGET)
    hello = server.verify_hello(wire.encode_hello(server.auth, bad), NOW)
    with pytest.raises(HandshakeError):
        server.accept(hello, NOW)
    frame = client.hello_frame(0)
    welcome = wire.Welcome(0, h.session_id, wire.WelcomeStatus.OK, bytes(16), bytes(32), "")
    with pytest.raises(HandshakeError):
        client.accept(0, wire.encode_welcome(server.auth, frame[-wire.TAG_SIZE :], welcome))


def test_psk_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        auth_key(b"short")
    with pytest.raises(ValueError):
        ClientHandshake(b"x" * 31, TARGET, NOW)
