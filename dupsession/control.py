"""The local control channel: every running `dupsession` and `relayd` answers snapshots here.

A Unix socket per process in the per-user runtime directory (mode 0700 directory, 0600 socket):
never a network port, so only the user (and root) can read their sessions' state.

Protocol, version 1, one JSON object per line:

    request:  {"v": 1, "cmd": "snapshot"}
    reply:    {"v": 1, "kind": "client" | "relayd", "pid": 123, "sessions": [SESSION, ...],
               "daemon": {...}}   (relayd only: version, listen, allow, uptime, max_sessions)
    error:    {"v": 1, "error": "unknown command 'x'"}

SESSION is `Session.snapshot()` plus the endpoint's fields (target, per-path `spec`,
`uplink`, `via`); docs/CONTROL.md lists every field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

from dupsession.core.session import SessionState

VERSION = 1
#: A session's `state` as the control protocol (and the status view) names it.
STATE_NAMES = {
    SessionState.OPEN: "up",
    SessionState.RESUMING: "resuming",
    SessionState.CLOSED: "closed",
}
MAX_REQUEST = 4096
QUERY_TIMEOUT = 1.0


class ControlError(Exception):
    """A control socket that does not answer or answers nonsense, or an unsafe directory."""


def runtime_dir() -> Path:
    """Where control sockets live: 0700 and ours, so other users cannot even list them.

    `DUPSESSION_RUNTIME_DIR` overrides (tests, several users of one account). Without
    XDG_RUNTIME_DIR, platformdirs would fall back to a guessable /tmp path another user could
    create first; we use our own name there and refuse a directory we do not own.
    """
    override = os.environ.get("DUPSESSION_RUNTIME_DIR")
    if override:
        base = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(platformdirs.user_runtime_dir("dupsession"))
    else:
        base = Path(tempfile.gettempdir()) / f"dupsession-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = base.stat()
    if info.st_uid != os.getuid():
        raise ControlError(f"{base} belongs to another user; set DUPSESSION_RUNTIME_DIR")
    if info.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


def socket_path(kind: str, name: str) -> Path:
    return runtime_dir() / f"{kind}-{name}.sock"


class ControlServer:
    """Serves `snapshot()` to local readers; one per process."""

    def __init__(
        self,
        path: Path,
        kind: str,
        snapshot: Callable[[], list[dict[str, Any]]],
        daemon: Callable[[], dict[str, Any]] | None = None,
    ):
        self.path = path
        self.kind = kind
        self._snapshot = snapshot
        self._daemon = daemon  #: the process's own facts (relayd: listen, allow, uptime)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where it is wider
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    def document(self) -> dict[str, Any]:
        document = {"v": VERSION, "kind": self.kind, "pid": os.getpid()}
        if self._daemon is not None:
            document["daemon"] = self._daemon()
        document["sessions"] = self._snapshot()
        return document

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), QUERY_TIMEOUT)
            except ValueError:  # longer than MAX_REQUEST without a newline
                reply: dict[str, Any] = {"v": VERSION, "error": "request too long"}
            else:
                reply = self._answer(line)
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"v": VERSION, "error": "request is not JSON"}
        version = request.get("v") if isinstance(request, dict) else None
        if type(version) is not int or version != VERSION:
            return {"v": VERSION, "error": f"unsupported request version (this is v{VERSION})"}
        if request.get("cmd") != "snapshot":
            return {"v": VERSION, "error": f"unknown command {request.get('cmd')!r}"}
        return self.document()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query(path: Path, timeout: float = QUERY_TIMEOUT) -> dict[str, Any]:
    """One snapshot from one control socket (blocking: for CLIs and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"v": VERSION, "cmd": "snapshot"}).encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError(f"{path}: reply is not JSON") from exc
    if not isinstance(document, dict):
        raise ControlError(f"{path}: bad reply")
    if "error" in document:
        raise ControlError(f"{path}: {document['error']}")
    if document.get("v") != VERSION:
        raise ControlError(f"{path}: speaks control protocol v{document.get('v')}, not v{VERSION}")
    return document


def discover(kind: str | None = None, directory: Path | None = None) -> list[dict[str, Any]]:
    """Snapshots of every live process; sockets of dead processes are removed."""
    base = directory or runtime_dir()
    pattern = f"{kind}-*.sock" if kind else "*.sock"
    documents = []
    for path in sorted(base.glob(pattern)):
        try:
            documents.append(query(path))
        except ControlError:
            if _is_stale(path):
                with contextlib.suppress(OSError):
                    path.unlink()
    return documents


def _is_stale(path: Path) -> bool:
    """A socket nobody listens on (its process died without cleaning up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect(str(path))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False
