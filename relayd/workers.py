"""Session workers, the dispatcher's side (`relayd serve --session-processes N`).

Why: one event loop serving every session makes a keystroke and its echo wait behind a
download's callbacks (docs/BENCHMARKS.md, "One relayd process per session?"): a session of its
own process halves the exit's p99 under load. The dispatcher (`ExitServer`) keeps the
listeners, HELLO verification, the limits and allow-list, the replay memory and journal, and
this table: session id -> worker. A verified new session goes to a worker process of its own
(`relayd.worker`), which re-runs the handshake on the forwarded HELLO and from then on talks
to the client itself: on UDP through connected sockets in the listener's SO_REUSEPORT group
(the kernel hands it its peers' datagrams, no hop), on TCP through the connection's
descriptor, passed over. The dispatcher forwards only what reaches it: HELLOs and JOINs, and
datagrams from an address the worker has no socket for yet (roaming).

Bounds: at most `Limits.session_processes` workers serve sessions (beyond: the session is
served in the dispatcher's own process, as without the option), plus one spare started ahead
(a Python start-up is a few hundred ms; a cap lowered on SIGHUP stops it); a worker must say
READY within `WORKER_START_TIMEOUT`, exits when its session is gone, and is killed if it does
not quit within `QUIT_TIMEOUT` of being told to. A dead worker's sessions leave the table at its
channel's EOF: their frames then get what an unknown session gets (a RESET), their HELLO
nonces stay remembered (a replay is refused). What the dispatcher passes on is bounded too
(`forward`, `SETTLED`): the session id it goes by is no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dupsession.core import wire
from dupsession.report import SchemaError, SessionReport
from relayd import channel
from relayd.limits import PerSourceBuckets, TokenBucket

log = logging.getLogger("relayd")

#: A spawned worker must be READY within this (s), or it is killed.
WORKER_START_TIMEOUT = 10.0
#: After QUIT, a worker has this long (s) to send its CLOSEs and exit, then it is killed.
QUIT_TIMEOUT = 1.0
#: A worker that died before READY: the next spare waits this long (s) (no spawn loop).
RESPAWN_DELAY = 1.0
#: Messages read from one worker per wake-up (fairness with the listeners).
READ_BATCH = 64
#: Session reports kept per worker (it serves one session; a bound on what it can push).
MAX_REPORTS = 4
#: Datagrams passed to one worker per second from one source address (burst twice that), and
#: to one worker from all sources (burst as many). A worker's own traffic needs few: HELLOs,
#: JOINs, and an address's first datagrams until the worker's socket for it exists (about one
#: round trip). The second bound is for spoofed sources: it bounds a flood's CPU in the worker.
#: It does not bound the channel's fill (a default kernel's 416 KiB holds ~185 datagrams of
#: 1.4 KB): `Worker.send_datagram` does.
FORWARD_RATE_PER_SOURCE = 100.0
FORWARD_RATE_PER_WORKER = 1000.0
#: Source buckets kept per worker (LRU): a spoofer's fresh sources still meet the worker's bound.
FORWARD_SOURCES = 1024


@dataclass(slots=True)
class RemoteSession:
    """A session the dispatcher handed to a worker: what its limits and HELLO checks need."""

    session_id: bytes
    client_nonce: bytes
    source: str  #: the client's address as its first HELLO came from (per-source limit)
    key_id: str
    worker: Worker


def _source_buckets() -> PerSourceBuckets:
    """A worker's per-source forwarding buckets (`FORWARD_RATE_PER_SOURCE`, burst twice)."""
    return PerSourceBuckets(FORWARD_RATE_PER_SOURCE, 2 * FORWARD_RATE_PER_SOURCE, FORWARD_SOURCES)


