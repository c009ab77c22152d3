"""The control socket protocol against a real `ControlServer` in a private runtime directory.

The server runs on an event loop in a background thread (as in a real `dupsession` or
`relayd`); the tests talk to it with the blocking `control.query` / `control.discover` that
the status commands use, or with raw bytes on the Unix socket for malformed requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dupsession import control

pytestmark = pytest.mark.timeout(30)

SESSIONS = [
    {
        "session_id": "00112233445566ff",
        "role": "client",
        "state": "up",
        "target": "127.0.0.1:22",
        "paths": [{"id": 1, "spec": "udp://127.0.0.1:7300", "rtt": 0.012}],
    }
]


class ServerThread:
    """A `ControlServer` on its own event loop in a daemon thread."""

    def __init__(
        self,
        path: Path,
        kind: str = "client",
        snapshot: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.calls = 0

        def counted() -> list[dict[str, Any]]:
            self.calls += 1
            return SESSIONS if snapshot is None else snapshot()

        self.server = control.ControlServer(path, kind, counted)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shut() -> None:
            self.server.close()
            await asyncio.sleep(0.05)  # let the closing transports finish

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "run"
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def server(run_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(control.socket_path("client", "test")) as thread:
        yield thread


def raw_request(path: Path, request: bytes, timeout: float = 5.0) -> dict[str, Any]:
    """Send `request` as is, read the reply until the server closes, parse it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data  # one JSON line
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


# -- the reply ---------------------------------------------------------------------------------


def test_snapshot_reply_shape_and_version(server: ServerThread) -> None:
    document = control.query(server.server.path)
    assert document == {"v": 1, "kind": "client", "pid": os.getpid(), "sessions": SESSIONS}
    assert control.VERSION == 1
    assert server.calls == 1  # one snapshot per request, taken when asked


def test_raw_snapshot_request_is_one_json_line(server: ServerThread) -> None:
    reply = raw_request(server.server.path, b'{"v": 1, "cmd": "snapshot"}\n')
    assert reply["v"] == 1 and reply["kind"] == "client" and reply["sessions"] == SESSIONS


def test_request_without_newline_is_answered_at_eof(server: ServerThread) -> None:
    """A request cut off by a half-close (no newline) is still one request."""
    path = server.server.path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b'{"v": 1, "cmd": "snapshot"}')
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(sock.makefile("rb").read())
    assert reply["sessions"] == SESSIONS


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"not json\n", "request is not JSON"),
        (b"\xff\xfe\n", "request is not JSON"),
        (b'{"v": 2, "cmd": "snapshot"}\n', "unsupported request version (this is v1)"),
        (b'{"cmd": "snapshot"}\n', "unsupported request version (this is v1)"),
        (b'{"v": "1", "cmd": "snapshot"}\n', "unsupported request version (this is v1)"),
        (b'{"v": true, "cmd": "snapshot"}\n', "unsupported request version (this is v1)"),
        (b'[1, "snapshot"]\n', "unsupported request version (this is v1)"),
        (b'{"v": 1, "cmd": "shutdown"}\n', "unknown command 'shutdown'"),
        (b'{"v": 1}\n', "unknown command None"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "version-2",
        "no-version",
        "version-string",
        "version-bool",
        "not-object",
        "unknown-command",
        "no-command",
    ],
)
def test_bad_requests_get_error_replies(
    server: ServerThread, request_line: bytes, error: str
) -> None:
    reply = raw_request(server.server.path, request_line)
    assert reply == {"v": 1, "error": error}
    assert server.calls == 0  # no snapshot was taken for a bad request
    # The server is still fine afterwards.
    assert control.query(server.server.path)["sessions"] == SESSIONS


def test_oversized_request_is_refused(server: ServerThread) -> None:
    reply = raw_request(server.server.path, b"x" * (control.MAX_REQUEST * 4))
    assert reply == {"v": 1, "error": "request too long"}
    assert control.query(server.server.path)["sessions"] == SESSIONS


def test_silent_reader_does_not_block_others(server: ServerThread) -> None:
    """A connection that never sends a request is dropped after QUERY_TIMEOUT, meanwhile
    other readers are answered at once."""
    path = server.server.path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(path))
        start = time.monotonic()
        assert control.query(path)["sessions"] == SESSIONS
        assert time.monotonic() - start < control.QUERY_TIMEOUT / 2
        silent.settimeout(control.QUERY_TIMEOUT + 3)
        assert silent.recv(100) == b""  # closed by the server, without a reply


# -- query() on bad servers ---------------------------------------------------------------------


