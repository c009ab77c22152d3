"""`relayd serve --session-processes N`: sessions in worker processes, over real sockets and
real processes (relayd/workers.py, relayd/worker.py): end to end on UDP and TCP paths, a
roaming client, a killed worker, HELLOs that must spawn nothing, status.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dupsession.core import wire
from dupsession.core.handshake import ClientHandshake
from dupsession.keyfile import load
from relayd.workers import FORWARD_RATE_PER_SOURCE, WORKER_START_TIMEOUT
from tests.support.attack import Attacker, EchoSession, UdpTap
from tests.support.processes import wait_for
from tests.support.relay import Relay, start_relay, started_relays
from tests.support.sshd import require_binary
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(60)

WORKER = re.compile(r"to worker (\d+)")


@pytest.fixture
def echo() -> Iterator[TcpTarget]:
    with TcpTarget("echo") as target:
        yield target


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """relayd with session workers (2; `extra_args=cap(n)` for another cap, the last flag
    wins); each stopped and checked clean at teardown."""
    yield from ready_relays(tmp_path, cap(2))


def ready_relays(
    workdir: Path, extra_args: Sequence[str], check: Callable[[Relay], None] | None = None
) -> Iterator[Callable[..., Relay]]:
    """`started_relays`, each relayd returned once its spare worker is READY."""
    relays = started_relays(workdir, extra_args, check)
    start = next(relays)

    def ready(*args: Any, **kwargs: Any) -> Relay:
        relay = start(*args, **kwargs)
        spare_ready(relay)
        return relay

    yield ready
    yield from relays  # the teardown


def cap(processes: int) -> list[str]:
    return ["--session-processes", str(processes)]


def spare_ready(relay: Relay, count: int = 1) -> None:
    """Wait for the `count`th worker's READY (its interpreter started and read its CONFIG), as
    long as the dispatcher itself gives it: on a busy machine a start takes seconds."""
    wait_for(
        lambda: len(re.findall(r"session worker \d+ ready", relay.log)) >= count,
        WORKER_START_TIMEOUT + 5,
        f"worker {count} READY",
    )


def served_by_a_worker(relay: Relay) -> None:
    """Every session this relayd opened was opened in a worker: a test run with workers on
    that measured the dispatcher's own sessions would prove nothing about workers."""
    opened = re.findall(r"(relayd\[worker \d+\]|relayd) INFO session \w+: opened", relay.log)
    assert all(who != "relayd" for who in opened), relay.log


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return {c for c in found if _alive(c)}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def status(relay: Relay) -> dict[str, Any]:
    """`relayd status --json` of this relayd (its control socket), one document."""
    result = subprocess.run(
        [require_binary("relayd"), "status", "--json", "--control", str(_control(relay))],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    return docs[0] if isinstance(docs, list) else docs


def _control(relay: Relay) -> Path:
    return Path(re.findall(r"control socket (\S+)", relay.log)[0])


def worker_pids(relay: Relay) -> list[int]:
    return [int(p) for p in WORKER.findall(relay.log)]


def connected_udp_peers(pid: int) -> set[int]:
    """Remote ports of the connected UDP sockets process `pid` holds (/proc/net/udp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, inode = fields[2], fields[9]
        if inode in inodes and not remote.endswith(":0000"):
            ports.add(int(remote.split(":")[1], 16))
    return ports


# ------------------------------------------------------------------------------ end to end


def test_udp_and_tcp_paths_through_a_worker(relays: Callable[..., Relay], echo: TcpTarget) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"])
    tap = UdpTap((relay.host, relay.port))  # to see the client's UDP source port
    session = EchoSession(relay.key, [f"udp://127.0.0.1:{tap.port}", relay.path("tcp")], echo.port)
    try:
        assert session.roundtrip(b"first\n", 10), relay.log
        (pid,) = worker_pids(relay)
        assert pid in children(relay.pid), "the session's worker is not relayd's child"
        assert "opened for target" in relay.log and f"relayd[worker {pid}]" in relay.log
        for n in range(20):
            assert session.roundtrip(f"line {n}\n".encode(), 3), relay.log
        # The worker answers from a socket connected to the client's address, so the
        # kernel delivers that address's datagrams to it: the dispatcher passed it the HELLO,
        # the TCP connection and a few early datagrams, not the 20 lines' hundred-odd frames.
        assert tap.back.getsockname()[1] in connected_udp_peers(pid)
        facts = status(relay)["daemon"]["session_processes"]
        assert facts["serving"] == 1 and facts["pids"] == [pid] and facts["cap"] == 2
        assert facts["forwarded"] < 20, facts
        # The echo went both ways on both kinds of path.
        tcp_only = EchoSession(relay.key, [relay.path("tcp")], echo.port)
        try:
            assert tcp_only.roundtrip(b"tcp only\n", 10), relay.log
            assert len(worker_pids(relay)) == 2
        finally:
            tcp_only.close()
    finally:
        session.close()
        tap.close()


class Rebinder:
    """A UDP hop whose upstream source port changes on `rebind()`: a NAT rebinding."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.port = self.down.getsockname()[1]
        self.up = self._new_up()
        self.client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _new_up(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock

    def rebind(self) -> int:
        old, self.up = self.up, self._new_up()
        time.sleep(0.05)
        old.close()
        return int(self.up.getsockname()[1])

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            up = self.up
            with contextlib.suppress(OSError, ValueError):
                ready, _, _ = select.select([self.down, up], [], [], 0.05)
                for sock in ready:
                    data, addr = sock.recvfrom(65535)
                    if sock is self.down:
                        self.client = addr
                        up.sendto(data, self.upstream)
                    elif self.client is not None:
                        self.down.sendto(data, self.client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.down.close()
        self.up.close()


def _type_until(session: EchoSession, relay: Relay, pattern: str) -> None:
    """Type lines (each must come back) until relayd logs `pattern` (15 s at most)."""
    deadline, n = time.monotonic() + 15, 0
    while not re.search(pattern, relay.log):
        assert time.monotonic() < deadline, f"relayd never logged {pattern!r}:\n{relay.log}"
        assert session.roundtrip(f"line {n}\n".encode(), 3), relay.log
        n += 1
        time.sleep(0.05)


def test_a_roaming_udp_path_follows_to_its_worker(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"], extra_args=["--log-level", "debug"])
    hop = Rebinder((relay.host, relay.port))
    session = EchoSession(relay.key, [f"udp://127.0.0.1:{hop.port}"], echo.port)
    try:
        assert session.roundtrip(b"before\n", 10), relay.log
        (pid,) = worker_pids(relay)
        _type_until(session, relay, rf"validated at 127\.0\.0\.1:{hop.up.getsockname()[1]}\b")
        new_port = hop.rebind()
        # Typing on: the new address reaches the dispatcher (the worker has no socket for it
        # yet), which passes it on; the worker challenges it and moves the path once echoed.
        _type_until(session, relay, rf"moved \S+ -> 127\.0\.0\.1:{new_port}\b")
        assert new_port in connected_udp_peers(pid)
    finally:
        session.close()
        hop.close()


# ------------------------------------------------------------------------------- failures


def test_a_killed_worker_ends_its_session_and_frees_its_slot(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"], extra_args=cap(1))
    session = EchoSession(relay.key, [relay.path("udp"), relay.path("tcp")], echo.port)
    try:
        assert session.roundtrip(b"first\n", 10), relay.log
        (pid,) = worker_pids(relay)
        os.kill(pid, signal.SIGKILL)
        # Its frames now reach the dispatcher for an unknown session: a RESET, as after an
        # exit restart, and the client exits 6 at once (not after its grace period).
        code, err = session.wait(15)
        assert code == 6, err
        relay.wait_for_log(rf"session worker {pid} gone")
        assert pid not in children(relay.pid)  # reaped
    finally:
        session.close()
    # The dispatcher lives on, and the cap of 1 is free again: the next session gets a worker.
    again = EchoSession(relay.key, [relay.path("udp")], echo.port)
    try:
        assert again.roundtrip(b"again\n", 10), relay.log
        assert len(worker_pids(relay)) == 2
    finally:
        again.close()


def test_beyond_the_cap_sessions_run_in_the_dispatcher(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"], extra_args=cap(1))
    first = EchoSession(relay.key, [relay.path("udp")], echo.port)
    second = EchoSession(relay.key, [relay.path("udp")], echo.port)
    try:
        assert first.roundtrip(b"one\n", 10) and second.roundtrip(b"two\n", 10), relay.log
        assert len(worker_pids(relay)) == 1
        assert relay.sessions_opened() == 2
        assert len(children(relay.pid)) == 1  # at the cap: no spare either
        docs = status(relay)["sessions"]
        assert len(docs) == 2 and {d["state"] for d in docs} == {"up"}, docs
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------------- attacks


def test_unauthenticated_and_replayed_hellos_spawn_nothing(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"], extra_args=cap(4))
    exit_addr = (relay.host, relay.port)
    spare = children(relay.pid)
    assert len(spare) == 1, "no spare worker"
    psk = load(relay.key)
    hello = ClientHandshake(psk, f"127.0.0.1:{echo.port}", time.time()).hello_frame(1)
    attacker = Attacker()
    with contextlib.ExitStack() as stack:
        stack.callback(attacker.close)
        # Garbage, a HELLO under another key, a HELLO with a flipped byte: no answer, no worker.
        attacker.send(os.urandom(300), exit_addr)
        attacker.send(ClientHandshake(os.urandom(32), "x:1", time.time()).hello_frame(1), exit_addr)
        attacker.send(hello[:40] + bytes([hello[40] ^ 1]) + hello[41:], exit_addr)
        tcp = stack.enter_context(socket.create_connection(exit_addr, timeout=2))
        tcp.sendall(len(hello).to_bytes(2, "big") + hello[:-1] + bytes([hello[-1] ^ 1]))
        time.sleep(0.5)
        assert children(relay.pid) == spare and not worker_pids(relay)
        # The valid HELLO opens one session in the spare...
        client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        client.bind(("127.0.0.1", 0))
        client.settimeout(WORKER_START_TIMEOUT)  # one HELLO, no resend: the spare is READY
        client.sendto(hello, exit_addr)
        assert client.recv(65535)[1] == wire.FrameType.WELCOME
        assert worker_pids(relay) == list(spare)
        relay.wait_for_log(r"session \w+: opened")
        # ...whose worker is killed: the same HELLO replayed, from the attacker's address and
        # over TCP, is refused as a replay: no session, no worker for it.
        os.kill(spare.pop(), signal.SIGKILL)
        relay.wait_for_log(r"session worker \d+ gone")
        attacker.send(hello, exit_addr)
        tcp2 = stack.enter_context(socket.create_connection(exit_addr, timeout=2))
        tcp2.sendall(len(hello).to_bytes(2, "big") + hello)
        relay.wait_for_log(r"replayed hello")
        time.sleep(0.3)
        assert len(worker_pids(relay)) == 1 and attacker.received == 0
        assert relay.sessions_opened() == 1


def _junk(session_id: bytes, size: int) -> bytes:
    """An unauthenticated frame naming `session_id` (the id travels in clear)."""
    return bytes([wire.VERSION, wire.FrameType.ACK, 0, 1]) + session_id + os.urandom(size)


def _facts(relay: Relay) -> dict[str, Any]:
    facts: dict[str, Any] = status(relay)["daemon"]["session_processes"]
    return facts


def _settled_facts(relay: Relay, total: int, timeout: float = 10.0) -> dict[str, Any]:
    """The counters once the dispatcher has handled what reached it: `forwarded + limited`
    reached `total`, or stopped moving (what the listener dropped never counts)."""
    deadline = time.monotonic() + timeout
    facts = _facts(relay)
    while time.monotonic() < deadline:
        seen = facts["forwarded"] + facts["limited"]
        if seen >= total:
            return facts
        time.sleep(0.3)
        facts = _facts(relay)
        if facts["forwarded"] + facts["limited"] == seen:
            return facts
    return facts


def test_datagrams_naming_a_workers_session_are_rate_limited_per_source(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    """An observer who saw a session id floods datagrams naming it from its own address: the
    dispatcher passes the session's worker at most `FORWARD_RATE_PER_SOURCE` of them a second
    (burst twice that), and the session goes on."""
    relay = relays([f"127.0.0.1:{echo.port}"])
    tap = UdpTap((relay.host, relay.port))
    session = EchoSession(relay.key, [f"udp://127.0.0.1:{tap.port}"], echo.port)
    attacker = Attacker("127.0.0.9")
    try:
        assert session.roundtrip(b"first\n", 10), relay.log
        before = _facts(relay)["forwarded"]
        junk = _junk(tap.captured[0][4:12], 100)
        started = time.monotonic()
        for _ in range(40):  # in bursts the listener's buffer holds (little loss)
            for _ in range(50):
                attacker.send(junk, (relay.host, relay.port))
            time.sleep(0.01)
        facts = _settled_facts(relay, before + 2000)
        seconds = time.monotonic() - started
        passed = facts["forwarded"] - before
        assert passed <= FORWARD_RATE_PER_SOURCE * (2 + seconds), facts
        # The limit held them, not loss: this holds even if a busy machine lost hundreds of
        # them at the listener (a relay descheduled for 10 ms), and fails without the limit.
        assert facts["limited"] >= 1000, facts
        assert session.roundtrip(b"after\n", 3), relay.log
        assert attacker.received == 0
    finally:
        attacker.close()
        session.close()
        tap.close()


def test_connections_naming_a_workers_session_stay_counted_until_settled(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    """TCP connections whose first frame only names a worker's session (unauthenticated) are
    passed to the worker, but stay counted against their source's unauthenticated connections
    until the worker says they bound or closed: the per-source limit bounds the hand-overs in
    flight, and a closed one frees its slot at once."""
    relay = relays([f"127.0.0.1:{echo.port}"], extra_args=["--max-pending-per-source", "4"])
    tap = UdpTap((relay.host, relay.port))
    session = EchoSession(relay.key, [f"udp://127.0.0.1:{tap.port}"], echo.port)
    exit_addr = (relay.host, relay.port)
    conns: list[socket.socket] = []
    try:
        assert session.roundtrip(b"first\n", 10), relay.log
        frame = _junk(tap.captured[0][4:12], 40)
        before = _facts(relay)["forwarded"]

        def connect() -> None:
            conn = socket.create_connection(exit_addr, 2, source_address=("127.0.0.10", 0))
            conns.append(conn)
            conn.sendall(struct.pack("!H", len(frame)) + frame)
            time.sleep(0.1)  # read and passed on before the next one comes

        for _ in range(10):
            connect()
        # The dispatcher's own refusal (not a worker's: "relayd[worker N]").
        relay.wait_for_log(r"relayd WARNING refused connection from 127\.0\.0\.10 port \d+: 4 ")
        assert _facts(relay)["forwarded"] - before == 4  # counted when passed on, at once
        assert _facts(relay)["handed"] == 4
        for conn in conns:
            conn.close()
        # The worker drops them and says so (SETTLED): their slots are free again.
        wait_for(lambda: _facts(relay)["handed"] == 0, 10, "the closed connections' SETTLED")
        connect()
        wait_for(lambda: _facts(relay)["forwarded"] - before == 5, 10, "a freed slot used")
        assert session.roundtrip(b"after\n", 3), relay.log
    finally:
        for conn in conns:
            conn.close()
        session.close()
        tap.close()


class SessionNat:
    """A UDP hop that gives every client behind it one source address (a NAT mapping them all
    to one port) and sends replies back by session id."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.port = self.down.getsockname()[1]
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.clients: dict[bytes, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.down, self.up], [], [], 0.05)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                if sock is self.down:
                    self.clients[data[4:12]] = addr
                    self.up.sendto(data, self.upstream)
                elif data[4:12] in self.clients:
                    self.down.sendto(data, self.clients[data[4:12]])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.down.close()
        self.up.close()


def test_a_datagram_for_another_session_goes_back_to_the_dispatcher(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    """Two sessions from one client address: the second one's HELLO (and later its frames, or
    the first's) reaches the socket the first session's worker connected to that address. That
    worker must not answer it (it opens only its assigned session): it passes it back (BOUNCE),
    the dispatcher opens the session in another worker, and both sessions work."""
    relay = relays([f"127.0.0.1:{echo.port}"])
    nat = SessionNat((relay.host, relay.port))
    sessions = [EchoSession(relay.key, [f"udp://127.0.0.1:{nat.port}"], echo.port)]
    try:
        assert sessions[0].roundtrip(b"first\n", 10), relay.log
        (pid,) = worker_pids(relay)
        assert nat.up.getsockname()[1] in connected_udp_peers(pid)
        spare_ready(relay, 2)
        sessions.append(EchoSession(relay.key, [f"udp://127.0.0.1:{nat.port}"], echo.port))
        assert sessions[1].roundtrip(b"second\n", 10), relay.log
        for n in range(5):
            for session in sessions:
                assert session.roundtrip(f"line {n}\n".encode(), 3), relay.log
        facts = _facts(relay)
        assert facts["serving"] == 2 and len(set(worker_pids(relay))) == 2, facts
        assert facts["bounced"] >= 1, facts
    finally:
        for session in sessions:
            session.close()
        nat.close()


def test_sighup_keeps_worker_sessions_and_shutdown_closes_them(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    relay = relays([f"127.0.0.1:{echo.port}"])
    session = EchoSession(relay.key, [relay.path("udp")], echo.port)
    try:
        assert session.roundtrip(b"one\n", 10), relay.log
        # SIGHUP with the flags unchanged: the worker's session stays.
        os.kill(relay.pid, signal.SIGHUP)
        relay.wait_for_log(r"configuration reloaded")
        time.sleep(0.3)
        assert session.roundtrip(b"two\n", 3), relay.log
        # Shutdown: the worker sends CLOSE, the client exits at once (not after its grace),
        # and every worker is gone with relayd.
        pids = children(relay.pid)
        assert pids
        relay.stop()
        code, err = session.wait(10)
        assert code != 0 and "shutting down" in err, err
        assert not any(_alive(p) for p in pids)
    finally:
        session.close()


def test_signals_to_a_worker_hup_and_int_ignored_term_closes_its_session(
    relays: Callable[..., Relay], echo: TcpTarget
) -> None:
    """SIGHUP and Ctrl-C reach a worker with its process group: the dispatcher acts on them,
    the worker not (its session lives on). A SIGTERM of its own (systemd stopping the unit's
    control group) ends its session with a CLOSE, not silence."""
    relay = relays([f"127.0.0.1:{echo.port}"])
    session = EchoSession(relay.key, [relay.path("udp")], echo.port)
    try:
        assert session.roundtrip(b"one\n", 10), relay.log
        (pid,) = worker_pids(relay)
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.3)
        assert _alive(pid) and session.roundtrip(b"two\n", 3), relay.log
        os.kill(pid, signal.SIGTERM)
        code, err = session.wait(5)
        assert code == 6 and "exit shutting down" in err, err
        relay.wait_for_log(rf"session worker {pid} gone")
    finally:
        session.close()


def test_workers_close_their_sessions_when_the_dispatcher_dies(
    tmp_path: Path, echo: TcpTarget
) -> None:
    """A crashed dispatcher leaves no orphan: each worker reads EOF on its channel, sends its
    client a CLOSE (the client learns at once, not after its grace period) and exits."""
    relay = start_relay(tmp_path, [f"127.0.0.1:{echo.port}"], extra_args=cap(2))
    session = EchoSession(relay.key, [relay.path("udp"), relay.path("tcp")], echo.port)
    try:
        assert session.roundtrip(b"hello\n", 10), relay.log
        workers = children(relay.pid)
        assert len(workers) == 2  # the session's and the spare
        os.kill(relay.pid, signal.SIGKILL)
        relay.process.wait(5)
        started = time.monotonic()
        code, err = session.wait(10)
        assert code == 6 and "exit shutting down" in err, err
        assert time.monotonic() - started < 5
        wait_for(lambda: not any(_alive(p) for p in workers), 5, "the workers to exit")
    finally:
        session.close()
        relay.stop(check=False)
