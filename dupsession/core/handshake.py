"""Handshake: authenticate with the pre-shared key, derive forward-secret per-session keys.

One round trip. The client sends the same HELLO on every path; the exit answers each copy with
the same WELCOME. Rules, each with its reason:
- HELLO is padded to `HELLO_SIZE` and WELCOME is smaller: relayd never amplifies.
- A HELLO whose tag fails gets no answer at all: relayd is useless as a reflector and tells a
  scanner nothing.
- HELLO carries the client's wall clock; the exit refuses HELLOs more than `MAX_CLOCK_SKEW`
  away from its own and remembers each nonce until its HELLO would be refused anyway
  (`replay_expiry`), so a captured HELLO cannot be replayed later.
- Session keys mix the PSK, both fresh nonces and an ephemeral X25519 secret: a PSK that
  leaks later does not decrypt or forge recorded sessions, and no two sessions share keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dupsession.core import wire

PSK_SIZE = 32
#: How far a HELLO's clock may be from the exit's (seconds): bounds the replay cache.
MAX_CLOCK_SKEW = 120.0

#: Critical handshake option types this implementation knows (none yet): a peer's critical
#: option outside this set refuses the session (see docs/PROTOCOL.md, "Handshake options").
KNOWN_CRITICAL: set[int] = set()

_AUTH_CONTEXT = "dupsession 2026-11 v1 handshake auth"
_C2S_CONTEXT = "dupsession 2026-11 v1 session key client-to-exit"
_S2C_CONTEXT = "dupsession 2026-11 v1 session key exit-to-client"
_C2S_PAYLOAD_CONTEXT = "dupsession 2026-11 v1 payload key client-to-exit"
_S2C_PAYLOAD_CONTEXT = "dupsession 2026-11 v1 payload key exit-to-client"
_RESET_CONTEXT = "dupsession 2026-11 v1 stateless reset"


class HandshakeError(ValueError):
    """The peer's handshake frame is invalid, stale or replayed."""


def auth_key(psk: bytes) -> bytes:
    """The key that seals HELLO and WELCOME: never the PSK itself."""
    if len(psk) != PSK_SIZE:
        raise ValueError(f"pre-shared key must be {PSK_SIZE} bytes, got {len(psk)}")
    return blake3.blake3(psk, derive_key_context=_AUTH_CONTEXT).digest()


def reset_token(psk: bytes, session_id: bytes) -> bytes:
    """What a RESET for `session_id` carries: the exit makes it from the PSK alone (it has lost
    the session), the client checks it; nobody without the PSK can make one."""
    material = psk + session_id
    return blake3.blake3(material, derive_key_context=_RESET_CONTEXT).digest(wire.RESET_TOKEN_SIZE)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """One key per direction, so a frame can never be reflected back at its sender.

    The payload keys encrypt DATA payloads when the handshake agreed on it (core/seal.py);
    they are derived apart from the tag keys, so no key serves two purposes.
    """

    client_to_exit: bytes
    exit_to_client: bytes
    payload_client_to_exit: bytes = b""
    payload_exit_to_client: bytes = b""
    #: The session's RESET token (`reset_token`); empty: this end accepts no RESET.
    reset: bytes = b""


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def derive_keys(
    psk: bytes, shared: bytes, hello: wire.Hello, server_nonce: bytes, server_public: bytes
) -> SessionKeys:
    material = b"".join(
        (
            psk,
            shared,
            hello.session_id,
            hello.client_nonce,
            server_nonce,
            hello.client_public,
            server_public,
        )
    )
    c2s, s2c, payload_c2s, payload_s2c = (
        blake3.blake3(material, derive_key_context=context).digest()
        for context in (_C2S_CONTEXT, _S2C_CONTEXT, _C2S_PAYLOAD_CONTEXT, _S2C_PAYLOAD_CONTEXT)
    )
    return SessionKeys(c2s, s2c, payload_c2s, payload_s2c, reset_token(psk, hello.session_id))


class ClientHandshake:
    """The client side: one HELLO (copied to every path), the first valid WELCOME wins."""

    def __init__(
        self, psk: bytes, target: str, unix_now: float, options: wire.Options = ()
    ) -> None:
        self._psk = psk
        self._auth = auth_key(psk)
        self._private = X25519PrivateKey.generate()
        self.hello = wire.Hello(
            path_id=0,
            session_id=os.urandom(wire.SESSION_ID_SIZE),
            client_nonce=os.urandom(16),
            unix_ms=int(unix_now * 1000),
            client_public=_public_bytes(self._private),
            target=target,
            options=options,
        )

    @property
    def session_id(self) -> bytes:
        return self.hello.session_id

    def hello_frame(self, path_id: int) -> bytes:
        """HELLO for one path; the path id is inside the tag, the rest is identical."""
        return wire.encode_hello(self._auth, _with_path(self.hello, path_id))

    def accept(self, path_id: int, frame: bytes) -> tuple[wire.Welcome, SessionKeys | None]:
        """Verify a WELCOME for `path_id`; keys are None when the exit refused the session."""
        hello_tag = self.hello_frame(path_id)[-wire.TAG_SIZE :]
        welcome = wire.verify_welcome(self._auth, hello_tag, frame)
        if welcome.session_id != self.hello.session_id:
            raise HandshakeError("welcome for another session")
        critical = wire.unknown_critical(welcome.options, KNOWN_CRITICAL)
        if critical:  # the exit relies on something we do not implement: never guess
            raise HandshakeError(f"exit requires unknown handshake option(s) {critical}")
        if welcome.status != wire.WelcomeStatus.OK:
            return welcome, None
        try:
            peer = X25519PublicKey.from_public_bytes(welcome.server_public)
            shared = self._private.exchange(peer)
        except ValueError as exc:
            raise HandshakeError(f"bad exit public key: {exc}") from exc
        keys = derive_keys(
            self._psk, shared, self.hello, welcome.server_nonce, welcome.server_public
        )
        return welcome, keys


