"""Userspace link emulator: the netem this kernel lacks, run on a TUN device in the wan router.

Why userspace: the test kernel has no netem qdisc and no tc classifiers, so the wan namespace
policy-routes every forwarded IPv4 packet into a TUN device; this process reads each packet,
decides which link and route it crosses and in which direction, drops or delays it, and writes
it back into the TUN, from where the kernel forwards it by its main table.

Each packet crosses three *stages*: the link it entered the router on, the route (the pair of
links), and the link it leaves by. Each stage has independent `out` and `back` settings
(loss, Gilbert-Elliott burst loss, rate with a queue limit, delay, jitter, outages, down),
so asymmetric routes and shared uplink capacity are both expressible.

Stdlib only, runnable by path (`python3 emulator.py --config ... --tun tun0 --control SOCK`),
because it is started inside the wan namespace with `ip netns exec`. The packet-handling core
(`Emulator`) is sans-IO, so the impairment maths is unit-testable without root.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import heapq
import ipaddress
import itertools
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "DIRECTIONS",
    "PARAM_DEFAULTS",
    "Emulator",
    "Stage",
    "normalize_params",
    "route_name",
    "serve",
]

DIRECTIONS = ("out", "back")

# Every impairment knob, with the value that means "no impairment". Shared with scenario.py so
# TOML, the control socket and the CLI accept exactly the same names.
PARAM_DEFAULTS: dict[str, Any] = {
    "delay_ms": 0.0,  # one-way added delay
    "jitter_ms": 0.0,  # uniform +-jitter on top of delay; order kept unless reorder
    "reorder": False,  # let jitter reorder packets of one route and direction
    "loss": 0.0,  # independent loss probability, 0..1
    "p_enter_bad": 0.0,  # Gilbert-Elliott: per packet, good -> bad
    "p_leave_bad": 0.25,  # Gilbert-Elliott: per packet, bad -> good (mean burst 1/p)
    "loss_in_bad": 1.0,  # loss probability while in the bad state
    "rate_kbit": 0.0,  # token-bucket rate in kbit/s; 0 = unlimited
    "burst_bytes": 3028,  # bucket depth: bytes that may pass at once beyond the rate
    "queue_bytes": 65536,  # backlog beyond which the shaper tail-drops
    "outages": [],  # [[start_s, end_s], ...] from scenario start: everything dropped
    "down": False,  # blackhole on/off
}

_FLOAT_KEYS = ("delay_ms", "jitter_ms", "loss", "p_enter_bad", "p_leave_bad", "loss_in_bad")
_PROB_KEYS = ("loss", "p_enter_bad", "p_leave_bad", "loss_in_bad")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

READ_BATCH = 512  # packets read per wake-up before due packets are written again
RT_PRIORITY = 5  # SCHED_FIFO priority when run with --sched rt (1..99; kernel threads use 50)
MAX_PACKET = 65536


def normalize_params(params: dict[str, Any], *, partial: bool = True) -> dict[str, Any]:
    """Validate and coerce impairment settings; raise ValueError naming the bad key.

    Why one function: TOML, the CLI and the control socket all feed settings in, and a typo
    like `dealy_ms` must fail loudly instead of silently meaning "no delay".
    """
    out: dict[str, Any] = {} if partial else dict(PARAM_DEFAULTS)
    for key, value in params.items():
        if key not in PARAM_DEFAULTS:
            known = ", ".join(PARAM_DEFAULTS)
            raise ValueError(f"unknown impairment setting {key!r} (known: {known})")
        if key in ("reorder", "down"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, not {value!r}")
            out[key] = value
        elif key == "outages":
            spans = []
            for span in value:
                start, end = (float(x) for x in span)
                if not 0 <= start < end:
                    raise ValueError(f"outage {span!r} must be [start, end] with 0 <= start < end")
                spans.append([start, end])
            out[key] = spans
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, not {value!r}")
            number = float(value)
            if number < 0:
                raise ValueError(f"{key} must not be negative ({value!r})")
            if key in _PROB_KEYS and number > 1:
                raise ValueError(f"{key} is a probability in 0..1, not {value!r}")
            out[key] = number if key in _FLOAT_KEYS or key == "rate_kbit" else int(number)
    return out


def route_name(a: str, b: str) -> str:
    """A route's name: its two links, the one nearer the client first (`up1-relay1`)."""
    return f"{a}-{b}"


