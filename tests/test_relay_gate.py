"""The relay's gate: only authenticated sessions pass, unknown ones within a small budget."""

from __future__ import annotations

import os
import time

from dupsession.core import wire
from dupsession.core.handshake import ClientHandshake
from relayd.relay import PROBATION_FRAMES, SessionGate

PSK = bytes(range(32))


def _ack(sid: bytes, path_id: int = 1) -> bytes:
    ack = wire.Ack(path_id, 1, 1, 0, 0, 0, 0, 0, 1024)
    return wire.encode_ack(os.urandom(32), sid, ack)  # the relay cannot check session keys


def test_verified_hello_admits_its_session() -> None:
    gate = SessionGate(PSK)
    hello = ClientHandshake(PSK, "host:22", time.time())
    assert gate.admit(hello.hello_frame(1), 0.0)
    data = wire.encode_data(os.urandom(32), hello.session_id, 0, b"x", False)
    assert gate.admit(data, 1.0)  # later frames of the session pass, DATA included


def test_hello_under_another_key_is_dropped() -> None:
    gate = SessionGate(PSK)
    hello = ClientHandshake(bytes(32), "host:22", time.time())
    assert not gate.admit(hello.hello_frame(1), 0.0)
    assert gate.dropped == 1


def test_unknown_session_data_is_dropped() -> None:
    gate = SessionGate(PSK)
    data = wire.encode_data(os.urandom(32), os.urandom(8), 0, b"x" * 100, False)
    assert not gate.admit(data, 0.0)


def test_unknown_session_acks_pass_within_budget_only() -> None:
    gate = SessionGate(PSK)
    sid = os.urandom(8)
    passed = [gate.admit(_ack(sid), 0.01 * i) for i in range(PROBATION_FRAMES + 4)]
    assert passed == [True] * PROBATION_FRAMES + [False] * 4


def test_overall_probation_rate_is_bounded() -> None:
    gate = SessionGate(PSK)
    passed = sum(gate.admit(_ack(os.urandom(8)), 0.0) for _ in range(500))
    assert 0 < passed <= 64


def test_exit_answer_vouches_for_a_session() -> None:
    gate = SessionGate(PSK)
    sid = os.urandom(8)
    assert gate.admit(_ack(sid), time.monotonic())
    gate.vouch(_ack(sid))  # a frame of that session came back from the exit
    data = wire.encode_data(os.urandom(32), sid, 0, b"x", False)
    assert all(gate.admit(data, time.monotonic()) for _ in range(50))


def test_garbage_is_dropped() -> None:
    gate = SessionGate(PSK)
    assert not gate.admit(b"\x01\x03" + bytes(10), 0.0)
    assert not gate.admit(b"\x09" + bytes(40), 0.0)  # wrong version


def test_an_exit_reset_vouches_for_nothing() -> None:
    """The exit answers RESET to frames of sessions it does not know: no proof of anything."""
    gate = SessionGate(PSK)
    sid = os.urandom(8)
    assert gate.admit(_ack(sid), time.monotonic())
    gate.vouch(wire.encode_reset(os.urandom(wire.RESET_TOKEN_SIZE), sid, 1))
    data = wire.encode_data(os.urandom(32), sid, 0, b"x", False)
    assert not gate.admit(data, time.monotonic())


def test_the_gate_reads_the_clocks_it_is_given() -> None:
    """A HELLO stamped at a fixed Unix time passes a gate whose wall clock says that time, and
    not a gate on the real clock (its replay window); `clock` is what the relay passes in."""
    stamped = 4_000_000_000.0  # 2096: far outside any replay window around the real time
    hello = ClientHandshake(PSK, "host:22", stamped).hello_frame(1)
    fixed = SessionGate(PSK, clock=lambda: 5.0, wall_clock=lambda: stamped)
    assert fixed.admit(hello, fixed.clock())
    assert fixed.clock() == 5.0
    real = SessionGate(PSK)
    assert not real.admit(hello, real.clock())
