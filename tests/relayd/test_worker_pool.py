"""Session workers' bounds, in this process over real worker processes and real sockets: the
dispatcher's `WorkerPool` (start timeout, a lowered cap), a worker's handshake deadline, its
per-address sockets (least recently used out first) and the listener's reuseport group (the
BPF program's guard of a socket between its bind and its connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from dupsession.core import wire
from relayd import channel, reuseport, workers
from relayd.acl import AllowList
from relayd.limits import Limits
from relayd.server import ExitConfig
from relayd.worker import MAX_PEER_SOCKETS, PeerSockets
from relayd.workers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _config(limits: Limits) -> Callable[[], bytes]:
    config = ExitConfig(("127.0.0.1", 0), os.urandom(32), AllowList.parse([]), limits=limits)
    message = channel.CONFIG + pickle.dumps((config, ("127.0.0.1", 9), logging.INFO))
    return lambda: message


def _no_bounce(data: bytes, addr: tuple[str, int]) -> None:
    raise AssertionError("nothing is bounced here")


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.02)


async def _ready_spare(pool: WorkerPool) -> workers.Worker:
    """The pool's spare once READY (as long as the pool itself gives it, and then some)."""
    await _until(
        lambda: pool.spare is not None and pool.spare.ready,
        workers.WORKER_START_TIMEOUT + 5,
        "a READY spare",
    )
    assert pool.spare is not None
    return pool.spare