#: Shaper queueing delays counted (packets that waited longer than each, s): how deep a
#: route's queue ran, which is what another session's keystrokes wait behind.
WAIT_STEPS = (0.005, 0.01, 0.02, 0.04)
WAIT_COUNTERS = ("waited_5ms", "waited_10ms", "waited_20ms", "waited_40ms")


class Stage:
    """One direction of one link or route: loss, burst loss, shaper, delay, outages.

    `process` is called with the time the packet reaches this stage and returns when it
    leaves, or None when it is dropped; counters say why packets were dropped.
    """

    __slots__ = (
        "_bad",
        "_burst",
        "_delay",
        "_delay_ms",
        "_down",
        "_jitter",
        "_loss",
        "_loss_in_bad",
        "_outages",
        "_p_enter_bad",
        "_p_leave_bad",
        "_queue_bytes",
        "_rate_bps",
        "_tat",
        "_tau",
        "_waited",
        "active",
        "direction",
        "n_burst",
        "n_bytes",
        "n_down",
        "n_loss",
        "n_outage",
        "n_packets",
        "n_passed",
        "n_queue",
        "name",
        "params",
        "reorder",
        "rng",
        "t0",
    )

    def __init__(
        self,
        name: str,
        direction: str,
        params: dict[str, Any],
        rng: Callable[[], float],
        t0: float,
    ) -> None:
        self.name = name
        self.direction = direction
        self.rng = rng
        self.t0 = t0
        self.params: dict[str, Any] = dict(PARAM_DEFAULTS)
        self.reset()
        self._bad = False
        self._tat = 0.0
        self.configure(params)

    def configure(self, params: dict[str, Any]) -> None:
        """Apply (a subset of) settings; `active` short-cuts stages that do nothing."""
        self.params.update(normalize_params(params))
        p = self.params
        # Copied into slots: `process` reads them per packet, and a slot is cheaper than a
        # dict lookup by key (the emulator shares the lab's two cores at RT priority).
        self._down = bool(p["down"])
        self._loss = p["loss"]
        self._p_enter_bad = p["p_enter_bad"]
        self._p_leave_bad = p["p_leave_bad"]
        self._loss_in_bad = p["loss_in_bad"]
        self._queue_bytes = p["queue_bytes"]
        self._delay_ms = p["delay_ms"]
        self._delay = p["delay_ms"] / 1000.0  # s, as the ms figure / 1000 was per packet
        self._jitter = p["jitter_ms"]
        self._rate_bps = p["rate_kbit"] * 1000.0 / 8.0
        self._tau = p["burst_bytes"] / self._rate_bps if self._rate_bps else 0.0
        self._outages = [(s, e) for s, e in p["outages"]]
        self.reorder = bool(p["reorder"])
        self.active = bool(
            p["down"]
            or p["loss"]
            or p["p_enter_bad"]
            or self._bad
            or self._rate_bps
            or p["delay_ms"]
            or p["jitter_ms"]
            or self._outages
        )

    @property
    def counters(self) -> dict[str, int]:
        """Packets and bytes that reached this stage, passed it, and why the rest were dropped."""
        return {
            "packets": self.n_packets,
            "bytes": self.n_bytes,
            "passed": self.n_passed,
            "loss": self.n_loss,
            "burst": self.n_burst,
            "queue": self.n_queue,
            "outage": self.n_outage,
            "down": self.n_down,
            **dict(zip(WAIT_COUNTERS, self._waited, strict=True)),
        }

    def reset(self) -> None:
        """Zero the counters (ints in slots, not a dict: `process` bumps three per packet)."""
        self.n_packets = self.n_bytes = self.n_passed = 0
        self.n_loss = self.n_burst = self.n_queue = self.n_outage = self.n_down = 0
        self._waited = [0] * len(WAIT_STEPS)

    def process(self, t: float, now: float, size: int) -> float | None:  # noqa: C901, PLR0912
        """Time the packet leaves this stage, given it arrives at `t`; None if dropped."""
        # Per packet: the steps stay inlined (a call per step costs more than the branches).
        self.n_packets += 1
        self.n_bytes += size
        if not self.active:
            self.n_passed += 1
            return t
        if self._down:
            self.n_down += 1
            return None
        if self._outages:
            since = now - self.t0
            for start, end in self._outages:
                if start <= since < end:
                    self.n_outage += 1
                    return None
        rng = self.rng
        loss = self._loss
        if loss and rng() < loss:
            self.n_loss += 1
            return None
        if self._p_enter_bad or self._bad:
            if self._bad:
                if rng() < self._p_leave_bad:
                    self._bad = False
            elif rng() < self._p_enter_bad:
                self._bad = True
            if self._bad and rng() < self._loss_in_bad:
                self.n_burst += 1
                return None
        rate = self._rate_bps
        if rate:
            # GCRA shaper: `_tat` is when the bucket would be empty again. A packet may leave
            # once tat - tau <= now; the wait times the rate is the backlog it queues behind.
            tat = self._tat
            depart = tat - self._tau
            if depart > t:
                wait = depart - t
                if wait * rate > self._queue_bytes:
                    self.n_queue += 1
                    return None
                if wait > WAIT_STEPS[0]:
                    waited = self._waited
                    for i, step in enumerate(WAIT_STEPS):
                        if wait > step:
                            waited[i] += 1
                self._tat = tat + size / rate  # tat >= depart > t: max(t, tat) is tat
                t = depart
            else:
                self._tat = (tat if tat > t else t) + size / rate
        self.n_passed += 1
        if self._jitter:
            jittered: float = self._delay_ms + (rng() * 2.0 - 1.0) * self._jitter
            return t + max(0.0, jittered) / 1000.0
        delay: float = self._delay
        return t + delay

    def snapshot(self) -> dict[str, Any]:
        """Settings and counters, JSON-ready, for the control socket."""
        return {"params": dict(self.params), "counters": self.counters, "bad": self._bad}


