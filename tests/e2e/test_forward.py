"""`dupsession forward`: a local port, one session per connection, through a real relayd.

Many connections at once, each byte-exact; half-close both ways; a failing session says why on
stderr and the listener keeps serving; sessions appear in `dupsession status`; [[forward]]
entries in the config; a clean stop on SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dupsession import control
from dupsession.testing.shim import Impairment
from tests.support.forward import Forward, recv_all
from tests.support.relay import Relay
from tests.support.shims import ShimThread
from tests.support.sshd import free_port, require_binary
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(90)


def _paths(relay: Relay) -> list[str]:
    return ["--key", str(relay.key), "--path", relay.path("udp"), "--path", relay.path("tcp")]


def _echo_roundtrip(fwd: Forward, payload: bytes, out: dict[int, bytes], index: int) -> None:
    with fwd.connect() as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(1)))
        sender.start()
        out[index] = recv_all(sock)
        sender.join()


def test_many_connections_at_once_each_byte_exact(
    relays: Callable[..., Relay], tmp_path: Path
) -> None:
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        args = [*_paths(relay), "127.0.0.1:0", "127.0.0.1", str(target.port)]
        with Forward(args, tmp_path) as fwd:
            payloads = [os.urandom(300_000 + i) for i in range(6)]
            got: dict[int, bytes] = {}
            threads = [
                threading.Thread(target=_echo_roundtrip, args=(fwd, p, got, i))
                for i, p in enumerate(payloads)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert [got.get(i) == p for i, p in enumerate(payloads)] == [True] * 6
            assert fwd.process.poll() is None
        assert fwd.process.returncode == 0, fwd.stderr
    assert relay.sessions_opened() >= 6
    assert "failed" not in fwd.stderr  # (encryption by default: test_sessions_appear_in_status)


def test_half_close_both_ways(relays: Callable[..., Relay], tmp_path: Path) -> None:
    """Our EOF reaches the target as a FIN; its answer after that still arrives, then EOF."""
    payload = os.urandom(2_000_000)
    with TcpTarget("after-eof") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        args = [*_paths(relay), "0", "127.0.0.1", str(target.port)]
        with Forward(args, tmp_path) as fwd, fwd.connect() as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            answer = recv_all(sock)
    assert answer == hashlib.sha256(payload).hexdigest().encode() + b"\n"
    assert target.saw_eof == [True] and target.received[0] == payload


def _serve_echo_once(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def test_listener_survives_a_failed_session_and_says_why(
    relays: Callable[..., Relay], tmp_path: Path
) -> None:
    port = free_port()
    relay = relays(allow=[f"127.0.0.1:{port}"])
    with Forward([*_paths(relay), "0", "127.0.0.1", str(port)], tmp_path) as fwd:
        with fwd.connect() as sock:  # nothing listens on the target port yet
            assert recv_all(sock) == b""
        fwd.wait_for_stderr(r"session for 127\.0\.0\.1:\d+ ended: exit cannot connect")
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen()
            server = threading.Thread(target=_serve_echo_once, args=(listener,), daemon=True)
            server.start()
            with fwd.connect() as sock:
                sock.sendall(b"still here")
                sock.shutdown(socket.SHUT_WR)
                assert recv_all(sock) == b"still here"
            server.join(10)
    # a target the exit refuses: the same, with the exit's reason
    with Forward([*_paths(relay), "0", "127.0.0.1", "9"], tmp_path / "refused") as fwd:
        with fwd.connect() as sock:
            assert recv_all(sock) == b""
        fwd.wait_for_stderr(r"failed: exit refused the session: target 127\.0\.0\.1:9 is not")
        assert fwd.process.poll() is None


def test_sessions_appear_in_status(relays: Callable[..., Relay], tmp_path: Path) -> None:
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        args = [*_paths(relay), "0", "127.0.0.1", str(target.port)]
        with Forward(args, tmp_path) as fwd, fwd.connect() as a, fwd.connect() as b:
            for sock in (a, b):
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
            out = subprocess.run(
                [require_binary("dupsession"), "status", "--json"],
                capture_output=True,
                text=True,
                timeout=20,
                env=fwd.env,
            )
            assert out.returncode == 0, out.stderr
    sessions = [s for doc in json.loads(out.stdout) for s in doc["sessions"]]
    assert len(sessions) == 2
    for session in sessions:
        assert session["target"] == f"127.0.0.1:{target.port}"
        assert session["origin"].startswith("forward 127.0.0.1:")
        assert session["encrypted"] is True


def test_forward_entries_from_the_config(relays: Callable[..., Relay], tmp_path: Path) -> None:
    with TcpTarget("echo") as one, TcpTarget("echo") as two:
        relay = relays(allow=[f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"])
        config = tmp_path / "config.toml"
        config.write_text(
            f'key = "{relay.key}"\n'
            f'paths = ["{relay.path("udp")}", "{relay.path("tcp")}"]\n'
            "encrypt = false\n"
            f'[[forward]]\nlisten = "127.0.0.1:0"\ntarget = "127.0.0.1:{one.port}"\n'
            f'[[forward]]\nlisten = 0\ntarget = "127.0.0.1:{two.port}"\n'
        )
        with Forward(["--config", str(config)], tmp_path, listeners=2) as fwd:
            assert len(fwd.ports) == 2
            for port, text in zip(fwd.ports, (b"one", b"two"), strict=True):
                with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                    sock.sendall(text)
                    sock.shutdown(socket.SHUT_WR)
                    assert recv_all(sock) == text
    assert one.received == [b"one"] and two.received == [b"two"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["5901", "host"], "forward needs [BIND:]LPORT HOST PORT"),
        (["99999", "host", "1"], "port out of range"),
        (["x:y:z", "host", "1"], "expected [BIND:]LPORT HOST PORT"),
        ([], "nothing to forward"),
    ],
)
def test_bad_usage_is_one_clear_line(argv: list[str], message: str, tmp_path: Path) -> None:
    start = time.monotonic()
    result = subprocess.run(
        [require_binary("dupsession"), "forward", "--path", "udp://127.0.0.1:9", *argv],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert time.monotonic() - start < 10


def test_a_reset_local_connection_ends_its_session_at_the_exit(
    relays: Callable[..., Relay], tmp_path: Path
) -> None:
    """The viewer vanishing (RST) closes the session at once: the exit lets go of the target
    instead of holding it for the grace period."""
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        with Forward([*_paths(relay), "0", "127.0.0.1", str(target.port)], tmp_path) as fwd:
            sock = fwd.connect()
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST
            relay.wait_for_log(r"closed by client: local connection lost")
            with fwd.connect() as again:  # and the listener still serves
                again.sendall(b"x")
                assert again.recv(1) == b"x"


def _open_sessions(control_path: Path) -> list[str]:
    """Ids of the exit's sessions not closed, from its control socket."""
    sessions = control.query(control_path)["sessions"]
    return [doc["session_id"] for doc in sessions if doc["state"] != "closed"]


def test_local_peer_leaving_during_the_handshake_leaves_no_exit_session(
    relays: Callable[..., Relay], shims: ShimThread, tmp_path: Path
) -> None:
    """Review A3: the exit opens the session (and its target connection) on the HELLO; a local
    peer gone before the WELCOME arrives must not leave it there for the grace period."""
    control_path = tmp_path / "relayd.sock"
    with TcpTarget("echo") as target:
        relay = relays(
            allow=[f"127.0.0.1:{target.port}"], extra_args=["--control", str(control_path)]
        )
        slow = shims.udp((relay.host, relay.port), down=Impairment(delay=0.6))  # WELCOME late
        args = ["--key", str(relay.key), "--path", f"udp://127.0.0.1:{slow.port}"]
        with Forward([*args, "0", "127.0.0.1", str(target.port)], tmp_path) as fwd:
            with fwd.connect() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            relay.wait_for_log(r"session \w+: opened")  # the exit has it, the peer is gone
            deadline = time.monotonic() + 3.0  # the WELCOME's delay, then one CLOSE
            while _open_sessions(control_path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _open_sessions(control_path) == [], relay.log
            relay.wait_for_log(r"closed by client: local connection closed")
            assert fwd.process.poll() is None