def replay_expiry(hello: wire.Hello, unix_now: float) -> float:
    """Until when an accepted HELLO's nonce must be remembered: as long as the HELLO passes the
    clock-skew check. A client clock x s ahead keeps its HELLO valid until hello time + skew,
    x s after accept time + skew: forgetting it earlier reopens a replay (review A11)."""
    return max(unix_now, hello.unix_ms / 1000) + MAX_CLOCK_SKEW


def _with_path(hello: wire.Hello, path_id: int) -> wire.Hello:
    return wire.Hello(
        path_id,
        hello.session_id,
        hello.client_nonce,
        hello.unix_ms,
        hello.client_public,
        hello.target,
        hello.options,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the exit keeps for a session it answered: the same answer serves every copy."""

    hello: wire.Hello
    keys: SessionKeys
    server_nonce: bytes
    server_public: bytes
    options: wire.Options = ()  #: the exit's answer to the HELLO's options

    def welcome_frame(self, psk_auth: bytes, path_id: int, hello_tag: bytes) -> bytes:
        welcome = wire.Welcome(
            path_id,
            self.hello.session_id,
            wire.WelcomeStatus.OK,
            self.server_nonce,
            self.server_public,
            "",
            self.options,
        )
        return wire.encode_welcome(psk_auth, hello_tag, welcome)


class ServerHandshake:
    """The exit side: verifies HELLOs, remembers recent nonces, makes keys.

    Time is passed in (`unix_now`, wall-clock seconds) so the replay window is testable.
    """

    def __init__(self, psk: bytes, max_nonces: int = 65536) -> None:
        self._psk = psk
        self.auth = auth_key(psk)
        self.psk_id = self.key_id(psk)
        self._seen: dict[bytes, tuple[float, bytes]] = {}  # nonce -> (expiry, session id)
        self._max_nonces = max_nonces

    @staticmethod
    def key_id(psk: bytes) -> str:
        """A short public name for a key (logs, rotation): never reveals the key."""
        return blake3.blake3(auth_key(psk)).hexdigest()[:16]

    def verify_hello(self, frame: bytes, unix_now: float) -> wire.Hello:
        """Raise FrameError (bad tag: answer nothing) or HandshakeError (stale or replayed)."""
        body = wire.verify(self.auth, frame)
        hello = wire.decode_hello(body)
        if abs(hello.unix_ms / 1000 - unix_now) > MAX_CLOCK_SKEW:
            raise HandshakeError("hello timestamp outside the allowed clock skew")
        self._expire(unix_now)
        seen = self._seen.get(hello.client_nonce)
        if seen is not None and seen[1] != hello.session_id:
            raise HandshakeError("replayed hello nonce")
        return hello

    def remember(self, nonce: bytes, expiry: float, session_id: bytes) -> None:
        """Load a nonce accepted before a restart (the exit's persistent replay memory)."""
        if len(self._seen) < self._max_nonces:
            self._seen[nonce] = (expiry, session_id)

    def seen(self, hello: wire.Hello) -> bool:
        """Whether this HELLO's nonce was already accepted (within the replay window)."""
        return hello.client_nonce in self._seen

    def accept(self, hello: wire.Hello, unix_now: float, options: wire.Options = ()) -> Accepted:
        """Make the exit's half of the key exchange for a verified, permitted HELLO; `options`
        (the answer to the HELLO's options) go into every WELCOME for it."""
        if len(self._seen) >= self._max_nonces:
            raise HandshakeError("too many handshakes in the replay window")
        self._seen[hello.client_nonce] = (replay_expiry(hello, unix_now), hello.session_id)
        private = X25519PrivateKey.generate()
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(hello.client_public))
        except ValueError as exc:
            raise HandshakeError(f"bad client public key: {exc}") from exc
        nonce = os.urandom(16)
        public = _public_bytes(private)
        keys = derive_keys(self._psk, shared, hello, nonce, public)
        return Accepted(hello, keys, nonce, public, options)

    def refusal_frame(
        self, hello_frame: bytes, hello: wire.Hello, status: int, reason: str
    ) -> bytes:
        welcome = wire.Welcome(
            hello.path_id, hello.session_id, status, bytes(16), bytes(32), reason
        )
        return wire.encode_welcome(self.auth, hello_frame[-wire.TAG_SIZE :], welcome)

    def _expire(self, unix_now: float) -> None:
        if len(self._seen) > self._max_nonces // 2:
            self._seen = {n: v for n, v in self._seen.items() if v[0] > unix_now}
