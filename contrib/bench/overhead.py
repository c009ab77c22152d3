#!/usr/bin/env python3
"""Overhead benchmark: dupsession against plain TCP on loopback, side by side, in one run.

    python3 contrib/bench/overhead.py            # 2000 echoes, 3 x 200 MB per direction
    python3 contrib/bench/overhead.py --quick    # 500 echoes, 1 x 50 MB per direction

dupsession is driven the way users drive it: a `relayd serve` subprocess is the exit, and each
measurement starts a `dupsession --key K --path ... 127.0.0.1 PORT` subprocess whose stdin and
stdout are pipes (ssh's ProxyCommand mode). The targets (an echo server and a bulk
sink/source) run in a third subprocess. Every process shares this machine's cores: the figures
include the bench's own pipe and socket I/O on both sides of the comparison.

Measured:
- echo latency, one 64-byte message at a time: plain TCP to the echo server, then through
  dupsession with 1 path (UDP) and 3 paths (2 UDP + 1 TCP); the added latency per direction
  is (p99_dup - p99_plain) / 2;
- bulk throughput, upload (to a sink) and download (from a source): direct TCP, then through
  dupsession with 1 TCP path and with 3 paths (2 UDP + 1 TCP, `redundant`: every frame on
  every path); the median of `--repeat` transfers, and the CPU time per MB that the client
  and relayd spent (from /proc: steadier than MB/s on a busy machine), and beside them the
  target's and this bench's own (the load that shares the cores with them).

With `--encrypt`, every dupsession configuration runs a second time with payload encryption
(`dupsession --encrypt`, ChaCha20), named "... enc": the difference in client and relayd
CPU ms/MB is encryption's cost.

Targets (issues 9 and 11): < 1 ms added p99 per direction; >= 300 MB/s over one TCP path;
>= 80 MB/s over 3 redundant mixed paths, with and without encryption.
PASS/FAIL is printed per target; the exit code is 0 either way (this is a benchmark, not a
test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contrib.bench.lab_latency import machine_times  # noqa: E402

HOST = "127.0.0.1"
MESSAGE = 64
CHUNK = 256 * 1024
BULK_HEADER = struct.Struct("!cQ")
#: Bulk data cycles through this: larger than zstd's window (1 MiB), so compression, on by
#: default in `auto`, sees it as incompressible, as it would an ssh stream.
RANDOM = os.urandom(4 * 1024 * 1024 + CHUNK)  # op (b"U" upload to sink, b"D" download), byte count

TARGET_ADDED_P99_MS = 1.0
TARGET_ONE_TCP_MBS = 300.0
TARGET_THREE_PATHS_MBS = 80.0
TARGET_THREE_PATHS_ENCRYPTED_MBS = 80.0  # issue 11: encryption on, 3 paths


# --- the targets (run in their own process: `overhead.py --targets`) ------------------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


class _Bulk(asyncio.Protocol):
    """U: swallow N bytes, answer b"K". D: send N bytes. Each starts with b"R" (ready)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=4 * CHUNK)  # type: ignore[attr-defined]
        self.header = b""
        self.left = -1  # bytes still to swallow (upload) or send (download)
        self.sending = False
        # A view: each write hands the kernel a slice of RANDOM without a copy, as the
        # bench's own upload does (a bytes slice cost the target a copy and ~115 page faults
        # per MB, which the two shared cores paid in every download figure).
        self.block = memoryview(RANDOM)
        self.offset = 0

    def data_received(self, data: bytes) -> None:
        if self.left < 0:
            self.header += data
            if len(self.header) < BULK_HEADER.size:
                return
            op, self.left = BULK_HEADER.unpack(self.header[: BULK_HEADER.size])
            data = self.header[BULK_HEADER.size :]
            self.transport.write(b"R")
            if op == b"D":
                self.sending = True
                self.resume_writing()
                return
            if self.left == 0:
                self.transport.write(b"K")
        if self.sending or self.left <= 0:
            return
        self.left -= len(data)
        if self.left <= 0:
            self.transport.write(b"K")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        while self.sending and self.left > 0 and not self.paused:
            step = min(self.left, CHUNK)
            offset = self.offset
            self.transport.write(self.block[offset : offset + step])
            self.offset = (offset + step) % (len(RANDOM) - CHUNK)
            self.left -= step

    def eof_received(self) -> bool:
        return False