class _Link:
    __slots__ = ("index", "kind", "name", "network")

    def __init__(self, index: int, name: str, kind: str, subnet: str) -> None:
        self.index = index
        self.name = name
        self.kind = kind
        self.network = ipaddress.IPv4Network(subnet)


class _Path:
    """One (source, destination) address pair's stages and release state, cached by address."""

    __slots__ = ("fifo", "last", "stages")

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.stages = stages
        #: The last release time of this address pair: keeping releases monotonic per pair is
        #: what stops jitter from reordering a flow.
        self.last = 0.0
        #: Its queued packets, (release, seq, packet) in release order, unless its stages may
        #: reorder (None: each packet goes on the heap alone). Releases are monotonic per pair,
        #: so one heap entry for the head stands for all: the heap holds a few pairs, not
        #: every queued packet, and a release costs a popleft instead of a sift through it.
        self.fifo: deque[tuple[float, int, bytes]] | None = (
            None if any(s.reorder for s in stages) else deque()
        )


#: A path cache miss (None caches an unroutable pair): a `_Path` of its own, so the cache's
#: look-up keeps its type (`_Path | None`) and mypy checks what `submit` does with it.
_UNSEEN = _Path(())


#: A heap entry: (release, seq, a packet or a pair's FIFO whose head is that packet). Sequence
#: numbers are unique, so comparing entries never reaches the third item; equal releases leave
#: in the order they were submitted.
_Entry = tuple[float, int, "bytes | deque[tuple[float, int, bytes]]"]


