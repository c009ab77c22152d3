"""Payload encryption: standard ChaCha20 over each direction's byte stream, one nonce per
keystream segment and direction, encrypt-then-MAC, and no plaintext in any frame."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from dupsession.core import wire
from dupsession.core.events import StreamData
from dupsession.core.handshake import SessionKeys
from dupsession.core.negotiate import Compress, Features
from dupsession.core.paths import PathState
from dupsession.core.seal import CLIENT_TO_EXIT, EXIT_TO_CLIENT, StreamCipher, ciphers, nonce
from dupsession.core.session import Role, Session
from tests.support.session import data_frames, handshake

SECRET = b"known plaintext: the VNC password is hunter2 " * 40
T0 = 100.0


def keystream(key: bytes, label: bytes, segment: int, size: int) -> bytes:
    """`size` bytes of the RFC 8439 keystream of one segment (block counter from 0)."""
    iv = bytes(4) + nonce(label, segment)
    return Cipher(algorithms.ChaCha20(key, iv), None).encryptor().update(bytes(size))


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_it_is_exactly_chacha20_over_the_stream_however_it_is_written() -> None:
    """Byte p of the stream meets byte p of the keystream, whatever the write sizes were."""
    key = os.urandom(32)
    stream = os.urandom(40_000)
    expected = xor(stream, keystream(key, CLIENT_TO_EXIT, 0, len(stream)))
    for sizes in ((40_000,), (1, 63, 64, 1196, 16384), (7,) * 100):
        cipher, out, at = StreamCipher(key, CLIENT_TO_EXIT), [], 0
        while at < len(stream):
            for size in sizes:
                out.append(cipher.update(memoryview(stream)[at : at + size]))
                at += size
        assert b"".join(out) == expected
    assert StreamCipher(key, CLIENT_TO_EXIT).update(b"") == b""


def test_segments_move_to_the_next_nonce_at_their_boundary() -> None:
    """The block counter never wraps: every `segment_bytes` the nonce's segment number grows
    and the counter starts again from 0 (tried with 128-byte segments)."""
    key = os.urandom(32)
    stream = os.urandom(1000)
    expected_keystream = b"".join(keystream(key, EXIT_TO_CLIENT, n, 128) for n in range(8))
    for sizes in ((1000,), (100, 28, 300, 1, 127, 444), (128,) * 8):
        cipher, out, at = StreamCipher(key, EXIT_TO_CLIENT, segment_bytes=128), [], 0
        for size in sizes:
            out.append(cipher.update(stream[at : at + size]))
            at += size
        assert b"".join(out) == xor(stream, expected_keystream[: len(stream)])


def test_nonces_never_repeat_across_segments_or_directions() -> None:
    seen = {nonce(label, n) for label in (CLIENT_TO_EXIT, EXIT_TO_CLIENT) for n in range(500)}
    assert len(seen) == 1000
    with pytest.raises(ValueError, match="own key"):
        ciphers(bytes(32), bytes(32), CLIENT_TO_EXIT, EXIT_TO_CLIENT)
    with pytest.raises(ValueError, match="own key"):
        ciphers(bytes(32), b"\x01" * 32, CLIENT_TO_EXIT, CLIENT_TO_EXIT)
    with pytest.raises(ValueError, match="64-byte blocks"):
        StreamCipher(bytes(32), CLIENT_TO_EXIT, segment_bytes=100)


def pair(encrypt: bool, compress: Compress = Compress.OFF) -> tuple[Session, Session, SessionKeys]:
    sid, keys = handshake()
    features = Features(encrypt=encrypt, compress=compress)
    client = Session(Role.CLIENT, sid, keys, T0, None, features)
    exit_ = Session(Role.EXIT, sid, keys, T0, None, features)
    for session in (client, exit_):
        session.add_path(0, True, T0)
        session.add_path(1, False, T0)
    return client, exit_, keys


def test_payload_keys_are_apart_from_the_tag_keys() -> None:
    _, keys = handshake()
    four = {
        keys.client_to_exit,
        keys.exit_to_client,
        keys.payload_client_to_exit,
        keys.payload_exit_to_client,
    }
    assert len(four) == 4 and all(len(k) == 32 for k in four)


@pytest.mark.parametrize("sender_role", [Role.CLIENT, Role.EXIT])
def test_no_plaintext_on_the_wire_and_copies_identical(sender_role: Role) -> None:
    client, exit_, _ = pair(encrypt=True)
    sender, receiver = (client, exit_) if sender_role is Role.CLIENT else (exit_, client)
    sender.send(SECRET)
    out = sender.transmit(T0)
    data = {pid: [f for f in frames if f[1] == wire.FrameType.DATA] for pid, frames in out.items()}
    wire_bytes = b"".join(f for frames in out.values() for f in frames)
    for needle in (b"hunter2", b"known plaintext", SECRET[:16]):
        assert needle not in wire_bytes
    assert data[0] == data[1]  # every copy of frame n is the same bytes on every path
    for frame in data[0]:
        receiver.receive_frame(frame, T0 + 0.01, 0)
    got = b"".join(e.data for e in iter(receiver.next_event, None) if isinstance(e, StreamData))
    assert got == SECRET


def test_without_encryption_the_plaintext_is_there() -> None:
    """The control for the test above: the needle search can fail."""
    client, _, _ = pair(encrypt=False)
    client.send(SECRET)
    assert b"hunter2" in b"".join(client.transmit(T0)[0])


def test_forged_ciphertext_is_dropped_before_decryption() -> None:
    client, exit_, _ = pair(encrypt=True)
    client.send(b"x" * 100)
    (frame,) = [f for f in client.transmit(T0)[0] if f[1] == wire.FrameType.DATA]
    forged = bytearray(frame)
    forged[30] ^= 1  # a bit flip in the ciphertext: a stream cipher would flip the plaintext
    exit_.receive_frame(bytes(forged), T0 + 0.01, 0)
    assert exit_.next_event() is None and exit_.bad_frames == 1
    exit_.receive_frame(frame, T0 + 0.01, 0)
    assert StreamData(b"x" * 100) in list(iter(exit_.next_event, None))


def test_one_side_encrypting_alone_delivers_garbage_never_plaintext() -> None:
    """Why the agreement must be authenticated: the two ends must run the same features."""
    sid, keys = handshake()
    client = Session(Role.CLIENT, sid, keys, T0, None, Features(encrypt=True))
    exit_ = Session(Role.EXIT, sid, keys, T0, None, Features())
    for session in (client, exit_):
        session.add_path(0, True, T0)
    client.send(SECRET)
    for frame in client.transmit(T0)[0]:
        exit_.receive_frame(frame, T0 + 0.01, 0)
    got = b"".join(e.data for e in iter(exit_.next_event, None) if isinstance(e, StreamData))
    assert len(got) == len(SECRET) and got != SECRET


def test_frames_out_of_order_and_repeated_decrypt_in_stream_order() -> None:
    """The keystream follows the stream, not the arrival: frames held above a hole are
    decrypted when the hole fills, and a repeated copy is never decrypted a second time."""
    client, exit_, _ = pair(encrypt=True)
    client.send(SECRET * 4)
    frames = [f for f in client.transmit(T0)[0] if f[1] == wire.FrameType.DATA]
    assert len(frames) >= 5
    arrival = [*reversed(frames[1:]), frames[2], frames[0], frames[-1]]
    for frame in arrival:
        exit_.receive_frame(frame, T0 + 0.01, 0)
    got = b"".join(e.data for e in iter(exit_.next_event, None) if isinstance(e, StreamData))
    assert got == SECRET * 4
    assert exit_.duplicates == 2


def test_the_stream_cipher_gives_rfc_8439s_keystream() -> None:
    """RFC 8439 appendix A.1, test vectors 1 and 2 (key 0, nonce 0, block counters 0 and 1):
    a zero label and segment 0 make the all-zero nonce, so this pins the IV layout (counter,
    then nonce) to the standard, not only to the library call the test above repeats."""
    cipher = StreamCipher(bytes(32), bytes(4))
    assert cipher.update(bytes(64)).hex() == (
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )
    assert cipher.update(bytes(16)).hex() == "9f07e7be5551387a98ba977c732d080d"


def test_two_handshakes_on_one_psk_give_disjoint_payload_keys() -> None:
    """Each session's keystream starts at byte 0 of its keys, so no two sessions may share
    them: every handshake mixes a fresh X25519 ephemeral from each end (core/handshake.py)."""
    (_, first), (_, second) = handshake(), handshake()
    assert {first.payload_client_to_exit, first.payload_exit_to_client}.isdisjoint(
        {second.payload_client_to_exit, second.payload_exit_to_client}
    )


@pytest.mark.parametrize("compress", [Compress.OFF, Compress.AUTO])
def test_every_resend_is_the_first_copys_bytes(compress: Compress) -> None:
    """A frame lost everywhere goes out again on the session's timers (probe timeout, then
    backoff): each resend is byte-identical to its first copy, also with compression `auto`
    on (writes of text, then random bytes, then text)."""
    client, exit_, _ = pair(encrypt=True, compress=compress)
    exit_.send(b"$ ")  # the client hears both paths: they are up, and lost frames are resent
    for pid, frames in exit_.transmit(T0).items():
        for frame in frames:
            client.receive_frame(frame, T0, pid)
    assert all(p.state is PathState.UP for p in client.paths.values())
    first: dict[int, bytes] = {}
    for write in (SECRET, os.urandom(3000), SECRET):
        client.send(write)
        for frame in data_frames(client.transmit(T0), None):
            first.setdefault(wire.data_seq(frame), frame)
    assert len(first) >= 3
    resent: list[bytes] = []
    now = T0
    while (timer := client.get_timer()) is not None and timer <= T0 + 3.0:
        now = max(now, timer)
        client.handle_timer(now)
        resent.extend(data_frames(client.transmit(now), None))  # the network drops all of it
    assert resent, "nothing was resent"
    for frame in resent:
        assert frame == first[wire.data_seq(frame)]
