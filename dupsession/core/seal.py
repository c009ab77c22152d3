"""Payload encryption of DATA frames: ChaCha20 (RFC 8439), then the frame's BLAKE3 tag.

Encrypt-then-MAC: the payload is encrypted when its frame is cut, and the frame's keyed BLAKE3
tag (core/wire.py) covers the header and the ciphertext, so a forged or corrupted frame is
dropped before anything is decrypted. Rules, each with its reason:
- One key per direction, derived in the handshake apart from the tag keys (core/handshake.py):
  a key never serves two purposes, and the two directions never share a keystream.
- The nonce is the direction's label and the frame number. A frame number is used once per
  direction and session, and every copy or resend of frame *n* is the same bytes made once
  (core/sender.py), so no (key, nonce) pair ever encrypts two different payloads.
- The cipher is ChaCha20 from `cryptography` (OpenSSL), never our own. It is reached through
  the library's ChaCha20Poly1305 object because that keeps the key schedule across calls
  (a fresh ChaCha20 object per frame costs 4x more CPU); its ciphertext is exactly ChaCha20
  with block counter 1, which `tests/core/test_seal.py` checks against the plain cipher. The
  Poly1305 tag it also computes is dropped: the BLAKE3 tag authenticates the frame.

Not hidden: payload lengths, frame numbers, FIN, timing, and which paths carry what.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

#: Nonce labels, one per direction (4 bytes each): belt and braces beside the separate keys.
CLIENT_TO_EXIT = b"c2e\x00"
EXIT_TO_CLIENT = b"e2c\x00"
_SEQ = struct.Struct("!Q")
_POLY1305_TAG = 16


class PayloadCipher:
    """Encrypts this end's outgoing DATA payloads and decrypts the peer's."""

    __slots__ = ("_rx", "_rx_label", "_tx", "_tx_label")

    def __init__(self, tx_key: bytes, rx_key: bytes, tx_label: bytes, rx_label: bytes) -> None:
        if tx_key == rx_key or tx_label == rx_label:
            raise ValueError("each direction needs its own key and label")
        self._tx = ChaCha20Poly1305(tx_key)
        self._rx = ChaCha20Poly1305(rx_key)
        self._tx_label = tx_label
        self._rx_label = rx_label

    def encrypt(self, seq: int, payload: bytes | memoryview) -> bytes:
        """Ciphertext of frame `seq`'s payload (same length)."""
        if not payload:
            return b""
        return self._tx.encrypt(nonce(self._tx_label, seq), payload, None)[:-_POLY1305_TAG]

    def decrypt(self, seq: int, payload: bytes) -> bytes:
        """Plaintext of the peer's frame `seq` (a stream cipher: the same XOR undoes it)."""
        if not payload:
            return payload
        return self._rx.encrypt(nonce(self._rx_label, seq), payload, None)[:-_POLY1305_TAG]


def nonce(label: bytes, seq: int) -> bytes:
    """The 12-byte RFC 8439 nonce of frame `seq` in the direction named by `label`."""
    return label + _SEQ.pack(seq)