class Emulator:
    """The sans-IO core: packets in with `submit`, due packets out with `pop_due`.

    Links are ordered client side first (uplinks, relays, server); a route's `out` direction
    goes from the earlier link to the later one. On a link, `out` is away from the client:
    client -> router on an uplink, router -> node on a relay or server link.
    """

    def __init__(self, config: dict[str, Any], *, t0: float | None = None) -> None:
        seed = config.get("seed")
        self._rng = random.Random(seed).random
        self.t0 = time.monotonic() if t0 is None else t0
        self.links = [
            _Link(i, spec["name"], spec["kind"], spec["subnet"])
            for i, spec in enumerate(config["links"])
        ]
        self._prefixes: dict[int, dict[int, _Link]] = {}
        for link in self.links:
            shift = 32 - link.network.prefixlen
            table = self._prefixes.setdefault(shift, {})
            table[int(link.network.network_address) >> shift] = link
        self.stages: dict[str, dict[str, Stage]] = {}
        names = [link.name for link in self.links]
        names += [route_name(a.name, b.name) for a, b in itertools.combinations(self.links, 2)]
        settings = config.get("stages", {})
        for name in names:
            entry = settings.get(name, {})
            self.stages[name] = {
                d: Stage(name, d, entry.get(d, {}), self._rng, self.t0) for d in DIRECTIONS
            }
        unknown = set(settings) - set(self.stages)
        if unknown:
            raise ValueError(f"settings for unknown links or routes: {sorted(unknown)}")
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._paths: dict[bytes, _Path | None] = {}
        self.counters = dict.fromkeys(("read", "written", "dropped", "unrouted", "write_errors"), 0)

    # -- classification -------------------------------------------------------------------

    def _link_of(self, addr: bytes) -> _Link | None:
        value = int.from_bytes(addr, "big")
        for shift, table in self._prefixes.items():
            link = table.get(value >> shift)
            if link is not None:
                return link
        return None

    def _path(self, key: bytes) -> _Path | None:
        """Stages for a (source, destination) address pair not yet cached (`submit` looks first)."""
        src, dst = self._link_of(key[:4]), self._link_of(key[4:])
        path: _Path | None = None
        if src is not None and dst is not None and src is not dst:
            first, last = (src, dst) if src.index < dst.index else (dst, src)
            route_dir = "out" if src is first else "back"
            ingress = "out" if src.kind == "uplink" else "back"
            egress = "back" if dst.kind == "uplink" else "out"
            stages = (
                self.stages[src.name][ingress],
                self.stages[route_name(first.name, last.name)][route_dir],
                self.stages[dst.name][egress],
            )
            path = _Path(stages)
        if len(self._paths) > 4096:
            self._paths.clear()
        self._paths[key] = path
        return path

    def invalidate(self) -> None:
        """Forget cached per-pair state after settings change (reorder flags may differ)."""
        self._paths.clear()

    # -- packets --------------------------------------------------------------------------

    def submit(self, packet: bytes, now: float) -> float | None:
        """Queue one IPv4 packet read at `now`; return its release time, None if dropped."""
        counters = self.counters
        counters["read"] += 1
        path = None
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            key = packet[12:20]
            path = self._paths.get(key, _UNSEEN)
            if path is _UNSEEN:
                path = self._path(key)
        if path is None:
            counters["unrouted"] += 1
            heapq.heappush(self._heap, (now, next(self._seq), packet))
            return now
        size = len(packet)
        release = now
        for stage in path.stages:
            t = stage.process(release, now, size)
            if t is None:
                counters["dropped"] += 1
                return None
            release = t
        fifo = path.fifo
        if fifo is None:
            heapq.heappush(self._heap, (release, next(self._seq), packet))
            return release
        if release < path.last:
            release = path.last
        path.last = release
        entry = (release, next(self._seq), packet)
        if not fifo:  # the pair's first queued packet: it joins the heap as the FIFO's head
            heapq.heappush(self._heap, (release, entry[1], fifo))
        fifo.append(entry)
        return release

    def next_deadline(self) -> float | None:
        """When the earliest queued packet is due, or None when nothing is queued."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[bytes]:
        """Remove and return, in release order, every packet due at or before `now`."""
        heap = self._heap
        due: list[bytes] = []
        while heap:
            release, _, item = heap[0]
            if release > now:
                break
            if not isinstance(item, deque):  # a packet of its own (unrouted, or may reorder)
                heapq.heappop(heap)
                due.append(item)
                continue
            fifo = item
            due.append(fifo.popleft()[2])
            if fifo:  # its next packet is the pair's head now
                head = fifo[0]
                heapq.heapreplace(heap, (head[0], head[1], fifo))
            else:
                heapq.heappop(heap)
        self.counters["written"] += len(due)
        return due

    @property
    def queued(self) -> int:
        return sum(len(item) if isinstance(item, deque) else 1 for _, _, item in self._heap)

    # -- control --------------------------------------------------------------------------

    def set(self, target: str, direction: str, params: dict[str, Any]) -> list[str]:
        """Change settings of every stage whose name matches `target` (a glob)."""
        if direction not in ("out", "back", "both"):
            raise ValueError(f"direction must be out, back or both, not {direction!r}")
        params = normalize_params(params)
        names = [n for n in self.stages if fnmatch.fnmatchcase(n, target)]
        if not names:
            raise ValueError(f"no link or route matches {target!r}; known: {list(self.stages)}")
        dirs = DIRECTIONS if direction == "both" else (direction,)
        for name in names:
            for d in dirs:
                self.stages[name][d].configure(params)
        if "reorder" in params:
            self.invalidate()
        return names

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "uptime": now - self.t0,
            "queued": self.queued,
            "counters": dict(self.counters),
            "stages": {
                name: {d: stage.snapshot() for d, stage in dirs.items()}
                for name, dirs in self.stages.items()
            },
        }


# -- IO -------------------------------------------------------------------------------------


def open_tun(name: str) -> int:
    """Attach to the (persistent) TUN device `name`, without packet-info headers."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


