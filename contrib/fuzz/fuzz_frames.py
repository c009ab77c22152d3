#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris / libFuzzer) of everything that parses bytes from the network.

    pip install atheris
    PYTHONPATH=. python3 contrib/fuzz/fuzz_frames.py -max_total_time=600 -print_final_stats=1

The first input byte picks a target; the rest is the frame (or stream):
  0  the HELLO verifier (`ServerHandshake.verify_hello`) with raw bytes: what any stranger sends
  1  the same with a HELLO body *sealed* under the right key: a key holder's arbitrary HELLO
  2  the client's WELCOME check, raw and sealed (a malicious exit, or a key holder)
  3  an exit session's `receive_frame` with raw bytes (DATA, ACK, CLOSE, RESET, garbage)
  4  the same with the body sealed under the client-to-exit key: every decoder behind the tag
  5  a client session with the body sealed under the exit-to-client key, and RESETs
  6  the TCP deframer, then every frame it cuts into the exit session
Invariant: nothing raises but the documented `FrameError` / `HandshakeError` / `FramingError`,
and a session never delivers bytes from an unsealed frame. A crash is a libFuzzer crash file.
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    from dupsession.aio import framing
    from dupsession.core import wire
    from dupsession.core.events import StreamData
    from dupsession.core.handshake import (
        ClientHandshake,
        HandshakeError,
        ServerHandshake,
        reset_token,
    )
    from dupsession.core.session import Role, Session

PSK = bytes(range(32))
NOW = 1_800_000_000.0
_client = ClientHandshake(PSK, "127.0.0.1:22", NOW)
_server = ServerHandshake(PSK)
_hello = _client.hello_frame(0)
_accepted = _server.accept(_server.verify_hello(_hello, NOW), NOW)
_, KEYS = _client.accept(0, _accepted.welcome_frame(_server.auth, 0, _hello[-16:]))
assert KEYS is not None
SID = _client.session_id


def _sealed(key: bytes, data: bytes) -> bytes:
    body = data[:-16] if len(data) > 16 else data
    if len(body) >= 12:  # keep the fuzzer's type and path id, route it to our session
        body = body[:4] + SID + body[12:]
    return wire.seal(key, body)


def _session(role: Role) -> Session:
    session = Session(role, SID, KEYS, 100.0)
    for pid in range(3):
        session.add_path(pid, pid != 2, 100.0)
    return session


def _feed(session: Session, frames: list[bytes], sealed: bool) -> None:
    now = 100.0
    for frame in frames:
        now += 0.001
        session.receive_frame(frame, now, frame[3] % 4 if len(frame) > 3 else None)
        session.transmit(now)
        session.handle_timer(now)
    while (event := session.next_event()) is not None:
        if isinstance(event, StreamData) and not sealed:
            raise AssertionError("an unsealed frame delivered stream bytes")


def test_one(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 7, data[1:]
    try:
        if target == 0:
            ServerHandshake(PSK).verify_hello(body, NOW)
        elif target == 1:
            sealed = wire.seal(_server.auth, (body + bytes(1200))[: wire.HELLO_SIZE - 16])
            ServerHandshake(PSK).verify_hello(sealed, NOW)
        elif target == 2:
            _client.accept(0, body)
            _client.accept(0, body[:-16] + wire.tag(_server.auth, _hello[-16:] + body[:-16]))
        elif target == 3:
            _feed(_session(Role.EXIT), [body], sealed=False)
        elif target == 4:
            _feed(_session(Role.EXIT), [_sealed(KEYS.client_to_exit, body)], sealed=True)
        elif target == 5:
            frames = [_sealed(KEYS.exit_to_client, body)]
            frames.append(wire.encode_reset(reset_token(PSK, SID), SID, body[0] if body else 0))
            _feed(_session(Role.CLIENT), frames, sealed=True)
        else:
            deframer = framing.StreamDeframer()
            frames = deframer.feed(body[: len(body) // 2]) + deframer.feed(body[len(body) // 2 :])
            _feed(_session(Role.EXIT), frames, sealed=False)
    except (wire.FrameError, HandshakeError, framing.FramingError):
        pass


def main() -> None:
    started = time.monotonic()
    atheris.Setup(sys.argv, test_one)
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz_frames: ran {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
