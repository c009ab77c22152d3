"""`dupsession` used directly (no ssh): stdin/stdout against a plain TCP target via relayd.

Half-close: EOF on stdin must reach the target as a FIN while the target's direction stays
open, and everything the target sends after it must still arrive. And an exit that shuts
down under an open session must say so, on both ends.
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from tests.support.proxycmd import run_dupsession
from tests.support.relay import Relay
from tests.support.sshd import require_binary
from tests.support.targets import SocatEcho, TcpTarget

pytestmark = pytest.mark.timeout(60)

PAYLOAD_SIZE = 3_000_000


def _args(relay: Relay, port: int, *kinds: str) -> list[str]:
    args = ["--key", str(relay.key)]
    for kind in kinds:
        args += ["--path", relay.path(kind)]
    return [*args, "127.0.0.1", str(port)]


PATH_SETS = [("udp", "tcp"), ("udp",), ("tcp",)]
PATH_IDS = ["udp+tcp", "udp", "tcp"]


@pytest.mark.parametrize("kinds", PATH_SETS, ids=PATH_IDS)
def test_half_close_reply_after_eof(kinds: tuple[str, ...], relays: Callable[..., Relay]) -> None:
    """The target answers only once it has seen our EOF; the answer still comes back."""
    payload = os.urandom(PAYLOAD_SIZE)
    with TcpTarget("after-eof") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        result, _ = run_dupsession(_args(relay, target.port, *kinds), input=payload)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert result.stdout == hashlib.sha256(payload).hexdigest().encode() + b"\n"
    assert target.saw_eof == [True]
    assert target.received[0] == payload
    relay.wait_for_log(r"closed by \w+: session ended")


@pytest.mark.parametrize("kinds", PATH_SETS, ids=PATH_IDS)
def test_echo_all_data_back_then_eof(kinds: tuple[str, ...], relays: Callable[..., Relay]) -> None:
    payload = os.urandom(PAYLOAD_SIZE)
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        result, _ = run_dupsession(_args(relay, target.port, *kinds), input=payload)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert len(result.stdout) == len(payload)
    assert result.stdout == payload
    assert target.saw_eof == [True]


def test_echo_through_socat(relays: Callable[..., Relay]) -> None:
    """socat answers at once (before the client's stdout is even set up): nothing is lost."""
    payload = os.urandom(PAYLOAD_SIZE)
    with SocatEcho() as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        for _ in range(3):
            result, _ = run_dupsession(_args(relay, target.port, "udp", "tcp"), input=payload)
            assert result.returncode == 0, result.stderr.decode()
            assert result.stderr == b""
            assert result.stdout == payload


def test_a_slow_reader_gets_every_byte_after_the_exit_closed(
    relays: Callable[..., Relay],
) -> None:
    """The exit ends the session once the client acked its FIN, which says "received", not
    "written": stdout not read until then, the client must still hand on every byte (a CI
    run lost a 170 KB tail this way, with exit code 0)."""
    dupsession = require_binary("dupsession")
    payload = os.urandom(PAYLOAD_SIZE)
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        with subprocess.Popen(
            [dupsession, *_args(relay, target.port, "udp", "tcp")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as process:
            try:
                assert process.stdin is not None and process.stdout is not None
                args = (process.stdin, payload)
                writer = threading.Thread(target=_write_and_close, args=args)
                writer.start()
                relay.wait_for_log(r"closed by exit: session ended", timeout=30)
                writer.join(10)
                out = process.stdout.read()  # only now: until here, nothing was taken
                assert process.wait(10) == 0
            finally:
                if process.poll() is None:
                    process.kill()
    assert len(out) == len(payload)
    assert out == payload


def _write_and_close(stream: IO[bytes], data: bytes) -> None:
    stream.write(data)
    stream.close()


def test_empty_session_from_dev_null(tmp_path: Path, relays: Callable[..., Relay]) -> None:
    """stdin and stdout need not be pipes: /dev/null in, a regular file out."""
    dupsession = require_binary("dupsession")
    out = tmp_path / "out.txt"
    with TcpTarget("after-eof") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        with open(os.devnull, "rb") as stdin, out.open("wb") as stdout:
            result = subprocess.run(
                [dupsession, *_args(relay, target.port, "udp", "tcp")],
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=30,
            )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert out.read_bytes() == hashlib.sha256(b"").hexdigest().encode() + b"\n"
    assert target.saw_eof == [True]


def _read_exactly(proc: subprocess.Popen[bytes], size: int, timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"got {data!r} of {size} bytes within {timeout}s")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {data!r}")
        data += chunk
    return data


@pytest.mark.parametrize("kinds", PATH_SETS, ids=PATH_IDS)
def test_exit_shutdown_ends_open_session(
    kinds: tuple[str, ...], relays: Callable[..., Relay]
) -> None:
    dupsession = require_binary("dupsession")
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        proc = subprocess.Popen(
            [dupsession, *_args(relay, target.port, *kinds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdin is not None and proc.stderr is not None
            proc.stdin.write(b"ping\n")
            proc.stdin.flush()
            assert _read_exactly(proc, 5, 10) == b"ping\n"  # the session is open end to end

            start = time.monotonic()
            relay.stop()  # SIGTERM by PID; asserts exit 0 and a clean log
            code = proc.wait(10)
            elapsed = time.monotonic() - start
            stderr = proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
    assert code == 6, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dupsession: "), stderr
    assert "exit shutting down" in lines[0], stderr
    assert elapsed < 5, elapsed  # told at once, not after a path timeout or grace period
    assert "closed by exit: exit shutting down" in relay.log
