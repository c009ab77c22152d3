#!/usr/bin/env python3
"""Lab benchmark: typing beside a download on issue 9's seed-like network, dupsession against
plain ssh (BBR) and MPTCP in the same run.

    python3 contrib/bench/under_load.py --loss 0            # one loss rate, ~4 min
    python3 contrib/bench/under_load.py --loss 5
    python3 contrib/bench/under_load.py --loss 0 --scale 0.5   # every rate halved (labelled)

Needs root, the netlab (contrib/netlab), OpenSSH and Debian's `mptcpd` (`mptcpize`). One lab per
loss rate (tests/lab/world.py's deployment; `seed_like`): uplink 1 has one-way delays of
20 ms out and 35 ms back, 20 Mbit/s up and 50 down; uplink 2 45 ms out, 30 back, 10 up, 30
down; each uplink's shaper queues up to 200 ms each way and tail-drops; `--loss` random loss
per direction on each uplink's route. dupsession has 4 direct paths: UDP and TCP on each uplink.
TCP runs BBR in the client's and the server's namespaces (`sysctl
net.ipv4.tcp_congestion_control=bbr`; the kernel's cc is printed, and a missing BBR is said).

Per method, one after the other (so they never share the routes), in one lab:
- a typing session (a numbered line every 50 ms, `cat` echoing it): `--typing` s alone (idle
  p50/p99), then the same session goes on typing while a second session of the same method
  runs `ssh host cat FILE` (`--mb` MB of random bytes): typing p50/p99 from 1 s after the
  download's first byte to 0.5 s before its last, and the download's Mbit/s (first to last
  byte, byte-exact, at most `--timeout` s);
- methods: dupsession with the default policy and with `--policy auto` (the 4 paths), plain
  ssh from uplink 1's address (the better uplink), MPTCP ssh (`mptcpize run ssh` to an sshd
  under `mptcpize`, one subflow per uplink).
Before them, a raw capacity check: one kernel TCP transfer per uplink at once (probe.py), with
the loss set to 0 meanwhile, to tell whether the userspace emulator carries the scenario's
rates on this machine.

Printed: figures, ratios to plain ssh, the targets PASS/MISS (typing during a download within
idle p99 + 20 ms; the download at least as fast as plain ssh on the better uplink), CPU per
lab process (share of one core during each download: the emulator, ssh, sshd, dupsession,
relayd) and lab CPU ms per MB, and the exit's per-path controller state mid-download.
`--breakdown`: each typing echo split into client out, network up, far end, network down and
client in from the emulator's record of small packets (one monotonic clock for every
namespace; dupsession's keystroke and echo followed by DATA frame number, not taken for the
first packet either way), and each downlink's queue during the download; where client in goes
(which path's copy came first, in-order and TCP head-of-line waits, the typing chain's
run-queue waits from /proc schedstat, and with `--sched-trace S` from `perf sched`).
`--typing-exit own` (a VARIANT, labelled): dupsession's typing session goes to a second
`relayd serve` of its own at the exit (same arguments, port EXIT_PORT + 1), so the typing
session and the download share no process there, only the cores (docs/BENCHMARKS.md, "One
relayd process per session?").
`--exit-processes N` (a VARIANT, labelled): the exit's `relayd serve --session-processes N`,
each session in a worker process of its own (docs/ARCHITECTURE.md, "Session workers").
`--repeat N`: every method N times in turn in one lab; each repetition's report, then each
method pooled over them (every echo of all N: the p99 of N times the samples; the median rate).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.breakdown import (
    Row,
    breakdown,
    far_chain,
    record_scheduler,
    schedstats,
    typing_chain,
)
from contrib.bench.lab_latency import cpu_by_process, cpu_times, describe_subflows, pct
from contrib.netlab import Lab
from contrib.netlab.emulator import PACKET_LOG_ENV
from contrib.netlab.lab import PROBE_PATH
from dupsession import control
from tests.lab.world import (
    EXIT_PORT,
    GRACE,
    SEED_LIKE,
    SSH_PORT,
    Daemon,
    EchoSession,
    World,
    seed_like,
)
from tests.support.bulk import write_random_file
from tests.support.sshd import require_binary

ROUTES = [f"{uplink}-server" for uplink in SEED_LIKE]
BETTER = "up1"  #: the better uplink (shorter RTT, more capacity): plain ssh's
TARGET_TYPING_MS = 20.0  #: typing p99 during a download within idle p99 + this
WARM = 1.0  #: s after the download's first byte before typing samples count
TAIL = 0.5  #: s before its last byte where they stop counting
RAW_SECONDS = 4.0  #: length of the raw capacity check (at the scenario's rates)
EMULATOR = "emulator.py"  #: the netlab emulator's process label
#: `--typing-exit own`: the typing session's exit, a second `relayd serve` beside the first
TYPING_EXIT_PORT = EXIT_PORT + 1
TYPING_EXIT_LABEL = "relayd serve (typing)"  #: its CPU share's label


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  #: "dupsession", "ssh" or "mptcp"
    policy: str | None = None  #: dupsession's --policy (None: the default)


METHODS = (
    Method("dupsession (default policy)", "dupsession"),
    Method("dupsession --policy auto", "dupsession", "auto"),
    Method(f"plain ssh ({BETTER}, BBR)", "ssh"),
    Method("MPTCP ssh (2 subflows)", "mptcp"),
)


@dataclass
class Result:
    method: Method
    idle: list[float] = field(default_factory=list)  #: typing echo ms, alone
    busy: list[float] = field(default_factory=list)  #: typing echo ms, during the download
    mbit: float = float("nan")
    seconds: float = float("nan")
    complete: bool = False
    cpu: dict[str, float] = field(default_factory=dict)  #: label -> share of a core
    machine_cpu: float = float("nan")  #: share of the whole machine busy
    lab_cpu_ms_per_mb: float = float("nan")  #: every lab process but the emulator
    emulator_ms_per_mb: float = float("nan")
    notes: list[str] = field(default_factory=list)
    drops: dict[str, tuple[int, int]] = field(default_factory=dict)  #: uplink -> (tail, sent)
    #: The typing session's keystrokes: sent at, echoed at (monotonic); the idle and the busy
    #: spans (`--breakdown` matches them with the emulator's packet record)
    typed: list[float] = field(default_factory=list)
    echoed: list[float] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    sampler: list[tuple[float, float]] = field(default_factory=list)  #: CpuWatch.windows
    uplinks: dict[str, str] = field(default_factory=dict)  #: uplink -> client address (hex)
    #: --breakdown: the typing chain's processes (label -> (pid, tid)) and their schedstat
    #: (CPU ns, run-queue wait ns, timeslices) at the idle span's start, the download's
    #: start and its end
    chain: dict[str, tuple[int, int]] = field(default_factory=dict)
    far: dict[str, tuple[int, int]] = field(default_factory=dict)  #: the far end's, likewise
    schedstat: list[dict[str, tuple[int, int, int]]] = field(default_factory=list)
    sched_trace: Path | None = None  #: --sched-trace: perf's record during the download
    exit_view: list[str] = field(default_factory=list)  #: the exit's paths mid-download

    def keep_echoes(
        self, echo: EchoSession, idle: tuple[float, float], first: float | None, last: float
    ) -> None:
        self.typed, self.echoed = list(echo.sent), [at for _, at in echo.received]
        self.spans["idle"] = idle
        if first is not None:
            self.spans["busy"] = (first + WARM, last - TAIL)

    def p99(self, busy: bool) -> float:
        samples = self.busy if busy else self.idle
        return pct(samples, 99) if samples else float("nan")

    def p50(self, busy: bool) -> float:
        samples = self.busy if busy else self.idle
        return statistics.median(samples) if samples else float("nan")


class CpuWatch:
    """CPU seconds of every process in the lab's namespaces, sampled every 0.25 s from a thread,
    so a process that exits before the end (a download's ssh) is still counted."""

    def __init__(self, lab: Lab, labels: dict[int, str] | None = None) -> None:
        self.labels = labels or {}  #: pid -> label, in place of its command's
        self.inodes = {Path(f"/run/netns/{ns}").stat().st_ino for ns in lab.created}
        self.first = cpu_by_process(self.inodes)
        self.last = dict(self.first)
        self.machine0 = cpu_times()
        self.t0 = time.monotonic()
        #: (start, end) of each sample: Python work in the bench's process, where the echo
        #: reader stamps its times (--breakdown tells whether a slow echo's read overlapped one)
        self.windows: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            start = time.monotonic()
            self.last.update(cpu_by_process(self.inodes))
            self.windows.append((start, time.monotonic()))

    def stop(self) -> tuple[dict[str, float], float, float]:
        """(label -> CPU seconds used since the start, machine busy share, seconds)."""
        self.last.update(cpu_by_process(self.inodes))
        self._stop.set()
        self._thread.join(2)
        seconds = time.monotonic() - self.t0
        busy, total = (b - a for a, b in zip(self.machine0, cpu_times(), strict=True))
        used: dict[str, float] = {}
        for pid, (label, cpu) in self.last.items():
            label = self.labels.get(pid, label)
            used[label] = used.get(label, 0.0) + cpu - self.first.get(pid, (label, 0.0))[1]
        return used, busy / max(total, 1e-9), seconds


class Bench:
    def __init__(self, world: World, source: Path, size: int, digest: str, args: Any) -> None:
        self.world, self.lab = world, world.lab
        self.source, self.size, self.digest = source, size, digest
        self.args = args
        self.cc = "?"
        #: "-rN" in the file and process names of repetition N under --repeat (else ""): a
        #: later repetition's must not overwrite an earlier one's (py-spy, perf, proxies)
        self.rep = ""
        self._watch_stop = threading.Event()
        self.typing_exit: Daemon | None = None  #: `--typing-exit own`: the typing session's

    def start_typing_exit(self) -> None:
        """A second `relayd serve`, the first's arguments on another port and control socket,
        for the typing session alone (`--typing-exit own`): the two sessions then share no
        event loop and no process at the exit, only the machine's cores."""
        world = self.world
        assert world.run_dir is not None
        self.typing_exit = Daemon(
            "typing-exit",
            "server",
            [require_binary("relayd"), "serve", "--listen",
             f"0.0.0.0:{TYPING_EXIT_PORT}", "--key", str(world.key),
             "--allow", f"127.0.0.1:{SSH_PORT}", "--grace", str(GRACE),
             "--control", str(world.run_dir / "typing.sock"), "--log-level", "info"],
            world.dir / "typing-exit.log",
            r"listening on",
        ).start(self.lab)  # fmt: skip

    def cpu_labels(self) -> dict[int, str]:
        return {self.typing_exit.pid: TYPING_EXIT_LABEL} if self.typing_exit else {}

    # -- set-up -----------------------------------------------------------------------------

    def use_bbr(self) -> str:
        """BBR in the client's and the server's namespaces; what they run, said plainly."""
        found = []
        for node in ("client", "server"):
            available = self.lab.run(
                node, ["sysctl", "-n", "net.ipv4.tcp_available_congestion_control"]
            ).stdout.split()
            if "bbr" not in available:
                subprocess.run(["modprobe", "tcp_bbr"], capture_output=True, check=False)
            res = self.lab.run(
                node, ["sysctl", "-w", "net.ipv4.tcp_congestion_control=bbr"], check=False
            )
            cc = self.lab.run(node, ["sysctl", "-n", "net.ipv4.tcp_congestion_control"]).stdout
            found.append(cc.strip())
            if res.returncode != 0:
                found[-1] += f" (BBR NOT AVAILABLE: {res.stderr.strip()})"
        return " / ".join(sorted(set(found)))

    def raw_capacity(self) -> list[str]:
        """One kernel TCP transfer per uplink at once (server -> client), each sized for
        RAW_SECONDS at its uplink's rate: what the emulator carries, and its CPU meanwhile."""
        lab, scale = self.lab, self.args.scale
        sinks, senders = [], []
        for i, (uplink, (_, _, _, down)) in enumerate(SEED_LIKE.items()):
            port = 5101 + i
            sink = lab.popen(
                "client",
                [sys.executable, str(PROBE_PATH), "sink", "--bind", lab.addr("client", uplink),
                 "--port", str(port), "--duration", "60"],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            assert sink.stdout is not None
            if sink.stdout.readline().strip() != "ready":
                raise RuntimeError(f"probe sink on {uplink} did not start")
            nbytes = int(down * 1000 * scale * RAW_SECONDS / 8)
            sinks.append((uplink, down * scale, sink))
            senders.append(
                [sys.executable, str(PROBE_PATH), "send", "--to", lab.addr("client", uplink),
                 "--port", str(port), "--bytes", str(nbytes)]
            )  # fmt: skip
        # without the random loss: this measures the emulator, not TCP's loss recovery
        loss = {route: lab.scenario.stages[route]["out"].get("loss", 0.0) for route in ROUTES}
        for route in ROUTES:
            lab.set_link(route, loss=0.0)
        watch = CpuWatch(lab)
        procs = [lab.popen("server", argv, stdin=subprocess.DEVNULL) for argv in senders]
        for proc in procs:
            proc.wait(90)
        used, machine, seconds = watch.stop()
        for route, rate in loss.items():
            lab.set_link(route, loss=rate)
        lines, total, capacity = [], 0.0, 0.0
        for uplink, kbit, sink in sinks:
            assert sink.stdout is not None
            report = json.loads(sink.stdout.readline())
            sink.wait(10)
            mbit = report["bytes"] * 8 / max(report["seconds"], 1e-9) / 1e6
            total, capacity = total + mbit, capacity + kbit / 1000
            lines.append(f"{uplink} {mbit:.1f} of {kbit / 1000:g} Mbit/s")
        emulator = used.get(EMULATOR, 0.0) / seconds
        verdict = "carries the rates" if total >= 0.85 * capacity else "DOES NOT carry the rates"
        return [
            f"raw kernel TCP, both uplinks at once, no loss: {', '.join(lines)} "
            f"(sum {total:.1f} of {capacity:g}); emulator {emulator:.0%} of a core, machine "
            f"{machine:.0%} busy: the emulator {verdict}"
        ]

    # -- sessions ---------------------------------------------------------------------------

    def dupsession_config(self, method: Method) -> Path:
        name = f"{method.policy or 'default'}.toml"
        return self.world.write_paths_config(
            name, method.policy, ROUTES, transports=self.args.paths
        )

    def typing_session(self, method: Method) -> EchoSession:
        world = self.world
        if method.kind == "dupsession":
            config = self.dupsession_config(method)
            if self.typing_exit is not None:  # the same paths, to the typing session's exit
                paths = len(ROUTES) * len(self.args.paths)
                text = to_typing_exit(config.read_text(), paths)
                config = config.with_name(f"typing-{config.name}")
                config.write_text(text)
            proxy = world.proxy(config, f"{method.policy}-typing{self.rep}")
            return EchoSession(world, proxy)
        mptcp = method.kind == "mptcp"
        return EchoSession(
            world, None, ssh_argv=lambda remote: world.plain_ssh_argv(remote, BETTER, mptcp)
        )

    def download_process(self, method: Method) -> subprocess.Popen[bytes]:
        world, remote = self.world, f"cat {self.source}"
        pipes: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE}
        if method.kind == "dupsession":
            name = f"{method.policy}-download{self.rep}"
            proxy = world.proxy(self.dupsession_config(method), name)
            return world.ssh_popen(proxy, remote, stderr=subprocess.DEVNULL, **pipes)
        argv = world.plain_ssh_argv(remote, BETTER, method.kind == "mptcp")
        proc = self.lab.popen("client", argv, stderr=subprocess.DEVNULL, **pipes)
        world.sessions.append(proc)
        return proc

    # -- one method -------------------------------------------------------------------------

    def run(self, method: Method) -> Result:
        result = Result(method)
        echo = self.typing_session(method).start()
        if self.args.breakdown or self.args.typing_nice is not None:
            result.chain = typing_chain(echo)
            result.far = far_chain(
                self.lab, self.typing_exit.pid if self.typing_exit is not None else None
            )
        if self.args.typing_nice is not None:  # a diagnosis: how much is waiting for a CPU
            for label in ("dupsession", "ssh"):
                if label in result.chain:
                    os.setpriority(os.PRIO_PROCESS, result.chain[label][1], self.args.typing_nice)
        time.sleep(1.0)
        idle_from = time.monotonic()
        result.schedstat.append(schedstats(result.chain))
        time.sleep(self.args.typing)
        idle_to = time.monotonic()
        result.schedstat.append(schedstats(result.chain))
        watch = CpuWatch(self.lab, self.cpu_labels())
        self.lab.reset_counters()
        udp0 = {node: self.udp_errors(node) for node in ("client", "server")}
        proc = self.download_process(method)
        assert proc.stdout is not None
        side: list[Callable[[], None]] = []
        if method.kind == "dupsession":
            side.append(lambda: self.exit_view(result))
            if self.args.watch:
                side.append(lambda: self.watch_exit(method, proc))
            if self.args.py_spy:
                side.append(lambda: self.profile(method))
            if self.args.sched_trace:
                side.append(lambda: self.trace_scheduler(method, result))
        elif method.kind == "mptcp":
            side.append(lambda: self.subflows(result))
        received, first, last, ok, ended = self.read(proc.stdout, side)
        result.schedstat.append(schedstats(result.chain))
        used, result.machine_cpu, seconds = watch.stop()
        result.sampler = watch.windows
        stats = self.lab.stats()
        stages = stats["stages"]
        for uplink in SEED_LIKE:  # the downlink's shaper: its tail drops mean a full queue
            counters = stages[uplink]["back"]["counters"]
            result.drops[uplink] = (counters["queue"], counters["packets"])
        if self.args.watch:  # where packets went missing: the emulator, or a full socket
            emu = stats.get("counters", {})
            routes = ", ".join(
                f"{r} {stages[r]['back']['counters']['loss']} of "
                f"{stages[r]['back']['counters']['packets']}"
                for r in ROUTES
            )
            udp = {node: self.udp_errors(node) - udp0[node] for node in udp0}
            result.notes.append(
                f"emulator {emu}; random loss downstream {routes}; UDP receive errors {udp}"
            )
        if not ended:
            proc.kill()
            result.notes.append(f"download stopped after {self.args.timeout:g} s")
        proc.wait(30)
        code = echo.finish()
        echo.check_stream()
        if code != 0:
            result.notes.append(f"typing ssh exited {code}: {echo.ssh_stderr[-300:]}")
        result.complete = received == self.size and ok
        if not result.complete:
            result.notes.append(f"download INCOMPLETE or corrupt: {received} of {self.size} B")
        if first is not None and last > first:
            result.seconds = last - first
            result.mbit = received * 8 / result.seconds / 1e6
            result.busy = echo.latencies(since=first + WARM, until=last - TAIL)
        result.idle = echo.latencies(since=idle_from, until=idle_to)
        result.keep_echoes(echo, (idle_from, idle_to), first, last)
        result.cpu = {k: v / seconds for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        mb = max(received, 1) / 1e6
        emulator = used.get(EMULATOR, 0.0)
        result.emulator_ms_per_mb = emulator * 1000 / mb
        result.lab_cpu_ms_per_mb = (sum(used.values()) - emulator) * 1000 / mb
        return result

    def read(
        self, out: IO[bytes], side: list[Callable[[], None]]
    ) -> tuple[int, float | None, float, bool, bool]:
        """Read the download to its end or the time limit: bytes, first and last byte time,
        whether the bytes were the file's, whether it ended. `side` runs 3 s in."""
        digest, received, first, last = hashlib.sha256(), 0, None, 0.0
        deadline = time.monotonic() + self.args.timeout
        fd = out.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break  # over the time limit: the caller kills the download
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return received, first, last, digest.hexdigest() == self.digest, True
            now = time.monotonic()
            if first is None:
                first = now
                for job in side:
                    timer = threading.Timer(3.0, job)
                    timer.daemon = True
                    timer.start()
            digest.update(chunk)
            received += len(chunk)
            last = now
        return received, first, last, False, False

    # -- what the ends see --------------------------------------------------------------------

    def udp_errors(self, node: str) -> int:
        """The node's UDP datagrams dropped on receive (a full socket buffer), so far."""
        lines = self.lab.run(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        rows = [line.split() for line in lines if line.startswith("Udp:")]
        return int(dict(zip(rows[0], rows[1], strict=True))["InErrors"])

    def watch_exit(self, method: Method, proc: subprocess.Popen[bytes]) -> None:
        """Under --watch: the exit's view every `--watch` s until the download ends (3 s in,
        the first is `exit_view`'s), so a figure's change over the download shows."""
        first = time.monotonic()
        while proc.poll() is None and not self._watch_stop.wait(self.args.watch):
            lines = self.exit_lines()
            print(f"    [{time.monotonic() - first + 3:5.1f} s] " + "\n      ".join(lines))

    def profile(self, method: Method) -> None:
        """Under --py-spy DIR: py-spy record the exit's relayd and the downloading client for
        `--py-spy-seconds` (folded stacks, one file each), 3 s into the download."""
        wanted = ("relayd serve", "dupsession")
        inodes = {Path(f"/run/netns/{ns}").stat().st_ino for ns in self.lab.created}
        found = cpu_by_process(inodes)
        # the busiest of each label: the download's client, not the typing session's
        time.sleep(0.5)
        later = cpu_by_process(inodes)
        for label in wanted:
            pids = [p for p, (lab, _) in later.items() if lab == label and p in found]
            if not pids:
                continue
            pid = max(pids, key=lambda p: later[p][1] - found[p][1])
            name = f"{method.policy or 'default'}-{label.split()[0]}{self.rep}.txt"
            out = Path(self.args.py_spy) / name
            subprocess.Popen(
                ["py-spy", "record", "-r", "100", "-f", "raw", "--nonblocking", "-d",
                 str(self.args.py_spy_seconds), "-o", str(out), "--pid", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def trace_scheduler(self, method: Method, result: Result) -> None:
        """Under --sched-trace S: the scheduler's events for S s, 3 s into the download
        (`record_scheduler`), so --breakdown can say how long each process of the typing chain
        waited on a run queue while an echo was on its way in."""
        # (removed with the world's directory)
        out = self.world.dir / f"sched-{method.policy or 'default'}{self.rep}.data"
        result.sched_trace = out
        record_scheduler(out, self.args.sched_trace)

    def exit_view(self, result: Result) -> None:
        """The exit's busiest session's paths mid-download: the download's sender."""
        result.exit_view = self.exit_lines()

    def exit_lines(self) -> list[str]:
        """The exit's busiest session's paths now, one line each, and its TCP sockets."""
        try:
            assert self.world.run_dir is not None
            doc = control.query(self.world.run_dir / "relayd.sock")
        except (control.ControlError, OSError) as exc:
            return [f"exit status failed: {exc}"]
        # the download's: the youngest session that has sent more than typing does
        sessions = [s for s in doc.get("sessions", []) if s.get("bytes_out", 0) > 100_000]
        if not sessions:
            return ["exit: no download session found"]
        session = min(sessions, key=lambda s: float(s.get("age", 0.0)))
        lines = [
            f"policy {session.get('policy')}, {session.get('retransmissions')} "
            f"retransmissions, {session.get('unacked_bytes', 0) / 1e3:.0f} kB unacked, "
            f"{session.get('bytes_out', 0) / 1e6:.1f} MB sent"
        ]
        for path in session.get("paths", []):
            cc = path.get("congestion") or {}
            rtt = path.get("rtt")
            text = f"{path.get('label') or path.get('spec') or path.get('id')}: "
            text += f"rtt {rtt * 1e3:.0f} ms" if isinstance(rtt, float) else "rtt -"
            for key, scale, unit in (
                ("rate_bps", 1e-6, " Mbit/s"),
                ("cwnd_frames", 1, " cwnd"),
                ("inflight_frames", 1, " in flight"),
                ("min_rtt", 1e3, " ms min RTT"),
                ("queue_delay", 1e3, " ms queue"),
            ):
                if isinstance(cc.get(key), int | float):
                    text += f", {cc[key] * scale:.1f}{unit}"
            if cc.get("kind"):
                text += f" [{cc['kind']}{'/' + cc['mode'] if cc.get('mode') else ''}]"
            out = path.get("outbound") or {}
            text += f"; sent {path.get('bytes_sent', 0) / 1e6:.1f} MB"
            if isinstance(out.get("first"), int):
                text += f", first {out['first']}, loss {out.get('loss', 0.0):.1%}"
            lines.append(text)
        return lines + self.exit_sockets()

    def exit_sockets(self) -> list[str]:
        """The exit's TCP paths as the kernel sees them (`ss`): its own RTT and window, and
        the bytes waiting unsent in the socket, to tell a router queue from a socket queue."""
        out = self.lab.run(
            "server", ["ss", "-Htni", "state", "established", f"sport = :{EXIT_PORT}"], check=False
        ).stdout
        lines, peer = [], ""
        for line in out.splitlines():
            if not line[:1].isspace():
                peer = line.split()[-1]
                continue
            found = dict(re.findall(r"\b(rtt|cwnd|unacked|notsent|bbr)[: ](\S+)", line))
            rate = re.search(r"\bdelivery_rate (\S+)", line)
            if peer.startswith(tuple(self.lab.addr("client", u) for u in SEED_LIKE)):
                lines.append(
                    f"kernel TCP to {peer}: rtt {found.get('rtt', '?')} ms, cwnd "
                    f"{found.get('cwnd', '?')}, unacked {found.get('unacked', 0)} segments, "
                    f"notsent {found.get('notsent', 0)} B, delivery "
                    f"{rate.group(1) if rate else '?'}, bbr {found.get('bbr', '-')}"
                )
        return lines

    def subflows(self, result: Result) -> None:
        out = self.lab.run(
            "client",
            ["ss", "-Htni", "state", "established", f"dport = :{self.world.plain_port}"],
            check=False,
        ).stdout
        result.notes.append(f"mid-download {describe_subflows(out)}")


def _hex(addr: str) -> str:
    return bytes(int(x) for x in addr.split(".")).hex()


# -- report --------------------------------------------------------------------------------


def report(tag: str, results: list[Result]) -> list[str]:
    lines = []
    plain = next(r for r in results if r.method.kind == "ssh")
    head = f"{'method':<30} {'idle p50/p99':>13} {'busy p50/p99':>13} {'+p99':>6} {'Mbit/s':>7}"
    lines += [head + f" {'x ssh':>6}  CPU during the download (share of a core)"]
    for r in results:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r.cpu.items() if v >= 0.005)
        lines.append(
            f"{r.method.name:<30} {r.p50(False):5.0f}/{r.p99(False):<5.0f} ms "
            f"{r.p50(True):5.0f}/{r.p99(True):<5.0f} ms {r.p99(True) - r.p99(False):+5.0f} "
            f"{r.mbit:7.1f} {r.mbit / plain.mbit:6.2f}  {shares}; machine {r.machine_cpu:.0%}; "
            f"lab CPU {r.lab_cpu_ms_per_mb:.0f} ms/MB + emulator {r.emulator_ms_per_mb:.0f} ms/MB"
        )
        drops = ", ".join(
            f"{u} {tail} of {sent} ({tail / max(sent, 1):.1%})"
            for u, (tail, sent) in r.drops.items()
        )
        lines.append(f"    downlink queues' tail drops during the download: {drops}")
        lines += [f"    note: {n}" for n in r.notes]
        lines += [f"    exit: {v}" for v in r.exit_view]
    return [*lines, "targets:", *verdicts(tag, results)]


def verdicts(tag: str, results: list[Result]) -> list[str]:
    """The targets' PASS/MISS lines of each dupsession method in `results` (plain ssh's
    download is the reference)."""
    lines = []
    plain = next(r for r in results if r.method.kind == "ssh")
    for r in results:
        if r.method.kind != "dupsession":
            continue
        idle, busy = r.p99(False), r.p99(True)
        ok = busy <= idle + TARGET_TYPING_MS
        lines.append(
            f"  {'PASS' if ok else 'MISS'} {r.method.name}, {tag}: typing p99 during the download "
            f"{busy:.0f} ms <= idle {idle:.0f} + {TARGET_TYPING_MS:.0f} ms"
        )
        ok = r.complete and r.mbit >= plain.mbit
        lines.append(
            f"  {'PASS' if ok else 'MISS'} {r.method.name}, {tag}: download {r.mbit:.1f} Mbit/s "
            f">= plain ssh on {BETTER} {plain.mbit:.1f} Mbit/s ({r.mbit / plain.mbit:.2f}x)"
        )
    return lines


def pooled(runs: list[Result]) -> Result:
    """One method's repetitions as one run: every idle and busy echo together, so the p99 is
    the quantile of all of them; the median download rate; complete only if every download
    was. Why: one run's busy p99 is the 2nd highest of ~130 echoes and its idle p99 the 3rd of
    ~200, so one slow echo moves a run's verdict; the pool estimates the same quantile of the
    same method from N times the samples. Each repetition's own figures are printed first."""
    first = runs[0]
    assert all(r.method == first.method for r in runs), "pool one method's runs only"
    pool = Result(
        first.method,
        idle=[ms for r in runs for ms in r.idle],
        busy=[ms for r in runs for ms in r.busy],
        mbit=_median([r.mbit for r in runs]),
        seconds=_median([r.seconds for r in runs]),
        complete=all(r.complete for r in runs),
    )
    moved = sum(1 for r in runs if r.busy)
    if moved < len(runs):  # a download that never moved has no rate and no busy echoes
        pool.notes.append(f"only {moved} of {len(runs)} downloads moved")
    return pool


def _median(values: list[float]) -> float:
    """The median of the numbers among `values` (NaN: a download that never moved), NaN if
    none: `statistics.median` with a NaN in the list answers by where it stands."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else float("nan")


def report_pooled(tag: str, reps: list[list[Result]]) -> list[str]:
    """Each method over all repetitions (`pooled`): samples, pooled p50/p99, median rate, and
    each repetition's rise and rate beside them; then the targets on the pooled figures."""
    methods = [r.method for r in reps[0]]
    pools = [pooled([rep[i] for rep in reps]) for i in range(len(methods))]
    plain = next(r for r in pools if r.method.kind == "ssh")
    lines = [
        f"{'method':<30} {'n idle/busy':>11} {'idle p50/p99':>13} {'busy p50/p99':>13} "
        f"{'+p99':>6} {'Mbit/s':>7} {'x ssh':>6}  each repetition: +p99, Mbit/s"
    ]
    for i, r in enumerate(pools):
        each = "; ".join(
            f"{rep[i].p99(True) - rep[i].p99(False):+.0f}, {rep[i].mbit:.1f}" for rep in reps
        )
        lines.append(
            f"{r.method.name:<30} {len(r.idle):>5}/{len(r.busy):<5} "
            f"{r.p50(False):5.0f}/{r.p99(False):<5.0f} ms {r.p50(True):5.0f}/{r.p99(True):<5.0f} "
            f"ms {r.p99(True) - r.p99(False):+5.0f} {r.mbit:7.1f} {r.mbit / plain.mbit:6.2f}  "
            f"{each}"
        )
        lines += [f"    note: {n}" for n in r.notes]
    return [*lines, "targets:", *verdicts(tag, pools)]


def to_typing_exit(config: str, paths: int) -> str:
    """`config` (a `write_paths_config` text of `paths` paths to the exit) sent to the typing
    session's own relayd. Every path must move: one left on the shared relayd would make a
    run titled "on its own relayd" a shared one, unseen (review L7)."""
    old, new = f":{EXIT_PORT}?", f":{TYPING_EXIT_PORT}?"
    found = config.count(old)
    if found != paths:
        raise ValueError(f"{found} of {paths} paths to the exit found as '{old}' in {config!r}")
    return config.replace(old, new)


def run_tag(loss: float, args: Any) -> str:
    """The run's name in every headline and PASS/MISS line: the loss rate, and what makes the
    run other than a plain one (a variant of the scenario, or a diagnosis beside it)."""
    tag = f"{loss:g} % loss"
    if args.scale != 1:
        tag += f", SCALED VARIANT (every rate x{args.scale:g})"
    if args.typing_nice is not None:
        tag += f", DIAGNOSTIC (the typing session's dupsession and ssh at nice {args.typing_nice})"
    # perf recording the whole machine, or py-spy sampling relayd and the client, runs beside
    # dupsession's download on the same CPUs: its figures are not a plain run's
    recorders = [name for name, on in (("perf", args.sched_trace), ("py-spy", args.py_spy)) if on]
    if recorders:
        tag += f", DIAGNOSTIC ({' and '.join(recorders)} recording during dupsession's download)"
    if args.typing_exit == "own":
        tag += ", VARIANT (dupsession's typing session on its own relayd at the exit)"
    if args.pin_exit:
        tag += (
            ", DIAGNOSTIC (the exit's relayd and sshd on CPU 1, every other lab process on CPU 0)"
        )
    if args.exit_processes:
        tag += (
            f", VARIANT (relayd serve --session-processes {args.exit_processes} at the exit: "
            "a worker process per session)"
        )
    if args.paths != ["udp", "tcp"]:
        tag += f", VARIANT (dupsession paths: {'+'.join(args.paths)} on each uplink)"
    return tag


def print_report(tag: str, rep: int, repeat: int, results: list[Result]) -> None:
    print()
    print(f"{tag}{rep_tag(rep, repeat)}:")
    print("\n".join(report(tag + rep_tag(rep, repeat), results)), flush=True)


def rep_tag(rep: int, repeat: int) -> str:
    """Repetition `rep` (from 0) of `repeat`'s mark in its lines; none for a single run."""
    return f" (repetition {rep + 1} of {repeat})" if repeat > 1 else ""


def pin_tree(pid: int, cpu: int) -> None:
    """Every thread of `pid` and of its descendants on `cpu` (what they start later inherits
    it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                pin_tree(int(child), cpu)


def run_loss(loss: float, source: Path, digest: str, args: Any, tmp: Path) -> None:
    scale = args.scale
    rates = ", ".join(
        f"{u} {o:g}/{b:g} ms, {up * scale / 1000:g} up / {down * scale / 1000:g} down Mbit/s"
        for u, (o, b, up, down) in SEED_LIKE.items()
    )
    tag = run_tag(loss, args)
    print(f"{tag} per direction; {rates}; 200 ms queues", flush=True)
    if args.breakdown:
        os.environ[PACKET_LOG_ENV] = str(tmp)  # the emulator inherits it
    with Lab(seed_like(loss / 100, seed=9, scale=scale)) as lab:
        addrs = {u: lab.addr("client", u) for u in SEED_LIKE}
        exit_args = ("--session-processes", str(args.exit_processes))
        world = World(lab, tmp, exit_args if args.exit_processes else ())
        bench: Bench | None = None
        reps: list[list[Result]] = []  #: each repetition's results, in `methods`' order
        try:
            world.start()
            world.start_plain_sshd()
            if args.pin_exit:  # the exit's relayd (its workers too) and sshd on a core of their own
                for pid in (world.exit.pid, world.sshds["server"].pid):
                    pin_tree(pid, 1)
            bench = Bench(world, source, args.mb * 1_000_000, digest, args)
            if args.typing_exit == "own":
                bench.start_typing_exit()
            bench.cc = bench.use_bbr()
            print(f"  TCP congestion control (client / server): {bench.cc}", flush=True)
            for line in bench.raw_capacity():
                print(f"  {line}", flush=True)
            methods = [
                m  # plain ssh always: the targets' reference
                for m in METHODS
                if not args.only or any(o in m.name for o in args.only) or m.kind == "ssh"
            ]
            for rep in range(args.repeat):  # each method in turn, so a slow minute hits all
                results: list[Result] = []
                reps.append(results)
                bench.rep = f"-r{rep + 1}" if args.repeat > 1 else ""
                for method in methods:
                    results.append(bench.run(method))
                    r = results[-1]
                    print(
                        f"  {method.name}{rep_tag(rep, args.repeat)}: idle p99 "
                        f"{r.p99(False):.0f} ms, during the download {r.p99(True):.0f} ms, "
                        f"download {r.mbit:.1f} Mbit/s in {r.seconds:.1f} s",
                        flush=True,
                    )
                if not args.breakdown:  # (the breakdown needs the lab's packet record: at the end)
                    print_report(tag, rep, args.repeat, results)
        finally:
            try:  # a stop that fails (a timeout) must not leave the lab up on a shared machine
                if bench is not None and bench.typing_exit is not None:
                    bench.typing_exit.stop()
            finally:
                world.close()
    if args.breakdown:  # the emulator wrote its record as the lab stopped
        logs = sorted(tmp.glob("packets-*.json"))
        rows: list[Row] = [tuple(row) for row in json.loads(logs[-1].read_text())] if logs else []
        uplinks = {u: _hex(addr) for u, addr in addrs.items()}
        for r in (r for results in reps for r in results):
            r.notes += breakdown(r, rows, uplinks)
        for rep, results in enumerate(reps):
            print_report(tag, rep, args.repeat, results)
    if args.repeat > 1:
        print()
        print(f"{tag}, pooled over {args.repeat} repetitions:")
        print("\n".join(report_pooled(f"{tag}, pooled", reps)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 5.0], help="percent")
    parser.add_argument("--mb", type=int, default=60, help="download size (MB)")
    parser.add_argument("--typing", type=float, default=10.0, help="idle typing seconds")
    parser.add_argument("--timeout", type=float, default=90.0, help="longest download (s)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every rate")
    parser.add_argument(
        "--only", nargs="+", help="methods whose name contains one of these (and plain ssh)"
    )
    parser.add_argument(
        "--watch", type=float, metavar="S", help="print the exit's view every S s (diagnosis)"
    )
    parser.add_argument(
        "--breakdown", action="store_true",
        help="split each typing echo into client, network and far end (emulator packet record)",
    )  # fmt: skip
    parser.add_argument(
        "--sched-trace", type=float, metavar="S",
        help="with --breakdown: perf-record the scheduler for S s of the download (diagnosis)",
    )  # fmt: skip
    parser.add_argument(
        "--typing-nice", type=int, metavar="N",
        help="DIAGNOSIS, not a result: the typing session's dupsession and ssh at nice N",
    )  # fmt: skip
    parser.add_argument("--py-spy", metavar="DIR", help="record relayd and the client (py-spy)")
    parser.add_argument("--py-spy-seconds", type=int, default=5, help="py-spy record length")
    parser.add_argument(
        "--paths", nargs="+", default=["udp", "tcp"], choices=["udp", "tcp"],
        help="dupsession's path kinds on each uplink (default: udp tcp, the issue's 4 paths)",
    )  # fmt: skip
    parser.add_argument(
        "--typing-exit", choices=["shared", "own"], default="shared",
        help="dupsession's typing session at the exit: on the download's relayd (shared, "
        "as deployed) or on a second relayd of its own (own: a variant)",
    )  # fmt: skip
    parser.add_argument(
        "--pin-exit", action="store_true",
        help="DIAGNOSTIC: the exit's relayd and sshd (and what they start) on CPU 1, every "
        "other lab process on CPU 0: an exit host of its own, on a two-core machine",
    )  # fmt: skip
    parser.add_argument(
        "--exit-processes", type=int, default=0, metavar="N",
        help="the exit's relayd serve with --session-processes N: each session in a worker "
        "process of its own (a variant; default 0: every session in one process, as deployed)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run every method N times in turn in one lab (N times as long); print each "
        "repetition, then each method pooled over them (every echo's p99, the median rate)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.pin_exit:
        os.sched_setaffinity(0, {0})  # inherited by the lab's processes; the exit's moved later
    if os.geteuid() != 0:
        print("under_load: needs root (network namespaces)", file=sys.stderr)
        return 2
    # a SIGTERM (`timeout`) unwinds like an exception: the lab and its processes are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="underload-"))
    tmp.chmod(0o755)
    try:
        source = tmp / "bigfile"
        digest = write_random_file(source, args.mb * 1_000_000)
        for loss in args.loss:
            work = tmp / f"loss{loss:g}"
            work.mkdir()
            run_loss(loss, source, digest, args, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