class _Control:
    """JSON-lines control socket: one request per line, one reply per line."""

    def __init__(self, path: str, emulator: Emulator) -> None:
        self.emulator = emulator
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        #: What the loop waits on, kept as clients come and go instead of built per wake-up:
        #: `serve` puts the TUN's first, then the listener and the clients.
        self.fds = [self.sock.fileno()]
        self.stop = False

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        emu = self.emulator
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd == "set":
            names = emu.set(
                str(request["target"]), request.get("dir", "both"), request.get("params", {})
            )
            return {"ok": True, "changed": names}
        if cmd == "stats":
            return {"ok": True, **emu.snapshot(time.monotonic())}
        if cmd == "reset":
            for dirs in emu.stages.values():
                for stage in dirs.values():
                    stage.reset()
            for key in emu.counters:
                emu.counters[key] = 0
            return {"ok": True}
        if cmd == "stop":
            self.stop = True
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r} (ping, set, stats, reset, stop)")

    def on_readable(self, fd: int) -> None:
        if fd == self.sock.fileno():
            with contextlib.suppress(BlockingIOError):
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.clients[conn.fileno()] = (conn, bytearray())
                self.fds.append(conn.fileno())
            return
        conn, buf = self.clients[fd]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            del self.clients[fd]
            self.fds.remove(fd)
            conn.close()
            return
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                reply = self.handle(json.loads(line))
            except Exception as exc:  # a bad request must not kill the emulator
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            conn.setblocking(True)
            conn.settimeout(2.0)
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass
            finally:
                conn.setblocking(False)

    def close(self) -> None:
        for conn, _ in self.clients.values():
            conn.close()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def set_priority(sched: str) -> str:
    """Raise this process's CPU priority; return what was got.

    Why: on a busy 2-core machine a normal process is woken milliseconds late, and that
    lateness would show up as false delay on every route. "rt" (SCHED_FIFO at a low priority)
    makes the emulator preempt CPU hogs the moment a packet is due: measured p99 error drops
    from ~8 ms to ~0.3 ms with four busy loops running. The kernel's RT throttling still
    leaves other tasks 5 % of a core should the emulator ever spin. Falls back to nice -10.
    """
    if sched == "rt":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            return "rt"
        except (OSError, AttributeError):
            sched = "nice"
    if sched == "nice":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            return "nice"
        except OSError:
            pass
    return "normal"


