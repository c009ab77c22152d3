"""Tools for attack tests against a real relayd: a recording tap, an attacker socket that
counts what comes back, a live echo session, and an in-process key holder.

Every socket is on loopback; attackers bind other loopback addresses (127.0.0.2 and up) so
relayd sees them as other sources. Every thread stops at close().
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dupsession.core import wire
from dupsession.core.handshake import ClientHandshake, SessionKeys
from dupsession.core.session import Role, Session
from dupsession.testing.lifecycle import Running
from tests.support.sshd import require_binary

POLL = 0.05


class UdpTap:
    """Forwards datagrams client <-> exit on loopback and records the client's frames."""

    def __init__(self, exit_addr: tuple[str, int]) -> None:
        self.exit_addr = exit_addr
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port: int = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self.captured: list[bytes] = []  #: every frame from the client, in order
        #: Withhold the client's next ACK and hold everything after it until `release()`: an
        #: on-path attacker racing that ACK from its own address.
        self.drop_next_ack = threading.Event()
        self.withheld: list[bytes] = []
        self._held: list[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], POLL)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                if sock is self.front:
                    self.client = addr
                    self.captured.append(data)
                    if data[1] == wire.FrameType.ACK and self.drop_next_ack.is_set():
                        self.drop_next_ack.clear()
                        self.withheld.append(data)
                        self._held = []
                        continue
                    if self._held is not None:
                        self._held.append(data)
                        continue
                    self.back.sendto(data, self.exit_addr)
                elif self.client is not None:
                    self.front.sendto(data, self.client)

    def release(self) -> None:
        """Forward what was held back, and everything from now on."""
        held, self._held = self._held, None
        for data in held or []:
            self.back.sendto(data, self.exit_addr)

    def frames(self, ftype: int) -> list[bytes]:
        return [f for f in self.captured if len(f) > 1 and f[1] == ftype]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.front.close()
        self.back.close()


class Attacker:
    """A UDP socket on another loopback address; counts every byte sent to it."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.sent = 0
        self.received = 0
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], POLL)
            if ready:
                data = self.sock.recv(65535)
                self.received += len(data)
                self.frames.append(data)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)
        self.sent += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class EchoSession:
    """`dupsession` (a real process) to an echo target; type lines and wait for their echo."""

    def __init__(self, key: Path, paths: list[str], target_port: int) -> None:
        argv = [require_binary("dupsession"), "--key", str(key)]
        for path in paths:
            argv += ["--path", path]
        argv += ["127.0.0.1", str(target_port)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""

    def roundtrip(self, line: bytes, timeout: float = 3.0) -> bool:
        """Send `line` and wait for it to come back; False if it did not within `timeout`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line)
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while line not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                return False
            select.select([self.process.stdout], [], [], min(left, POLL))
            with contextlib.suppress(BlockingIOError):
                chunk = self.process.stdout.read(65536)
                if chunk:
                    self._buffer += chunk
        self._buffer = self._buffer.split(line, 1)[1]
        return True

    def wait(self, timeout: float) -> tuple[int, str]:
        """Exit code and stderr, waiting at most `timeout` (then killed: the test fails)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"dupsession still running after {timeout} s") from None
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class KeyHolder(Running):
    """A client built from the sans-IO core over one UDP socket: it holds the key, and does
    what a malicious key holder would (forge fresh frames, never read)."""

    def __init__(self, psk: bytes, exit_addr: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.exit_addr = exit_addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(POLL)
        self.psk = psk
        self.handshake = ClientHandshake(psk, wire.PROBE_TARGET, time.time())
        self.session: Session | None = None
        self.keys: SessionKeys | None = None
        self.welcome: wire.Welcome | None = None

    def connect(self, target: str = wire.PROBE_TARGET, timeout: float = 10.0) -> wire.Welcome:
        """HELLO (resent every `POLL`) until a WELCOME; 10 s: a session worker's start, on a
        busy machine, comes first."""
        if target != wire.PROBE_TARGET:
            self.handshake = ClientHandshake(self.psk, target, time.time())
        hello = self.handshake.hello_frame(1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.sendto(hello, self.exit_addr)
            with contextlib.suppress(TimeoutError):
                frame = self.sock.recv(65535)
                if frame[1] == wire.FrameType.WELCOME:
                    welcome, keys = self.handshake.accept(1, frame)
                    self.welcome, self.keys = welcome, keys
                    if keys is not None:
                        self.session = Session(
                            Role.CLIENT, self.handshake.session_id, keys, time.monotonic()
                        )
                        self.session.add_path(1, True, time.monotonic())
                    return welcome
        raise AssertionError("no WELCOME from the exit")

    def pump(self, seconds: float) -> Iterator[None]:
        """Run the session for `seconds`: feed what arrives, send what it says; yields often."""
        session = self.session
        assert session is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            for frames in session.transmit(now).values():
                for frame in frames:
                    self.sock.sendto(frame, self.exit_addr)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                self.sock.settimeout(0.005)
                while True:
                    frame = self.sock.recv(65535)
                    session.receive_frame(frame, time.monotonic(), 1)
            while session.next_event() is not None:
                pass
            session.handle_timer(time.monotonic())
            yield

    def close(self) -> None:
        self.sock.close()


def process_rss(pid: int) -> int:
    """Resident set size of a process, bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