@dataclass(eq=False, slots=True)
class Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    ready: bool = False
    alive: bool = True
    session_ids: set[bytes] = field(default_factory=set)
    reports: list[SessionReport] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    forwarded: int = 0  #: datagrams and connections the dispatcher passed it
    limited: int = 0  #: datagrams for it dropped by the forwarding rate limits
    lost: int = 0  #: datagrams for it dropped because its channel was half full (or full)
    bucket: TokenBucket = field(
        default_factory=lambda: TokenBucket(FORWARD_RATE_PER_WORKER, FORWARD_RATE_PER_WORKER)
    )
    #: Per source address, for this worker only: junk naming one session from an address does
    #: not spend that address's budget for another session (review N2).
    sources: PerSourceBuckets = field(default_factory=_source_buckets)
    #: The same for a source's other frames (HELLO, ACK...): its DATA, held at the per-source
    #: rate while it rebinds, cannot starve the fresh ACK that moves its path to a direct
    #: socket (review N3).
    path_sources: PerSourceBuckets = field(default_factory=_source_buckets)
    #: The channel's send buffer as the kernel gave it (`channel.send_buffer`), 0: unknown.
    send_buffer: int = 0
    #: Connections passed on and not yet SETTLED: token -> what releases the dispatcher's count.
    handed: dict[int, Callable[[], None]] = field(default_factory=dict)
    _tokens: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Pass a datagram on; False (counted as lost) if it did not go."""
        # Security: datagrams naming a session come from anyone who saw its id, and the rate
        # limits let ~1000 through in a burst, more than a default kernel's channel holds
        # (416 KiB: ~185 of 1.4 KB, skb truesize). So they never take the channel past half its
        # send buffer: the other half stays for what must not be lost, a CONFIG (SIGHUP: a
        # worker that misses one is killed, its session ends) and a STREAM (a connection).
        if self.send_buffer and channel.queued(self.sock) > self.send_buffer // 2:
            self.lost += 1
            return False
        if not channel.send(self.sock, channel.datagram(channel.DATAGRAM, data, addr)):
            self.lost += 1
            return False
        self.forwarded += 1
        return True

    def send_stream(
        self, fd: int, peer: tuple[str, int], data: bytes, release: Callable[[], None]
    ) -> int | None:
        """Pass a connection on; its token (`release` runs at its SETTLED, or at the
        worker's end), or None if the channel would not take it."""
        self._tokens += 1
        token = self._tokens
        message = channel.STREAM + channel.TOKEN.pack(token) + channel.pack_addr(peer) + data
        if not channel.send(self.sock, message, [fd]):
            return None
        self.forwarded += 1
        self.handed[token] = release
        return token


class WorkerPool:
    """The worker processes and the table of the sessions they serve."""

    def __init__(
        self,
        config_message: Callable[[], bytes],
        cap: int,
        on_bounce: Callable[[bytes, tuple[str, int]], None],
    ) -> None:
        self._config_message = config_message
        self.cap = cap
        self._on_bounce = on_bounce
        self._loop = asyncio.get_running_loop()
        self.sessions: dict[bytes, RemoteSession] = {}
        self.workers: list[Worker] = []
        self.spare: Worker | None = None
        self._respawn: asyncio.TimerHandle | None = None
        self.closing = False
        self.forwarded_gone = 0  #: `Worker.forwarded` of the workers gone
        self.limited_gone = 0  #: `Worker.limited` of the workers gone
        self.lost_gone = 0  #: `Worker.lost` of the workers gone
        self.bounced = 0  #: datagrams workers passed back (another session's)
        self._logged_buffer = False

    # -- the table ---------------------------------------------------------------------------

    def session(self, session_id: bytes) -> RemoteSession | None:
        return self.sessions.get(session_id)

    def worker_of(self, session_id: bytes) -> Worker | None:
        remote = self.sessions.get(session_id)
        return None if remote is None else remote.worker

    def busy(self) -> int:
        """Workers serving a session (the spare does not count)."""
        return len(self.workers) - (self.spare is not None)

    def count_source(self, source: str) -> int:
        return sum(1 for s in self.sessions.values() if s.source == source)

    def available(self) -> bool:
        return not self.closing and self.busy() < self.cap

    def forward(self, worker: Worker, data: bytes, addr: tuple[str, int]) -> bool:
        """A datagram for `worker`'s session that reached the dispatcher; False: not passed."""
        # Security: anyone who saw the session id (it travels in clear) can send datagrams
        # naming it, unauthenticated: what reaches the worker is rate-limited per (worker,
        # source) and per worker, so a flood costs the worker little (its channel: in
        # `send_datagram`). The source's bucket first, so one source's flood spends its own
        # tokens, not the worker's; its token is given back if the worker's bound refuses.
        source = addr[0]
        sources = worker.sources if data[1] == wire.FrameType.DATA else worker.path_sources
        if not sources.take(source):
            worker.limited += 1
            return False
        if not worker.bucket.take():
            sources.refund(source)
            worker.limited += 1
            return False
        return worker.send_datagram(data, addr)

    def assign(
        self, session_id: bytes, client_nonce: bytes, source: str, key_id: str
    ) -> Worker | None:
        """A worker for a verified, permitted new session (the spare, or a new one); None if
        none could be had (the caller serves it in process)."""
        worker, self.spare = self.spare, None
        if worker is None:
            worker = self._spawn()
            if worker is None:
                return None
        if not channel.send(worker.sock, channel.ASSIGN + session_id):
            self._kill(worker)
            return None
        worker.session_ids.add(session_id)
        self.sessions[session_id] = RemoteSession(session_id, client_nonce, source, key_id, worker)
        self._keep_spare()
        return worker

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        self._keep_spare()

    def _keep_spare(self) -> None:
        if self.spare is None and self.available() and self._respawn is None:
            self.spare = self._spawn()

    def _spawn(self) -> Worker | None:
        mine, theirs = channel.socketpair()
        try:
            # A fresh interpreter (fork + exec), never a fork of this running loop.
            proc = subprocess.Popen(
                # -P: the working directory stays off the import path, so a writable
                # directory relayd was started from cannot plant code run with the exit key.
                [sys.executable, "-P", "-m", "relayd.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("cannot start a session worker: %s", exc)
            mine.close()
            return None
        finally:
            theirs.close()
        worker = Worker(proc, mine, send_buffer=channel.send_buffer(mine))
        if not self._logged_buffer:
            self._logged_buffer = True
            log.info("session worker channel: %d bytes of send buffer", worker.send_buffer)
        self.workers.append(worker)
        channel.send(mine, self._config_message())
        self._loop.add_reader(mine.fileno(), self._readable, worker)
        worker.timer = self._loop.call_later(WORKER_START_TIMEOUT, self._start_timeout, worker)
        return worker

    def _start_timeout(self, worker: Worker) -> None:
        worker.timer = None
        if not worker.ready:
            log.warning(
                "session worker %d not ready in %.0f s: killed", worker.pid, WORKER_START_TIMEOUT
            )
            self._kill(worker)

    def _kill(self, worker: Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()
        self._gone(worker)

    def _readable(self, worker: Worker) -> None:
        for _ in range(READ_BATCH):
            try:
                message = worker.sock.recv(channel.MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self._gone(worker)
                return
            kind, body = message[:1], message[1:]
            if kind == channel.READY:
                worker.ready = True
                if worker.timer is not None:
                    worker.timer.cancel()
                    worker.timer = None
                log.info("session worker %d ready", worker.pid)
            elif kind == channel.SETTLED:
                with contextlib.suppress(struct.error):
                    (token,) = channel.TOKEN.unpack_from(body)
                    release = worker.handed.pop(token, None)
                    if release is not None:
                        release()
            elif kind == channel.SNAPSHOT:
                worker.reports = _reports(body)
            elif kind == channel.BOUNCE:
                self._bounced(worker, body)

    def _bounced(self, worker: Worker, body: bytes) -> None:
        """A datagram that reached `worker`'s socket for a session not its own (a client
        address shared by two sessions): handled as if the listener had read it, but never
        sent back to the worker it came from (no ping-pong)."""
        try:
            addr, offset = channel.unpack_addr(body)
        except ValueError:
            return
        data = body[offset:]
        if self.worker_of(data[4:12]) is not worker:
            self.bounced += 1
            self._on_bounce(data, addr)

    def _gone(self, worker: Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        self._loop.remove_reader(worker.sock.fileno())
        worker.sock.close()
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        for session_id in worker.session_ids:
            if self.sessions.get(session_id, None) is not None:
                del self.sessions[session_id]
        self.workers.remove(worker)
        self.forwarded_gone += worker.forwarded
        self.limited_gone += worker.limited
        self.lost_gone += worker.lost
        for release in list(worker.handed.values()):
            release()  # its connections died with it
        if self.spare is worker:
            self.spare = None
        log.info("session worker %d gone (%d session(s))", worker.pid, len(worker.session_ids))
        self._reap(worker, 0)
        if not worker.ready and not self.closing and self._respawn is None:
            # It died starting: try again a little later, not in a tight loop.
            self._respawn = self._loop.call_later(RESPAWN_DELAY, self._respawned)
        else:
            self._keep_spare()

    def _respawned(self) -> None:
        self._respawn = None
        self._keep_spare()

    def _reap(self, worker: Worker, tries: int) -> None:
        """Collect the exit status without blocking; kill one that outlives its channel."""
        if worker.proc.poll() is not None:
            return
        if tries >= 25:  # 5 s after its channel closed
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
        self._loop.call_later(0.2, self._reap, worker, tries + 1)

    # -- configuration, observation, shutdown ------------------------------------------------

    def reconfigure(self, cap: int) -> None:
        """SIGHUP: the new configuration to every worker (a revoked key closes its sessions)."""
        self.cap = cap
        if self.spare is not None and self.busy() >= cap:
            # The cap went down to what already serves (to 0: no more workers): the spare
            # would idle until shutdown, 40 MB for nothing. It holds no session: stopped.
            log.info(
                "session worker %d: spare beyond the new cap of %d, stopped", self.spare.pid, cap
            )
            self._kill(self.spare)
        message = self._config_message()
        for worker in self.workers:
            if not channel.send(worker.sock, message):
                # A worker that missed the new key set could keep a revoked key's session
                # alive: it is stopped instead (its sessions end, its slot is reaped).
                log.warning("session worker %d missed the new configuration: stopped", worker.pid)
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
        self._keep_spare()

    def facts(self) -> dict[str, Any]:
        """For `relayd status`: the cap, the workers and what the dispatcher passed them (a
        datagram path's traffic after its first frames goes straight to its worker)."""
        return {
            "cap": self.cap,
            "serving": self.busy(),
            "spare": self.spare is not None,
            "pids": [w.pid for w in self.workers if w is not self.spare],
            "forwarded": self.forwarded_gone + sum(w.forwarded for w in self.workers),
            "limited": self.limited_gone + sum(w.limited for w in self.workers),
            "lost": self.lost_gone + sum(w.lost for w in self.workers),
            "bounced": self.bounced,
            "handed": sum(len(w.handed) for w in self.workers),
            "spare_ready": self.spare is not None and self.spare.ready,
        }

    def reports(self) -> list[SessionReport]:
        return [report for worker in self.workers for report in worker.reports]

    async def close(self, reason: str) -> None:
        """Every worker closes its sessions (CLOSE three times) and exits; killed if late."""
        self.closing = True
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None
        workers = list(self.workers)
        for worker in workers:
            channel.send(worker.sock, channel.QUIT + reason.encode())
        deadline = self._loop.time() + QUIT_TIMEOUT
        while any(w.proc.poll() is None for w in workers) and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        for worker in workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(1.0)
            self._gone(worker)


def _reports(body: bytes) -> list[SessionReport]:
    """A worker's SNAPSHOT, read as untrusted input: bounded, and an unreadable one is empty."""
    try:
        docs: Any = json.loads(body)
        if not isinstance(docs, list):
            return []
        return [SessionReport.from_dict(doc) for doc in docs[:MAX_REPORTS]]
    except (ValueError, SchemaError, TypeError):
        return []