@contextlib.contextmanager
def _pool(cap: int, limits: Limits) -> Iterator[WorkerPool]:
    """A started pool; whatever happens, no worker outlives the test (killed by PID, reaped)."""
    pool = WorkerPool(_config(limits), cap, _no_bounce)
    pool.start()
    try:
        yield pool
    finally:
        for worker in list(pool.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            worker.proc.wait(5)
            worker.sock.close()


def test_a_worker_not_ready_in_time_is_killed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A spare that does not say READY within `WORKER_START_TIMEOUT` (here 1 s: stopped
    before its interpreter got that far) is killed, and the next one starts after
    `RESPAWN_DELAY`, not in a tight loop."""
    monkeypatch.setattr(workers, "WORKER_START_TIMEOUT", 1.0)

    async def scenario() -> None:
        with _pool(1, Limits()) as pool:
            stalled = pool.spare
            assert stalled is not None
            os.kill(stalled.pid, signal.SIGSTOP)  # microseconds after its exec: not READY
            started = time.monotonic()
            await _until(lambda: not stalled.alive, 5, "the stalled worker's end")
            assert time.monotonic() - started >= 0.9
            gone = time.monotonic()
            assert stalled.proc.wait(5) == -signal.SIGKILL and not stalled.ready
            # The next spare (spawned RESPAWN_DELAY later) gets the normal start time: on a
            # busy machine an interpreter's start takes seconds, more than this test's 1 s.
            monkeypatch.setattr(workers, "WORKER_START_TIMEOUT", 10.0)
            await _until(lambda: pool.spare is not None, 10, "the next spare")
            assert time.monotonic() - gone >= 0.9 * workers.RESPAWN_DELAY  # not at once
            await _ready_spare(pool)  # and it starts
            await pool.close("test over")

    with caplog.at_level(logging.INFO, "relayd"):
        asyncio.run(scenario())
    assert "not ready in 1 s: killed" in caplog.text


def test_a_worker_whose_session_never_comes_exits(capfd: pytest.CaptureFixture[str]) -> None:
    """A worker ASSIGNed a session whose HELLO never reaches it (a lost forward) exits at the
    handshake timeout (here 1 s), and its slot is free again."""

    async def scenario() -> None:
        with _pool(1, Limits(handshake_timeout=1.0)) as pool:
            spare = await _ready_spare(pool)
            worker = pool.assign(os.urandom(8), os.urandom(16), "127.0.0.1", "key")
            assert worker is spare and pool.busy() == 1
            started = time.monotonic()
            await _until(lambda: not worker.alive, 5, "the worker's exit")
            assert time.monotonic() - started >= 0.9
            assert worker.proc.wait(5) == 0
            assert pool.busy() == 0 and pool.available()
            await pool.close("test over")

    asyncio.run(scenario())
    assert "no handshake within 1 s" in capfd.readouterr().err


def test_a_cap_lowered_to_zero_stops_the_spare(caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP with session_processes 0: the idle spare is stopped, none is started again."""

    async def scenario() -> None:
        with _pool(2, Limits()) as pool:
            spare = await _ready_spare(pool)
            pool.reconfigure(0)
            assert pool.spare is None and not spare.alive and not pool.workers
            assert spare.proc.wait(5) is not None
            await asyncio.sleep(workers.RESPAWN_DELAY + 0.2)
            assert not pool.workers
            await pool.close("test over")

    with caplog.at_level(logging.INFO, "relayd"):
        asyncio.run(scenario())
    assert "beyond the new cap of 0, stopped" in caplog.text


def _junk(session_id: bytes, size: int) -> bytes:
    """An unauthenticated frame naming `session_id` (the id travels in clear)."""
    return bytes([wire.VERSION, wire.FrameType.ACK, 0, 1]) + session_id + os.urandom(size)


def test_a_forward_flood_leaves_room_for_a_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A default kernel's channel (2 x wmem_max 212992: 416 KiB) holds ~185 datagrams of
    1.4 KB, fewer than the rate limits pass in a burst (1000, from 10 sources here). Datagram
    forwards stop at half the send buffer, so a SIGHUP's CONFIG still goes to a worker whose
    channel is flooded (before: "missed the new configuration", and the worker killed)."""
    monkeypatch.setattr(channel, "CHANNEL_BUFFER", 212992)

    async def scenario() -> None:
        with _pool(2, Limits()) as pool:
            spare = await _ready_spare(pool)
            session_id = os.urandom(8)
            worker = pool.assign(session_id, os.urandom(16), "127.0.0.1", "key")
            assert worker is spare and worker.send_buffer <= 2 * 212992
            frame = _junk(session_id, 1376)  # 1388 bytes
            os.kill(worker.pid, signal.SIGSTOP)  # reads nothing meanwhile: the worst case
            try:
                for i in range(1000):  # 10 sources x 100: within both rate limits
                    pool.forward(worker, frame, (f"127.0.1.{i % 10}", 4000))
                assert worker.limited == 0 and worker.lost >= 1, (worker.forwarded, worker.lost)
                assert channel.queued(worker.sock) <= worker.send_buffer // 2 + 4096
                with caplog.at_level(logging.WARNING, "relayd"):
                    pool.reconfigure(2)  # a SIGHUP now: its CONFIG must go
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            await asyncio.sleep(0.5)
            assert worker.alive and worker.proc.poll() is None
            assert pool.facts()["lost"] == worker.lost
            await pool.close("test over")

    asyncio.run(scenario())
    assert "missed the new configuration" not in caplog.text


def test_a_verified_hello_passes_a_flooded_source() -> None:
    """Junk naming session A from an address spends that address's forwarding budget for A's
    worker only: the verified HELLO of a new session B from the same address reaches B's
    worker (before: one pool-wide bucket per IP, and B's HELLO was dropped)."""

    async def scenario() -> None:
        with _pool(2, Limits()) as pool:
            a = await _ready_spare(pool)
            session_a = os.urandom(8)
            assert pool.assign(session_a, os.urandom(16), "127.0.0.1", "key") is a
            b = await _ready_spare(pool)
            for _ in range(300):  # a key holder (or a CGNAT neighbour) naming A from a new port
                pool.forward(a, _junk(session_a, 40), ("127.0.0.1", 5555))
            assert a.limited >= 1  # the source's budget for A is spent
            session_b = os.urandom(8)
            assert pool.assign(session_b, os.urandom(16), "127.0.0.1", "key") is b
            hello = bytes([wire.VERSION, wire.FrameType.HELLO, 0, 1]) + session_b + bytes(200)
            assert pool.forward(b, hello, ("127.0.0.1", 6666)), (b.limited, b.lost)
            await pool.close("test over")

    asyncio.run(scenario())


def test_forwards_to_one_worker_are_bounded_from_all_sources() -> None:
    """Spoofed sources (20 here, each within its own burst of 200) meet the per-worker bound:
    at most `FORWARD_RATE_PER_WORKER` a second (burst as many) pass the rate limits."""

    async def scenario() -> None:
        with _pool(1, Limits()) as pool:
            worker = await _ready_spare(pool)
            session_id = os.urandom(8)
            assert pool.assign(session_id, os.urandom(16), "127.0.0.1", "key") is worker
            frame = _junk(session_id, 40)
            started = time.monotonic()
            for i in range(4000):
                pool.forward(worker, frame, (f"127.0.0.{20 + i % 20}", 4000))
            seconds = time.monotonic() - started
            passed = worker.forwarded + worker.lost  # passed both rate limits
            assert 1000 <= passed <= workers.FORWARD_RATE_PER_WORKER * (1 + seconds), seconds
            assert worker.limited == 4000 - passed
            await pool.close("test over")

    asyncio.run(scenario())


def test_a_sources_data_does_not_starve_its_ack() -> None:
    """A client rebinding during an upload: its DATA from the new address reaches the
    dispatcher and is held at the per-source rate; its fresh ACK, which moves the path to a
    direct socket, has a bucket of its own and still passes (before: the same bucket)."""

    async def scenario() -> None:
        with _pool(1, Limits()) as pool:
            worker = await _ready_spare(pool)
            session_id = os.urandom(8)
            assert pool.assign(session_id, os.urandom(16), "127.0.0.1", "key") is worker
            data = bytes([wire.VERSION, wire.FrameType.DATA, 0, 1]) + session_id + bytes(100)
            for _ in range(300):
                pool.forward(worker, data, ("127.0.0.1", 5555))
            assert worker.limited >= 1  # the source's DATA budget is spent
            assert pool.forward(worker, _junk(session_id, 40), ("127.0.0.1", 5555))
            await pool.close("test over")

    asyncio.run(scenario())


# ---------------------------------------------------------------------- sockets, the group


class _Heard:
    """What a worker's sockets read, by source address (`WorkerServer.datagrams_in`)."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []

    def datagrams_in(self, frames: list[bytes], addr: tuple[str, int]) -> None:
        self.sources.append(addr)


def _clients(count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        clients.append(sock)
    return clients


def _drain(sock: socket.socket, wait: float = 0.2) -> list[tuple[str, int]]:
    """Sources of what `sock` holds (waiting up to `wait` for the first)."""
    sources = []
    while select.select([sock], [], [], wait)[0]:
        sources.append(sock.recvfrom(65535)[1])
        wait = 0.05
    return sources


def test_a_workers_sockets_go_least_recently_used_first() -> None:
    """At `MAX_PEER_SOCKETS`, a new client address closes the socket of the address least
    recently heard from or sent to, not the oldest: the busiest path keeps its direct socket
    (its datagrams reach the worker, not the listener)."""

    async def scenario() -> None:
        listener = reuseport.listener("127.0.0.1", 0)
        clients = _clients(MAX_PEER_SOCKETS + 2)
        heard = _Heard()
        peers = PeerSockets(cast(Any, heard), listener.getsockname())
        try:
            addrs = [c.getsockname() for c in clients]
            for addr in addrs[:MAX_PEER_SOCKETS]:
                peers.send_frames([b"challenge"], addr)
            # The oldest address is heard from (its socket reads it), the second oldest sent to.
            clients[0].sendto(b"typing", listener.getsockname())
            await _until(lambda: addrs[0] in heard.sources, 2, "the first address's datagram")
            peers.send_frames([b"echo"], addrs[1])
            peers.send_frames([b"challenge"], addrs[-2])
            peers.send_frames([b"challenge"], addrs[-1])
            # The first two addresses still reach the worker, the next two the listener
            # (from where the dispatcher would forward them).
            heard.sources.clear()
            for client in clients[:4]:
                client.sendto(b"typing", listener.getsockname())
            await _until(lambda: len(heard.sources) == 2, 2, "two datagrams in the worker")
            assert sorted(heard.sources) == sorted(addrs[:2])
            assert sorted(_drain(listener)) == sorted(addrs[2:4])
        finally:
            peers.close()
            listener.close()
            for client in clients:
                client.close()

    asyncio.run(scenario())


def test_a_socket_between_its_bind_and_connect_gets_no_other_clients_datagram() -> None:
    """A worker's new socket joins the listener's group at bind and matches its client only
    at connect: in between, the group's hash would hand it other clients' datagrams (the
    control below shows it does). The BPF program ("return 0") sends every datagram no
    connected socket matches to the listener."""
    clients = _clients(32)
    with contextlib.ExitStack() as stack:
        for client in clients:
            stack.callback(client.close)
        for steered in (True, False):
            if steered:
                first = stack.enter_context(reuseport.listener("127.0.0.1", 0))
            else:  # the control: the same group without the program
                first = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                first.bind(("127.0.0.1", 0))
            local = first.getsockname()
            window = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            window.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            window.bind(local)  # reuseport.peer_socket's state before its connect
            for client in clients:
                client.sendto(b"x", local)
            strays, listened = _drain(window), _drain(first)
            assert len(strays) + len(listened) == len(clients)
            if steered:
                assert strays == [], f"{len(strays)} of {len(clients)} went to the window"
            else:
                assert strays, "the control: the hash never chose the second socket"
