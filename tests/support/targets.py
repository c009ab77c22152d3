"""Plain TCP targets for driving `dupsession` directly (no ssh): in-process or socat.

`TcpTarget` serves one kind of peer per instance on 127.0.0.1, each connection in a thread:
- "echo": sends back every byte as it arrives, and shuts down its write side after EOF;
- "after-eof": says nothing until the client's EOF (half-close), then sends back the
  sha256 hex digest of everything it received plus a newline, and closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import threading
import time

from dupsession.testing.lifecycle import Running
from tests.support.processes import descendants, stop_pid
from tests.support.sshd import free_port, require_binary

ACCEPT_POLL = 0.1  # seconds between checks for close() in the accept loop
CONN_TIMEOUT = 30.0  # seconds a target connection may sit idle


class TcpTarget(Running):
    def __init__(self, mode: str) -> None:
        assert mode in ("echo", "after-eof")
        self.mode = mode
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(ACCEPT_POLL)
        self.port: int = self._sock.getsockname()[1]
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self.received: list[bytes] = []  #: per connection, everything it got before EOF
        self.saw_eof: list[bool] = []  #: per connection, whether the client half-closed
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(CONN_TIMEOUT)
            index = len(self._conns)
            self._conns.append(conn)
            self.received.append(b"")
            self.saw_eof.append(False)
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        chunks: list[bytes] = []
        try:
            while data := conn.recv(1 << 16):
                chunks.append(data)
                if self.mode == "echo":
                    conn.sendall(data)
            self.saw_eof[index] = True
            self.received[index] = b"".join(chunks)
            if self.mode == "after-eof":
                conn.sendall(hashlib.sha256(self.received[index]).hexdigest().encode() + b"\n")
            conn.shutdown(socket.SHUT_WR)
            # Wait for the peer to finish too, so the close is orderly (FIN, not RST).
            while conn.recv(1 << 16):
                pass
        except OSError:
            self.received[index] = b"".join(chunks)
        finally:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self._sock.close()
        self._accepter.join(5)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


class SocatEcho(Running):
    """`socat TCP-LISTEN:PORT,fork EXEC:cat` on 127.0.0.1; stopped by its PID."""

    #: socat gives the other direction only 0.5 s after one side's EOF (its `-t` default) and
    #: then drops what `cat` has not echoed yet (without dupsession: a reader that pauses 1 s
    #: after its half-close got 2927589 of 3000000 bytes). cat's own EOF still ends the
    #: session at once. (The truncated echoes CI saw were dupsession's own bug, a peer's CLOSE
    #: dropping what stdout had not taken: tests/e2e/test_direct.py's slow-reader test.)
    HALF_CLOSE_WAIT = "30"

    def __init__(self) -> None:
        self.socat = require_binary("socat")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                [
                    self.socat,
                    "-t",
                    self.HALF_CLOSE_WAIT,
                    f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
                    "EXEC:cat",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.process.poll() is None:
                # A probe connection would fork a `cat`: look at the listener table instead.
                if _listening(self.port):
                    return
                time.sleep(0.02)
            self.close()
        raise RuntimeError("socat would not listen")

    def close(self) -> None:
        if self.process is None:
            return
        # Per-connection socat children and their `cat`s first, each by its PID.
        for pid in descendants(self.process.pid):
            stop_pid(pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _listening(port: int) -> bool:
    """Whether something listens on TCP 127.0.0.1:`port`, from /proc/net/tcp (no connect)."""
    needle = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == needle and fields[3] == "0A":  # 0A = LISTEN
                return True
    return False