class FakeServer:
    """A Unix socket that answers every connection with fixed bytes (or not at all)."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                conn.recv(4096)
                if self.reply is not None:
                    conn.sendall(self.reply)

    def __enter__(self) -> FakeServer:
        if self.reply is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b'{"v": 1, "error": "unknown command \'x\'"}\n', "unknown command 'x'"),
        (b"[1, 2]\n", "bad reply"),
        (b"garbage\n", "reply is not JSON"),
        (b'{"v": 2, "kind": "client", "pid": 1, "sessions": []}\n', "protocol v2, not v1"),
        (b"", "reply is not JSON"),
    ],
    ids=["error", "not-object", "not-json", "other-version", "empty"],
)
def test_query_rejects_bad_replies(run_dir: Path, reply: bytes, message: str) -> None:
    path = control.socket_path("client", "fake")
    with FakeServer(path, reply), pytest.raises(control.ControlError) as caught:
        control.query(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_query_of_missing_socket_is_a_control_error(run_dir: Path) -> None:
    with pytest.raises(control.ControlError, match="No such file"):
        control.query(control.socket_path("client", "nobody"))


# -- permissions --------------------------------------------------------------------------------


def test_socket_is_0600_and_directory_0700(server: ServerThread, run_dir: Path) -> None:
    path = server.server.path
    assert path.parent == run_dir
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_server_start_restores_the_umask(run_dir: Path) -> None:
    before = os.umask(0o022)
    try:
        with ServerThread(control.socket_path("client", "umask")):
            assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_runtime_dir_is_tightened_to_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(loose))
    assert control.runtime_dir() == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_runtime_dir_is_created_0700_even_with_a_loose_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = tmp_path / "a" / "b"
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(fresh))
    before = os.umask(0)
    try:
        assert control.runtime_dir() == fresh
    finally:
        os.umask(before)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_runtime_dir_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(directory))
    real_uid = os.getuid()
    monkeypatch.setattr(control.os, "getuid", lambda: real_uid + 1)  # we are someone else now
    with pytest.raises(control.ControlError, match="belongs to another user"):
        control.runtime_dir()


def test_runtime_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XDG_RUNTIME_DIR/dupsession when set, else a per-uid directory in the temp dir."""
    monkeypatch.delenv("DUPSESSION_RUNTIME_DIR", raising=False)
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert control.runtime_dir() == xdg / "dupsession"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(control.tempfile, "gettempdir", lambda: str(tmp_path))
    expected = tmp_path / f"dupsession-{os.getuid()}"
    assert control.runtime_dir() == expected
    assert stat.S_IMODE(expected.stat().st_mode) == 0o700


# -- discovery ----------------------------------------------------------------------------------


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed process leaves behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    assert path.exists()


def test_discover_removes_stale_sockets_and_keeps_live_ones(run_dir: Path) -> None:
    stale = control.socket_path("client", "dead")
    _stale_socket(stale)
    with ServerThread(control.socket_path("client", "live")) as live:
        documents = control.discover("client")
        assert [d["sessions"] for d in documents] == [SESSIONS]
        assert not stale.exists()
        assert live.server.path.exists()


def test_discover_filters_by_kind(run_dir: Path) -> None:
    relay_sessions = [{"session_id": "aa" * 8, "role": "exit", "paths": []}]
    with (
        ServerThread(control.socket_path("client", "one")),
        ServerThread(control.socket_path("relayd", "7300"), "relayd", lambda: relay_sessions),
    ):
        assert [d["kind"] for d in control.discover("client")] == ["client"]
        assert [d["kind"] for d in control.discover("relayd")] == ["relayd"]
        assert sorted(d["kind"] for d in control.discover()) == ["client", "relayd"]
        assert control.discover("relayd")[0]["sessions"] == relay_sessions


def test_discover_keeps_a_live_but_unresponsive_socket(run_dir: Path) -> None:
    """Listening but not answering (a busy process) is not stale: never delete it."""
    path = control.socket_path("client", "busy")
    with FakeServer(path, reply=None):
        assert control.discover("client") == []
        assert path.exists()


def test_close_removes_the_socket(run_dir: Path) -> None:
    with ServerThread(control.socket_path("client", "closing")) as thread:
        path = thread.server.path
        assert path.exists()
    assert not path.exists()
    assert control.discover("client") == []


# -- the status command's use of it ------------------------------------------------------------


def test_status_reports_an_unusable_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory that is not ours: one line saying why and exit 1, not a traceback."""
    from dupsession import status

    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("DUPSESSION_RUNTIME_DIR", str(directory))
    real_uid = os.getuid()
    monkeypatch.setattr(control.os, "getuid", lambda: real_uid + 1)
    for kind, program in (("client", "dupsession"), ("relayd", "relayd")):
        assert status.run(kind, once=True, as_json=False) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{program} status: ") and "belongs to another user" in err


def test_status_key_reader_at_eof_sleeps_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dupsession import status

    with open(os.devnull) as devnull:
        monkeypatch.setattr(status.sys, "stdin", devnull)
        keys = status._Keys()
        start = time.monotonic()
        assert keys.wait(0.1) == "" and keys.wait(0.1) == ""
        assert time.monotonic() - start >= 0.2


def test_status_key_reader_returns_typed_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from dupsession import status

    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as reader, os.fdopen(write_end, "w") as writer:
        monkeypatch.setattr(status.sys, "stdin", reader)
        keys = status._Keys()
        assert keys.wait(0.05) == ""
        writer.write("q")
        writer.flush()
        assert keys.wait(1.0) == "q"