async def _serve_targets() -> None:
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(_Echo, HOST, 0)
    bulk = await loop.create_server(_Bulk, HOST, 0)
    ports = (echo.sockets[0].getsockname()[1], bulk.sockets[0].getsockname()[1])
    print(*ports, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent goes away


def run_targets() -> None:
    try:
        import uvloop

        uvloop.run(_serve_targets())
    except ImportError:
        asyncio.run(_serve_targets())


# --- connections: direct TCP socket or a dupsession subprocess's pipes ----------------------


class Conn:
    def send(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def recv(self, size: int) -> bytes:
        raise NotImplementedError

    def recv_into(self, buffer: bytearray) -> int:
        raise NotImplementedError

    def recv_exact(self, size: int) -> bytes:
        parts, got = [], 0
        while got < size:
            data = self.recv(size - got)
            if not data:
                raise EOFError(f"connection closed after {got} of {size} bytes")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self) -> None:
        raise NotImplementedError

    def cpu_pids(self) -> list[int]:
        return []


class TcpConn(Conn):
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def recv_into(self, buffer: bytearray) -> int:
        return self.sock.recv_into(buffer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()


class DupConn(Conn):
    """One `dupsession` ProxyCommand process; its stdin/stdout are the session's stream."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def recv(self, size: int) -> bytes:
        return os.read(self.rfd, size)

    def recv_into(self, buffer: bytearray) -> int:
        return os.readv(self.rfd, [buffer])

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.stdout.read()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.log.close()

    def cpu_pids(self) -> list[int]:
        return [self.proc.pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 if unavailable), and for relayd with
    `--session-processes` that of its workers serving a session (its sessions' frames are
    handled there, not in the dispatcher). The idle spare (no network socket) is left out: its
    start, a Python start-up, is no echo's or MB's cost. A worker gone keeps its last reading,
    so the difference of two readings never drops by a worker's whole life."""
    workers = _SERVING.setdefault(pid, {})
    spawned = b"--session-processes" in _read(f"/proc/{pid}/cmdline")
    for child in _children(pid):
        if b"relayd.worker" in _read(f"/proc/{child}/cmdline"):
            spawned = True
            if _inet_sockets(child):
                workers[child] = _own_cpu(child)
    if spawned and not workers and pid not in _WARNED:
        # Without its workers the figure is the dispatcher's alone (~0 us/echo): a silently
        # weakened measurement, so say it loudly (review N9).
        _WARNED.add(pid)
        print(
            f"WARNING: relayd {pid} runs session workers but none serving was found"
            " (/proc/PID/task/*/children missing, or no worker holds a network socket yet):"
            " its CPU figures are the dispatcher's alone",
            file=sys.stderr,
            flush=True,
        )
    return _own_cpu(pid) + sum(workers.values())


#: relayd pids warned about: session workers on, none serving found.
_WARNED: set[int] = set()


#: pid -> its session workers seen serving -> their CPU seconds when last read.
_SERVING: dict[int, dict[int, float]] = {}


def _own_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.update(int(c) for c in _read(f"{task}/children").split())
    return found


def _inet_sockets(pid: int) -> bool:
    """Whether `pid` holds a UDP or TCP socket (a worker serving a session does)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1].encode())
    for table in ("udp", "udp6", "tcp", "tcp6"):
        for line in _read(f"/proc/{pid}/net/{table}").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                return True
    return False


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  #: process -> CPU seconds used
    #: the whole machine over the rounds: (busy, steal) as shares of its CPU time
    machine: tuple[float, float] = (0.0, 0.0)

    def pct(self, p: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)


def echo_latency(conn: Conn, rounds: int, extra_pids: dict[str, int], warmup: int = 50) -> Latency:
    message = os.urandom(MESSAGE)
    samples = []
    pids = dict(extra_pids)
    for pid in conn.cpu_pids():
        pids["client"] = pid
    cpu0: dict[str, float] = {}
    machine0 = (0.0, 0.0, 0.0)
    for i in range(warmup + rounds):
        if i == warmup:
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            machine0 = machine_times()
        t0 = time.perf_counter()
        conn.send(message)
        reply = conn.recv_exact(MESSAGE)
        elapsed = time.perf_counter() - t0
        if reply != message:
            raise RuntimeError("echo reply differs from the message")
        if i >= warmup:
            samples.append(elapsed)
    busy, steal, total = (b - a for a, b in zip(machine0, machine_times(), strict=True))
    return Latency(
        samples,
        {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()},
        (busy / total, steal / total) if total else (0.0, 0.0),
    )


@dataclass
class Transfer:
    nbytes: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  #: process -> CPU seconds used

    @property
    def mbs(self) -> float:
        return self.nbytes / self.seconds / 1e6

    def cpu_ms_per_mb(self, proc: str) -> float:
        return self.cpu[proc] * 1e3 / (self.nbytes / 1e6)


def bulk(conn: Conn, op: bytes, nbytes: int, extra_pids: dict[str, int]) -> Transfer:
    conn.send(BULK_HEADER.pack(op, nbytes))
    if conn.recv_exact(1) != b"R":
        raise RuntimeError("bulk target did not answer")
    pids = dict(extra_pids)
    for pid in conn.cpu_pids():
        pids["client"] = pid
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    if op == b"U":
        block = memoryview(RANDOM)
        left, offset = nbytes, 0
        while left > 0:
            step = min(left, CHUNK)
            conn.send(block[offset : offset + step])
            left -= step
            offset = (offset + step) % (len(RANDOM) - CHUNK)
        if conn.recv_exact(1) != b"K":
            raise RuntimeError("sink did not confirm the upload")
    else:
        # Read into one buffer, as the upload writes from one: a new 1 MiB object per read
        # cost the bench CPU that the two shared cores paid in every download figure.
        buffer = bytearray(1 << 20)
        got = 0
        while got < nbytes:
            size = conn.recv_into(buffer)
            if not size:
                raise EOFError(f"download ended after {got} of {nbytes} bytes")
            got += size
    seconds = time.perf_counter() - t0
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    return Transfer(nbytes, seconds, cpu)


def median_transfer(runs: list[Transfer]) -> Transfer:
    """The run with the median throughput (the odd one out on a busy machine is dropped)."""
    return sorted(runs, key=lambda tr: tr.mbs)[len(runs) // 2]


# --- orchestration ----------------------------------------------------------------------------


def free_udp_and_tcp_port() -> int:
    """A port free on HOST for UDP and for TCP alike: relayd listens on both, and a port
    only UDP had free made relayd fail to start now and then."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="dupsession-bench-"))
        self.env = dict(os.environ, XDG_CONFIG_HOME=str(self.tmp / "config"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.key = self.tmp / "key"
        self.dupsession = shlex.split(args.client_cmd or shutil.which("dupsession") or "dupsession")
        self.relayd = shlex.split(args.relayd_cmd or shutil.which("relayd") or "relayd")
        self.profile = args.py_spy
        self._profile_count = 0
        self.profilers: list[subprocess.Popen[bytes]] = []

    def _profile_pid(self, name: str, pid: int) -> None:
        """Under --py-spy DIR, record this process (folded stacks) into DIR until it exits.

        py-spy attaches to the running process, so its own messages stay off the pipes.
        """
        if self.profile is None:
            return
        self._profile_count += 1
        out = Path(self.profile) / f"{self._profile_count:02d}-{name}.txt"
        argv = [
            "py-spy",
            "record",
            "-r",
            str(self.args.py_spy_rate),
            "-f",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
            "--pid",
            str(pid),
        ]
        self.profilers.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def start(self) -> None:
        subprocess.run([*self.dupsession, "keygen", str(self.key)], check=True, env=self.env,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        targets = subprocess.Popen(
            [sys.executable, __file__, "--targets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.procs.append(targets)
        self.targets_pid = targets.pid
        assert targets.stdout is not None
        self.echo_port, self.bulk_port = map(int, targets.stdout.readline().split())
        for _attempt in range(3):
            self.relay_port = free_udp_and_tcp_port()
            relayd = self._start_relayd()
            if relayd is not None:
                break
        else:
            log = (self.tmp / "relayd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"relayd did not start in 3 attempts; its log ends:\n{log}")
        self._profile_pid("relayd", relayd.pid)

    def _start_relayd(self) -> subprocess.Popen[bytes] | None:
        """relayd listening on `relay_port`, or None if it exited or never accepted (the
        port, free when chosen, may be taken meanwhile: the caller picks another)."""
        argv = [
            *self.relayd, "serve", "--listen", f"{HOST}:{self.relay_port}", "--key", str(self.key),
            "--allow", f"{HOST}:{self.echo_port}", "--allow", f"{HOST}:{self.bulk_port}",
            "--log-level", "warning",
        ]  # fmt: skip
        with (self.tmp / "relayd.log").open("ab") as log:
            relayd = subprocess.Popen(argv, stderr=log, env=self.env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and relayd.poll() is None:
            with socket.socket() as s:
                if s.connect_ex((HOST, self.relay_port)) == 0:
                    self.procs.append(relayd)
                    self.relayd_pid = relayd.pid
                    return relayd
            time.sleep(0.05)
        relayd.kill()
        relayd.wait()
        return None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for profiler in self.profilers:
            try:
                profiler.wait(timeout=20)  # it writes its file once the process has gone
            except subprocess.TimeoutExpired:
                profiler.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def paths(self, spec: str) -> list[str]:
        return [f"{kind}://{HOST}:{self.relay_port}" for kind in spec.split("+")]

    @contextlib.contextmanager
    def connect(self, port: int, paths: list[str] | None, encrypt: bool = False) -> Iterator[Conn]:
        if paths is None:
            conn: Conn = TcpConn(port)
        else:
            # Every frame on every path, as the targets say ("redundant"), whatever the
            # default policy is.
            argv = [*self.dupsession, "--key", str(self.key), "--policy", "redundant"]
            if encrypt:
                argv.append("--encrypt")
            for path in paths:
                argv += ["--path", path]
            argv += [HOST, str(port)]
            name = "client-" + "-".join(p.split(":")[0] for p in paths)
            conn = DupConn(argv, self.env, self.tmp / "client.log")
            self._profile_pid(name, conn.proc.pid)
        try:
            yield conn
        finally:
            conn.close()


CONFIGS = {
    "plain": None,
    "1 UDP": "udp",
    "1 TCP": "tcp",
    "2 UDP + 1 TCP": "udp+udp+tcp",
}
#: Suffix of a configuration run with payload encryption (`--encrypt`).
ENCRYPTED = " enc"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="500 echoes, one 50 MB transfer per direction"
    )
    parser.add_argument("--rounds", type=int, help="echo round trips per configuration")
    parser.add_argument("--mb", type=int, help="megabytes per bulk transfer")
    parser.add_argument(
        "--repeat", type=int, help="transfers per configuration and direction (median reported)"
    )
    parser.add_argument(
        "--only", choices=["latency", "bulk"], help="run only one half of the benchmark"
    )
    parser.add_argument(
        "--configs",
        help="comma-separated subset of: " + ", ".join(CONFIGS) + " (plain always runs)",
    )
    parser.add_argument(
        "--direction", choices=["upload", "download"], help="run only one bulk direction"
    )
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="also run each dupsession configuration with payload encryption (--encrypt)",
    )
    parser.add_argument("--py-spy", metavar="DIR", help="record relayd and clients with py-spy")
    parser.add_argument("--py-spy-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--client-cmd", metavar="CMD", help="run this instead of `dupsession`")
    parser.add_argument("--relayd-cmd", metavar="CMD", help="run this instead of `relayd`")
    parser.add_argument("--targets", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.targets:
        run_targets()
        return 0
    rounds = args.rounds or (500 if args.quick else 2000)
    nbytes = (args.mb or (50 if args.quick else 200)) * 1_000_000
    repeat = args.repeat or (1 if args.quick else 3)
    wanted = set(CONFIGS) if not args.configs else {"plain", *args.configs.split(",")}
    variants = ("", ENCRYPTED) if args.encrypt else ("",)
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)

    bench = Bench(args)
    print(
        f"dupsession overhead benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{rounds} echoes of {MESSAGE} B, {repeat} x {nbytes / 1e6:.0f} MB per transfer"
    )
    latency: dict[str, Latency] = {}
    transfers: dict[tuple[str, str], list[Transfer]] = {}
    try:
        bench.start()
        extra = {"relayd": bench.relayd_pid}
        if args.only != "bulk":
            for name in ("plain", "1 UDP", "2 UDP + 1 TCP"):
                if name not in wanted:
                    continue
                spec = CONFIGS[name]
                for variant in variants if spec else ("",):
                    paths = spec and bench.paths(spec)
                    with bench.connect(bench.echo_port, paths, bool(variant)) as conn:
                        latency[name + variant] = echo_latency(conn, rounds, extra if spec else {})
        if args.only != "latency":
            for name in ("plain", "1 TCP", "2 UDP + 1 TCP"):
                if name not in wanted:
                    continue
                spec = CONFIGS[name]
                for variant in variants if spec else ("",):
                    for op, label in ((b"U", "upload"), (b"D", "download")):
                        if args.direction not in (None, label):
                            continue
                        runs = transfers.setdefault((name + variant, label), [])
                        for _ in range(repeat):
                            paths = spec and bench.paths(spec)
                            with bench.connect(bench.bulk_port, paths, bool(variant)) as conn:
                                # the load beside the session: the target and this bench
                                others = {"target": bench.targets_pid, "bench": os.getpid()}
                                pids = {**extra, **others} if spec else others
                                runs.append(bulk(conn, op, nbytes, pids))
    finally:
        bench.stop()

    verdicts: list[tuple[str, bool]] = []
    if latency:
        print("\necho latency (ms), one 64-byte message at a time")
        print(f"{'configuration':<18} {'p50':>8} {'p99':>8} {'mean':>8}"
              f" {'added/dir p50':>14} {'added/dir p99':>14}"
              f" {'client us/echo':>15} {'relayd us/echo':>15}"
              f" {'machine busy':>13} {'steal':>6}")  # fmt: skip
        base = latency.get("plain")
        for name, lat in latency.items():
            added = f" {'':>14} {'':>14}"
            if base is not None and name != "plain":
                added = (f" {fmt_ms((lat.p50 - base.p50) / 2):>14}"
                         f" {fmt_ms((lat.p99 - base.p99) / 2):>14}")  # fmt: skip
            cpu = "".join(
                f" {lat.cpu[proc] / len(lat.samples) * 1e6:15.0f}"
                if proc in lat.cpu
                else f" {'':>15}"
                for proc in ("client", "relayd")
            )
            print(f"{name:<18} {fmt_ms(lat.p50):>8} {fmt_ms(lat.p99):>8} {fmt_ms(lat.mean):>8}"
                  + added + cpu + f" {lat.machine[0]:13.0%} {lat.machine[1]:6.1%}")  # fmt: skip
        if base is not None:
            for name, lat in latency.items():
                if name != "plain":
                    added_ms = (lat.p99 - base.p99) / 2 * 1e3
                    verdicts.append(
                        (
                            f"added p99 per direction, {name}: {added_ms:.3f} ms "
                            f"(target < {TARGET_ADDED_P99_MS:g} ms)",
                            added_ms < TARGET_ADDED_P99_MS,
                        )
                    )
    if transfers:
        print(f"\nbulk throughput, {nbytes / 1e6:.0f} MB per transfer, median of {repeat}"
              " (range in brackets); CPU time per MB moved, per process")  # fmt: skip
        print(f"{'configuration':<18} {'direction':<9} {'MB/s':>8} {'range':>15} {'vs plain':>9}"
              f" {'client ms/MB':>13} {'relayd ms/MB':>13}"
              f" {'target ms/MB':>13} {'bench ms/MB':>12}")  # fmt: skip
        medians = {key: median_transfer(runs) for key, runs in transfers.items()}
        for (name, label), tr in medians.items():
            runs = transfers[name, label]
            spread = f"[{min(r.mbs for r in runs):.0f}-{max(r.mbs for r in runs):.0f}]"
            base_tr = medians.get(("plain", label))
            ratio = f"{tr.mbs / base_tr.mbs:.1%}" if base_tr is not None else ""
            cpu = "".join(
                f" {tr.cpu_ms_per_mb(proc):{width}.2f}" if proc in tr.cpu else f" {'':>{width}}"
                for proc, width in (("client", 13), ("relayd", 13), ("target", 13), ("bench", 12))
            )
            print(f"{name:<18} {label:<9} {tr.mbs:8.1f} {spread:>15} {ratio:>9}{cpu}")
        goals = (
            ("1 TCP", TARGET_ONE_TCP_MBS),
            ("2 UDP + 1 TCP", TARGET_THREE_PATHS_MBS),
            ("2 UDP + 1 TCP" + ENCRYPTED, TARGET_THREE_PATHS_ENCRYPTED_MBS),
        )
        for name, target in goals:
            for label in ("upload", "download"):
                tr = medians.get((name, label))
                if tr is not None:
                    verdicts.append(
                        (
                            f"{label} over {name}: {tr.mbs:.1f} MB/s (target >= {target:g} MB/s)",
                            tr.mbs >= target,
                        )
                    )
    if verdicts:
        print("\ntargets")
        for text, ok in verdicts:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