#: With this environment variable set (a directory), the emulator records every packet of at
#: most PACKET_LOG_MAX bytes (keystrokes, echoes, ACKs; not a transfer's full frames): when it
#: was read, when it is due out, its size and addresses, and writes them to
#: `packets-<pid>.json` there when it stops. `contrib/bench/under_load.py --breakdown` reads it
#: to tell a keystroke's wait in the routers from its wait in the processes at either end.
#: Each row also has the UDP or TCP payload's length and its first PACKET_LOG_HEAD bytes (hex):
#: a dupsession frame's type and number, so the bench tells an echo's DATA frame from an ACK
#: (ours, or the kernel's: a TCP segment without payload) and its copies from each other.
PACKET_LOG_ENV = "NETLAB_PACKET_LOG"
PACKET_LOG_MAX = 400
PACKET_LOG_HEAD = 24


class PacketLog:
    """The small packets' record (PACKET_LOG_ENV); does nothing when that is not set."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        #: (read at, due at or None if dropped, size, protocol, source, destination (hex),
        #: source port, destination port, payload length, the payload's head (hex))
        self.rows: list[tuple[float, float | None, int, int, str, str, int, int, int, str]] = []

    def wrap(
        self, submit: Callable[[bytes, float], float | None]
    ) -> Callable[[bytes, float], float | None]:
        if not self.directory:
            return submit
        add = self.rows.append

        def logged(packet: bytes, now: float) -> float | None:
            release = submit(packet, now)
            if 24 <= len(packet) <= PACKET_LOG_MAX:
                ports = struct.unpack_from("!HH", packet, 20)
                # the payload: after IP's header and UDP's 8 bytes or TCP's data offset
                start = (packet[0] & 15) * 4
                start += 8 if packet[9] != 6 else (packet[start + 12] >> 4) * 4
                add((now, release, len(packet), packet[9], packet[12:16].hex(),
                     packet[16:20].hex(), *ports, len(packet) - start,
                     packet[start : start + PACKET_LOG_HEAD].hex()))  # fmt: skip
            return release

        return logged

    def close(self) -> None:
        if self.directory:
            path = os.path.join(self.directory, f"packets-{os.getpid()}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(self.rows, f)


def serve(config: dict[str, Any], tun: str, control_path: str, *, sched: str = "rt") -> None:
    """Run until SIGTERM or a `stop` request: read, impair, write back."""
    got = set_priority(sched)
    wall_t0 = config.get("t0")
    t0 = time.monotonic() - (time.time() - wall_t0) if wall_t0 else time.monotonic()
    emu = Emulator(config, t0=t0)
    fd = open_tun(tun)
    control = _Control(control_path, emu)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    monotonic = time.monotonic
    read, write, wait = os.read, os.write, select.select
    packets = PacketLog(os.environ.get(PACKET_LOG_ENV))
    submit, pop_due = packets.wrap(emu.submit), emu.pop_due
    fds = control.fds
    fds.insert(0, fd)
    next_deadline = emu.next_deadline
    print(f"netlab emulator pid {os.getpid()} on {tun} ({got}), control {control_path}", flush=True)
    try:
        while not control.stop:
            deadline = next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - monotonic())
            # select, not epoll: its timeout has microsecond resolution, epoll's is rounded up
            # to whole milliseconds, which would add up to 1 ms to every delayed packet.
            readable = wait(fds, (), (), timeout)[0]
            for efd in readable:
                if efd == fd:
                    for _ in range(READ_BATCH):
                        try:
                            packet = read(fd, MAX_PACKET)
                        except BlockingIOError:
                            break
                        submit(packet, monotonic())
                else:
                    control.on_readable(efd)
            for packet in pop_due(monotonic()):
                try:
                    write(fd, packet)
                except OSError:
                    emu.counters["written"] -= 1
                    emu.counters["write_errors"] += 1
    finally:
        packets.close()
        control.close()
        os.close(fd)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON: links, stages, seed, t0")
    parser.add_argument("--tun", default="tun0", help="persistent TUN device to attach to")
    parser.add_argument("--control", required=True, help="path of the control unix socket")
    parser.add_argument(
        "--sched", choices=("rt", "nice", "normal"), default="rt", help="CPU priority to ask for"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    serve(config, args.tun, args.control, sched=args.sched)
    return 0


if __name__ == "__main__":
    sys.exit(main())
