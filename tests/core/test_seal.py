"""Payload encryption: standard ChaCha20, one nonce per frame and direction, encrypt-then-MAC,
and no plaintext in any frame."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from dupsession.core import wire
from dupsession.core.events import StreamData
from dupsession.core.handshake import SessionKeys
from dupsession.core.negotiate import Features
from dupsession.core.seal import CLIENT_TO_EXIT, EXIT_TO_CLIENT, PayloadCipher, nonce
from dupsession.core.session import Role, Session
from tests.support.session import handshake

SECRET = b"known plaintext: the VNC password is hunter2 " * 40
T0 = 100.0


def test_it_is_exactly_chacha20() -> None:
    """The AEAD object is only a faster way to the RFC 8439 keystream (block counter 1)."""
    key, other = os.urandom(32), os.urandom(32)
    cipher = PayloadCipher(key, other, CLIENT_TO_EXIT, EXIT_TO_CLIENT)
    for seq, size in ((0, 1), (7, 1196), (2**40 + 3, 16384)):
        payload = os.urandom(size)
        counter_one = (1).to_bytes(4, "little") + nonce(CLIENT_TO_EXIT, seq)
        plain = Cipher(algorithms.ChaCha20(key, counter_one), None).encryptor()
        assert cipher.encrypt(seq, payload) == plain.update(payload)
    assert cipher.encrypt(1, b"") == b""


def test_nonces_never_repeat_across_frames_or_directions() -> None:
    seen = {nonce(label, seq) for label in (CLIENT_TO_EXIT, EXIT_TO_CLIENT) for seq in range(500)}
    assert len(seen) == 1000
    with pytest.raises(ValueError, match="own key"):
        PayloadCipher(bytes(32), bytes(32), CLIENT_TO_EXIT, EXIT_TO_CLIENT)


def pair(encrypt: bool) -> tuple[Session, Session, SessionKeys]:
    sid, keys = handshake()
    features = Features(encrypt=encrypt)
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
