"""`dupsession forward` as a subprocess for tests: started, its port read, stopped by PID."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from dupsession.testing.lifecycle import Running
from tests.support.sshd import require_binary

START_TIMEOUT = 15.0
LISTENING = re.compile(r"listening on (\S+):(\d+) ->")


class Forward(Running):
    """`dupsession forward ARGS` with stderr captured; `.port` is where it listens."""

    def __init__(
        self,
        args: Sequence[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        listeners: int = 1,
    ):
        self.listeners = listeners
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(workdir / "run"), **(env or {})}
        self.argv = [require_binary("dupsession"), "forward", *args]
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        self._stderr = b""
        self.ports: list[int] = []

    def start(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.ports) < self.listeners and time.monotonic() < deadline:
            self._read(0.1)
            self.ports = [int(m.group(2)) for m in LISTENING.finditer(self.stderr)]
            if self.process.poll() is not None:
                self._read(0.1)
                raise AssertionError(f"dupsession forward exited:\n{self.stderr}")
        if len(self.ports) < self.listeners:
            self.stop()
            raise AssertionError(f"dupsession forward did not listen:\n{self.stderr}")

    def close(self) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def _read(self, timeout: float) -> None:
        pipe = self.process.stderr
        if pipe is None or pipe.closed:
            return
        while select.select([pipe], [], [], timeout)[0]:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                return
            self._stderr += chunk
            timeout = 0

    def wait_for_stderr(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            found = re.search(pattern, self.stderr)
            if found:
                return found
        raise AssertionError(f"{pattern!r} never on stderr:\n{self.stderr}")

    def connect(self, timeout: float = 30.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def stop(self) -> int:
        """SIGTERM by PID; returns the exit code (SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self._read(0)
            self.process.stderr.close()
        return self.process.returncode


def recv_all(sock: socket.socket) -> bytes:
    """Everything until the peer's EOF."""
    parts = []
    while chunk := sock.recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)
