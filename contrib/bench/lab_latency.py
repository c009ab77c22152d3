#!/usr/bin/env python3
"""Lab benchmark: interactive echo latency on bad routes, dupsession against what users pick.

    python3 contrib/bench/lab_latency.py            # full run (150 s steady state, ~5 min)
    python3 contrib/bench/lab_latency.py --quick    # smoke run (20 s steady state, ~1.5 min)

Needs root, the netlab (contrib/netlab) and Debian's `openssh-server openssh-client socat mosh
mptcpd` (mptcpd provides `mptcpize`). Every method below runs at the same time in one netlab
`two-uplinks-two-relays` lab: 2 uplinks x (2 relays + direct), route RTTs of 75-120 ms through
to the server, asymmetric, 5 % independent loss per route and direction. Each method types one
keystroke every 50 ms into a remote program that draws every byte it reads at its own cell of
the screen (`--screen-echo`, in a pty on the server), and the client times when that cell
shows the keystroke, from the bytes its terminal would get:

- `ssh <route>`: plain OpenSSH over one route. Through a relay, ssh connects to a `socat`
  TCP forward on the relay (TCP_NODELAY both ways) and the uplink is picked with `ssh -b`;
- `dupsession`: ssh with `ProxyCommand dupsession --config C %h %p`, the config naming both
  uplinks, the exit (UDP and TCP) and both relays (`relayd relay`, UDP): 8 paths;
- `mosh`: `mosh-server new` bootstrapped over plain ssh, then `mosh-client` with
  MOSH_PREDICTION_DISPLAY=never (what `mosh --predict=never` runs) in a pty this bench owns;
  its route is the one the kernel picks (the first uplink, direct);
- `MPTCP`: `mptcpize run ssh` to an sshd started under `mptcpize run`, with an MPTCP subflow
  endpoint on the second uplink, so one subflow per uplink (checked with `ss`, reported).

Then, still typing, the failover part, three outages in turn, each `--outage` seconds long
(both directions blackholed) and `--recovery` seconds apart: the best route (up1-relay1), then
uplink up1 (its three routes), then uplink up2. For each method an outage hits (it sends over
that route), the failover figure is its longest echo wait for keystrokes typed from 0.5 s
before the outage to its end; "dead" means no keystroke typed during the outage was echoed
before the route came back.

Targets (from the issue): dupsession's p99 within 10 % of the best route's loss-free RTT; plain
ssh's p99 on every single route at least 3x that; dupsession's p99 below mosh's and MPTCP's.
The best route's loss-free RTT is the lowest p50 of plain ssh over one route (with 5 % loss
per direction, over 90 % of keystrokes see no loss, so p50 is the loss-free echo time,
ssh's own costs included); the lab's configured RTT is printed beside it. PASS/FAIL is printed
per target; the exit code is 0 either way (this is a benchmark, not a test).

Also printed: the machine's CPU load (before and while typing, and per lab process: the figures
are only meaningful on an otherwise idle machine), MPTCP's subflows as `ss` sees them, and the
dupsession client's per-path view (which path delivered the first copy, each way). `--logs DIR`
keeps every log and each terminal's raw output, `--json FILE` writes figures and samples,
`--py-spy DIR` samples dupsession's client, relays and exit during the steady state.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import selectors
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contrib.bench.termscreen import Screen  # noqa: E402
from tests.support.processes import alive, descendants, stop_tree  # noqa: E402
from tests.support.sshd import sshd_config_text  # noqa: E402

SCENARIO = "two-uplinks-two-relays"
KEY_INTERVAL = 0.050  # one keystroke every 50 ms
WARMUP = 2.0  # seconds of typing before samples count
ALPHABET = b"abcdefghijklmnopqrstuvwxyz"
# The echo program draws keystroke n at row ECHO_ROW0 + (n // COLS) % ECHO_ROWS, column
# n % COLS (0-based): a cell shows keystroke n, or one 1600 keystrokes older (another letter),
# so a screen that skips states (mosh) still tells which keystrokes made it.
TERM_ROWS, COLS = 24, 80
ECHO_ROW0, ECHO_ROWS = 2, 20
READY = b"READY"
SSH_PORT = 22
MPTCP_SSH_PORT = 2222
FORWARD_PORT = 2200  # socat on each relay -> server:22
EXIT_PORT = 7300
RELAY_PORT = 7400
HOST_KEY_ALIAS = "lab-server"
START_TIMEOUT = 60.0  # seconds for every method to show READY
IN_FLIGHT = 0.5  # keystrokes typed this long before an outage count toward its failover figure

TARGET_DUP_P99_RATIO = 1.10
TARGET_SSH_P99_RATIO = 3.0


# --- the remote end: `lab_latency.py --screen-echo` runs in a pty on the server ---------------


def cell_of(n: int) -> tuple[int, int]:
    return ECHO_ROW0 + (n // COLS) % ECHO_ROWS, n % COLS


def screen_echo() -> None:
    """Raw mode, no echo; draw each byte read at its cell (absolute cursor position)."""
    with contextlib.suppress(termios.error):
        tty.setraw(0)
    os.write(1, b"\x1b[2J\x1b[1;1H" + READY)
    n = 0
    while data := os.read(0, 4096):
        out = bytearray()
        for byte in data:
            row, col = cell_of(n)
            out += b"\x1b[%d;%dH%c" % (row + 1, col + 1, byte)
            n += 1
        os.write(1, out)


# --- one method: a process whose terminal output we watch, keystrokes and their echoes --------


@dataclass
class Method:
    name: str
    route: str  #: what it runs over, for the table
    routes: tuple[str, ...]  #: lab routes it sends over: an outage of one of these hits it
    group: str  #: "ssh", "dupsession", "mosh", "mptcp"
    proc: subprocess.Popen[bytes] | None = None
    wfd: int = -1
    rfd: int = -1
    screen: Screen = field(default_factory=lambda: Screen(TERM_ROWS, COLS))
    ready_at: float | None = None
    offset: float = 0.0  #: keystrokes are staggered across methods
    sent: list[float] = field(default_factory=list)
    echoed: list[float | None] = field(default_factory=list)
    first_unechoed: int = 0
    error: str | None = None
    raw_log: Any = None

    def type_key(self, now: float) -> None:
        n = len(self.sent)
        self.sent.append(now)
        self.echoed.append(None)
        try:
            os.write(self.wfd, ALPHABET[n % len(ALPHABET) : n % len(ALPHABET) + 1])
        except BlockingIOError:
            pass  # a stalled ssh stops reading its stdin: that keystroke is never echoed
        except OSError as exc:
            self.error = self.error or f"write failed: {exc}"

    def output(self, data: bytes, now: float) -> None:
        if self.raw_log is not None:
            self.raw_log.write(b"\n@%.6f " % now + data)
        self.screen.feed(data)
        if self.ready_at is None:
            if READY.decode() in self.screen.text():
                self.ready_at = now
            return
        grid = self.screen.grid
        for j in range(len(self.sent) - 1, self.first_unechoed - 1, -1):
            row, col = cell_of(j)
            if grid[row][col] == ALPHABET[j % len(ALPHABET)]:
                for k in range(self.first_unechoed, j + 1):
                    self.echoed[k] = now  # echoes come in order: j shown means all before it
                self.first_unechoed = j + 1
                break

    def latencies(self, start: float, end: float) -> list[float | None]:
        """Echo latency (s) of each keystroke typed in [start, end); None: never echoed."""
        return [
            (echo - sent if echo is not None else None)
            for sent, echo in zip(self.sent, self.echoed, strict=True)
            if start <= sent < end
        ]


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Outage:
    target: str  #: a route ("up1-relay1") or an uplink ("up1": every route on it)
    start: float  #: monotonic
    end: float

    def hits(self, method: Method) -> bool:
        return any(r == self.target or r.startswith(self.target + "-") for r in method.routes)


# --- the lab and its servers ------------------------------------------------------------------


def process_label(pid: int) -> str:
    """A short name: the program, or the script a Python runs, with relayd's role."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv = [a for a in argv if a]
    if not argv:
        return "?"
    name = Path(argv[0].split()[0].rstrip(":")).name
    if name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        name, argv = argv[2], argv[2:]  # a module: relayd.worker, a session worker
    elif name.startswith("python") and len(argv) > 1:
        name, argv = Path(argv[1]).name, argv[1:]
    if name == "relayd" and len(argv) > 1:
        name += " " + argv[1]
    return name


def cpu_by_process(inodes: set[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process in the lab's namespaces, by PID."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "net").stat().st_ino not in inodes:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        found[pid] = (process_label(pid), (int(fields[11]) + int(fields[12])) / tick)
    return found


def describe_subflows(ss_output: str) -> str:
    """`ss -tni` of MPTCP subflows -> "2 subflows: 198.18.1.2 (rto 204 ms, 9 B out, 9 B in)"."""
    flows = []
    lines = ss_output.splitlines()
    for i, line in enumerate(lines):
        if not line or line[0].isspace():
            continue
        local = next(token for token in line.split() if ":" in token)
        info = lines[i + 1] if i + 1 < len(lines) and lines[i + 1][:1].isspace() else ""
        found = dict(re.findall(r"\b(rto|backoff|bytes_acked|bytes_received):(\d+)", info))
        text = local.rsplit(":", 1)[0].split("%")[0]
        text += f" (rto {found.get('rto', '?')} ms"
        text += f", backoff {found['backoff']}" if "backoff" in found else ""
        text += f", {found.get('bytes_acked', 0)} B out, {found.get('bytes_received', 0)} B in)"
        flows.append(text if "tcp-ulp-mptcp" in info else text + " NOT MPTCP")
    return f"{len(flows)} subflows: " + ", ".join(flows) if flows else "no subflow established"


def machine_times() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat. Steal is time the
    hypervisor ran another guest on our CPUs: on this VM the same code's loopback echo cost
    twice the CPU on one day as on the day before, so a latency figure is read beside it."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0.0
    return sum(fields) - idle, steal, sum(fields)


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    busy, _, total = machine_times()
    return busy, total


def which(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        raise SystemExit(
            f"lab_latency: {name!r} not found; apt-get install openssh-server openssh-client "
            "socat mosh mptcpd"
        )
    return path


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from contrib.netlab import Lab

        self.args = args
        self.ssh = which("ssh")
        self.bins = {n: which(n) for n in ("sshd", "ssh-keygen", "socat", "mptcpize")}
        self.bins["dupsession"] = which("dupsession")
        self.bins["relayd"] = which("relayd")
        self.bins["mosh-client"] = which("mosh-client")
        which("mosh-server")
        self.tmp = Path(tempfile.mkdtemp(prefix="dupsession-labbench-"))
        self.tmp.chmod(0o755)
        self.logs = Path(args.logs) if args.logs else self.tmp
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            os.environ,
            XDG_CONFIG_HOME=str(self.tmp / "config"),
            XDG_RUNTIME_DIR=str(self.tmp / "run"),
            DUPSESSION_RUNTIME_DIR=str(self.tmp / "control"),
        )
        (self.tmp / "run").mkdir(mode=0o700)
        self.lab = Lab(SCENARIO)
        self.servers: list[subprocess.Popen[bytes]] = []
        self.methods: list[Method] = []
        self.mosh_server_pid: int | None = None
        self.mptcp_checks: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.dup_snapshot: dict[str, Any] | None = None
        self.cpu_busy = self.cpu_before = float("nan")
        self.mptcp_lines: list[str] = []
        self.cpu_shares: dict[str, float] = {}
        self.relayds: dict[str, subprocess.Popen[bytes]] = {}
        self.spies: list[subprocess.Popen[bytes]] = []
        self.cpu_processes_own = float("nan")
        self.cc = "?"

    # -- servers ---------------------------------------------------------------------------

    def _log(self, name: str) -> Any:
        return (self.logs / f"{name}.log").open("ab")

    def _serve(self, node: str, name: str, argv: list[str], **kw: Any) -> None:
        with self._log(name) as log:
            proc = self.lab.popen(
                node, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, **kw
            )
        self.servers.append(proc)
        if name.startswith("relayd-"):
            self.relayds[name.removeprefix("relayd-")] = proc

    def _wait_listening(self, node: str, port: int, udp: bool = False) -> None:
        flag = "-Hlun" if udp else "-Hltn"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = self.lab.run(node, ["ss", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {node}:{port}; logs in {self.logs}")

    def _sshd_config(self, port: int) -> Path:
        config = self.tmp / f"sshd_{port}.conf"
        pid_file = self.tmp / f"sshd_{port}.pid"
        config.write_text(sshd_config_text(self.tmp, port, listen="0.0.0.0", pid_file=pid_file))
        return config

    def start(self) -> None:
        lab = self.lab
        before = cpu_times()
        time.sleep(2.0)
        busy, total = (b - a for a, b in zip(before, cpu_times(), strict=True))
        self.cpu_before = busy / max(total, 1e-9)
        if self.cpu_before > 0.2:
            print(f"warning: the machine was {self.cpu_before:.0%} busy before the lab started; "
                  "figures from a busy machine overstate latency", flush=True)  # fmt: skip
        lab.up()
        for name in ("host_ed25519", "user_ed25519"):
            keygen = [self.bins["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f"]
            subprocess.run([*keygen, str(self.tmp / name)], check=True, stdin=subprocess.DEVNULL)
        shutil.copyfile(self.tmp / "user_ed25519.pub", self.tmp / "authorized_keys")
        host_key = " ".join((self.tmp / "host_ed25519.pub").read_text().split()[:2])
        (self.tmp / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {host_key}\n")
        self.key = self.tmp / "key"
        subprocess.run([self.bins["dupsession"], "keygen", str(self.key)], check=True,
                       env=self.env, stderr=subprocess.DEVNULL)  # fmt: skip
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        server = lab.addr("server")
        sshd = self.bins["sshd"]
        self._serve("server", "sshd", [sshd, "-D", "-e", "-f", str(self._sshd_config(SSH_PORT))])
        mptcp_sshd = [self.bins["mptcpize"], "run", sshd, "-D", "-e", "-f"]
        self._serve("server", "sshd-mptcp", [*mptcp_sshd, str(self._sshd_config(MPTCP_SSH_PORT))])
        self._serve("server", "relayd-serve", [
            self.bins["relayd"], "serve", "--listen", f"0.0.0.0:{EXIT_PORT}", "--key",
            str(self.key), "--allow", f"127.0.0.1:{SSH_PORT}", "--control", "none",
            "--log-level", "warning",
        ])  # fmt: skip
        for relay in lab.scenario.relays:
            self._serve(relay, f"relayd-relay-{relay}", [
                self.bins["relayd"], "relay", "--listen", f"0.0.0.0:{RELAY_PORT}", "--exit",
                f"{server}:{EXIT_PORT}", "--key", str(self.key), "--log-level", "warning",
            ])  # fmt: skip
            self._serve(relay, f"socat-{relay}", [
                self.bins["socat"], f"TCP-LISTEN:{FORWARD_PORT},fork,reuseaddr,nodelay",
                f"TCP:{server}:{SSH_PORT},nodelay",
            ])  # fmt: skip
        # MPTCP: a subflow endpoint on the second uplink (the first one carries the initial
        # subflow), and room for the subflows on both ends.
        for node in ("client", "server"):
            lab.run(node, ["ip", "mptcp", "limits", "set", "subflow", "2",
                           "add_addr_accepted", "2"])  # fmt: skip
        for uplink in lab.scenario.uplinks[1:]:
            lab.run("client", ["ip", "mptcp", "endpoint", "add", lab.addr("client", uplink),
                               "dev", uplink, "subflow"])  # fmt: skip
        self.cc = lab.run("client", ["sysctl", "-n", "net.ipv4.tcp_congestion_control"]).stdout
        self.cc = self.cc.strip()
        for port in (SSH_PORT, MPTCP_SSH_PORT, EXIT_PORT):
            self._wait_listening("server", port)
        self._wait_listening("server", EXIT_PORT, udp=True)
        for relay in lab.scenario.relays:
            self._wait_listening(relay, FORWARD_PORT)
            self._wait_listening(relay, RELAY_PORT, udp=True)
        self._write_client_config()

    def _write_client_config(self) -> None:
        lab = self.lab
        uplinks = ", ".join(f'"{lab.addr("client", u)}"' for u in lab.scenario.uplinks)
        lines = [
            f'key = "{self.key}"',
            f"uplinks = [{uplinks}]",
            'exit = "lab"',
            "",
            "[exits.lab]",
            f'address = "{lab.addr("server")}:{EXIT_PORT}"',
            'transports = ["udp", "tcp"]',
        ]
        for relay in lab.scenario.relays:
            lines += ["", f"[relays.{relay}]", f'url = "udp://{lab.addr(relay)}:{RELAY_PORT}"']
        self.client_config = self.tmp / "dupsession.toml"
        self.client_config.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        self.mptcp_lines = self.mptcp_report()
        for spy in self.spies:
            try:
                spy.wait(10)
            except subprocess.TimeoutExpired:
                stop_tree(spy.pid)
                spy.wait()
        for method in self.methods:
            if method.proc is not None:
                with contextlib.suppress(OSError):
                    os.close(method.wfd)
                stop_tree(method.proc.pid)
                method.proc.wait()
            with contextlib.suppress(OSError):
                os.close(method.rfd)
            if method.raw_log is not None:
                method.raw_log.close()
        if self.mosh_server_pid is not None and alive(self.mosh_server_pid):
            stop_tree(self.mosh_server_pid)
        for proc in reversed(self.servers):
            stop_tree(proc.pid)
            proc.wait()
        self.lab.down()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------------

    def ssh_argv(self, dest: str, port: int, options: list[str], remote: str | None) -> list[str]:
        argv = [
            self.ssh, "-F", "/dev/null", "-i", str(self.tmp / "user_ed25519"),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={self.tmp / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={HOST_KEY_ALIAS}", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=0", "-e", "none",
            *options, "-p", str(port), f"root@{dest}",
        ]  # fmt: skip
        if remote is not None:
            argv.append(remote)
        return argv

    @property
    def echo_command(self) -> str:
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__)))} --screen-echo"

    def _spawn_piped(self, method: Method, argv: list[str]) -> None:
        with self._log(f"client-{method.group}-{method.route}") as log:
            proc = self.lab.popen(
                "client", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=self.env,
            )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        method.proc = proc
        method.wfd = os.dup(proc.stdin.fileno())
        method.rfd = os.dup(proc.stdout.fileno())
        proc.stdin.close()
        proc.stdout.close()
        os.set_blocking(method.wfd, False)

    def start_methods(self, only: set[str] | None) -> None:
        lab = self.lab
        sc = lab.scenario
        server = lab.addr("server")
        wanted = only or {"ssh", "dupsession", "mosh", "mptcp"}
        if "mosh" in wanted:
            self.methods.append(self._start_mosh())
        if "ssh" in wanted:
            for uplink in sc.uplinks:
                for hop in (*sc.relays, "server"):
                    route = f"{uplink}-{hop}"
                    method = Method(f"ssh {route}", route, (route,), "ssh")
                    bind = ["-tt", "-b", lab.addr("client", uplink)]
                    dest, port = (server, SSH_PORT) if hop == "server" else (
                        lab.addr(hop), FORWARD_PORT)  # fmt: skip
                    self._spawn_piped(method, self.ssh_argv(dest, port, bind, self.echo_command))
                    self.methods.append(method)
        if "dupsession" in wanted:
            routes = tuple(f"{u}-{h}" for u in sc.uplinks for h in (*sc.relays, "server"))
            method = Method("dupsession", f"{len(sc.uplinks)} uplinks x 4 = 8 paths", routes,
                            "dupsession")  # fmt: skip
            proxy = f"{self.bins['dupsession']} --config {self.client_config} %h %p"
            options = ["-tt", "-o", f"ProxyCommand={proxy}"]
            argv = self.ssh_argv("127.0.0.1", SSH_PORT, options, self.echo_command)
            self._spawn_piped(method, argv)
            self.methods.append(method)
        if "mptcp" in wanted:
            routes = tuple(f"{u}-server" for u in sc.uplinks)
            method = Method("MPTCP ssh", f"{'+'.join(sc.uplinks)}-server", routes, "mptcp")
            argv = self.ssh_argv(server, MPTCP_SSH_PORT, ["-tt"], self.echo_command)
            self._spawn_piped(method, [self.bins["mptcpize"], "run", *argv])
            self.methods.append(method)
        for i, method in enumerate(self.methods):
            method.offset = KEY_INTERVAL * i / len(self.methods)
            if self.args.logs:
                method.raw_log = (self.logs / f"screen-{method.group}-{method.route}.raw").open(
                    "wb"
                )

    def _start_mosh(self) -> Method:
        """`mosh --predict=never` by hand: bootstrap over plain ssh, then mosh-client in a pty
        (the wrapper would hide mosh-server's PID, which this bench must stop)."""
        lab = self.lab
        uplink = lab.scenario.uplinks[0]
        route = f"{uplink}-server"
        method = Method("mosh --predict=never", f"{route} (UDP)", (route,), "mosh")
        remote = (
            "LC_ALL=C.UTF-8 LANG=C.UTF-8 mosh-server new -s -c 256 -l LANG=C.UTF-8 "
            f"-l LC_ALL=C.UTF-8 -- {self.echo_command}"
        )
        argv = self.ssh_argv(lab.addr("server"), SSH_PORT, ["-T"], remote)
        try:
            res = lab.run("client", argv, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            method.error = "mosh bootstrap over ssh timed out"
            return method
        found = re.search(r"MOSH CONNECT (\d+) (\S+)", res.stdout)
        pid = re.search(r"pid = (\d+)", res.stderr + res.stdout)
        if pid:
            self.mosh_server_pid = int(pid.group(1))
        if not found:
            method.error = f"mosh-server did not start: {(res.stderr + res.stdout).strip()[-300:]}"
            return method
        port, key = found.groups()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERM_ROWS, COLS, 0, 0))
        env = dict(self.env, MOSH_KEY=key, MOSH_PREDICTION_DISPLAY="never", LANG="C.UTF-8",
                   LC_ALL="C.UTF-8", TERM="xterm-256color", MOSH_NO_TERM_INIT="1")  # fmt: skip
        with self._log("client-mosh") as log:
            log.write(res.stderr.encode())
        method.proc = lab.popen(
            "client",
            [self.bins["mosh-client"], "-#", "lab_latency", lab.addr("server"), port],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        method.rfd = master
        method.wfd = os.dup(master)
        os.set_blocking(method.wfd, False)
        return method

    def mptcp_ss(self, label: str) -> None:
        """Record (in the background) the MPTCP ssh's TCP subflows as `ss` shows them."""
        out = (self.tmp / f"ss-{len(self.mptcp_checks)}.txt").open("w")
        argv = ["ss", "-Htni", "state", "established", f"dport = :{MPTCP_SSH_PORT}"]
        proc = self.lab.popen("client", argv, stdin=subprocess.DEVNULL, stdout=out)
        out.close()
        self.mptcp_checks.append((label, proc, Path(out.name)))

    def mptcp_report(self) -> list[str]:
        """One line per `mptcp_ss`: each subflow's uplink address, RTO and backoff."""
        lines = []
        for label, proc, path in self.mptcp_checks:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            lines.append(f"{label}: {describe_subflows(path.read_text())}")
        return lines

    def start_py_spy(self, seconds: float) -> None:
        """Sample dupsession's Python processes (raw folded stacks) for `seconds`."""
        out = Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)
        targets = {f"relayd-{label}": proc.pid for label, proc in self.relayds.items()}
        for method in self.methods:
            if method.group == "dupsession" and method.proc is not None:
                for pid in descendants(method.proc.pid):
                    if process_label(pid) == "dupsession":
                        targets["dupsession-client"] = pid
        for name, pid in targets.items():
            argv = ["py-spy", "record", "--pid", str(pid), "--duration", f"{seconds:.0f}",
                    "--rate", "250", "--nonblocking", "--format", "raw",
                    "--output", str(out / f"{name}.txt")]  # fmt: skip
            self.spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))  # fmt: skip

    def cpu_processes(
        self,
        before: dict[int, tuple[str, float]],
        after: dict[int, tuple[str, float]],
        seconds: float,
    ) -> None:
        """Share of one core used by each kind of lab process between the two samples."""
        shares: dict[str, float] = {}
        for pid, (label, used) in after.items():
            used -= before.get(pid, (label, 0.0))[1]
            shares[label] = shares.get(label, 0.0) + used / seconds
        self.cpu_shares = dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def outage_targets(self) -> list[str]:
        """The best route (lowest configured RTT), then each uplink in turn."""
        sc = self.lab.scenario
        routes = [(u, h) for u in sc.uplinks for h in (*sc.relays, "server")]
        best = min(routes, key=lambda r: configured_rtt_ms(sc, *r))
        return [f"{best[0]}-{best[1]}", *sc.uplinks]

    def snapshot_dupsession(self) -> None:
        """The dupsession client's own view (its control socket): per-path RTT and firsts."""
        from dupsession import control

        for sock in sorted((self.tmp / "control").glob("client-*.sock")):
            with contextlib.suppress(control.ControlError):
                self.dup_snapshot = control.query(sock)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> tuple[float, float, list[Outage]]:
        """Type into every method at once; returns (steady start, steady end, outages)."""
        sel = selectors.DefaultSelector()
        for method in self.methods:
            if method.error is None:
                sel.register(method.rfd, selectors.EVENT_READ, method)

        def pump(timeout: float) -> None:
            for key, _ in sel.select(max(0.0, timeout)):
                method: Method = key.data
                now = time.monotonic()
                try:
                    data = os.read(key.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                    method.error = method.error or "its terminal closed"
                    continue
                method.output(data, now)

        deadline = time.monotonic() + START_TIMEOUT
        while any(m.ready_at is None and m.error is None for m in self.methods):
            if time.monotonic() > deadline:
                for m in self.methods:
                    if m.ready_at is None and m.error is None:
                        m.error = f"not ready within {START_TIMEOUT:.0f} s"
                        sel.unregister(m.rfd)
                break
            pump(0.1)
        mptcp = any(m.group == "mptcp" and m.ready_at for m in self.methods)
        if mptcp:
            self.mptcp_ss("connected")
        live = [m for m in self.methods if m.error is None]
        args = self.args
        t0 = time.monotonic() + 0.2
        steady = (t0 + WARMUP, t0 + WARMUP + args.seconds)
        outages = []
        start = steady[1] + IN_FLIGHT
        for target in self.outage_targets():
            outages.append(Outage(target, start, start + args.outage))
            start += args.outage + args.recovery
        t_end = outages[-1].end + args.recovery if outages else steady[1]
        actions = [(steady[1], "#steady-end", False)]
        for outage in outages:
            actions += [(outage.start, outage.target, True), (outage.end, outage.target, False)]
        actions.sort(key=lambda action: action[0])
        typed = dict.fromkeys((id(m) for m in live), 0)
        if self.args.py_spy:
            self.start_py_spy(min(args.seconds, 60.0))
        cpu0 = cpu_times()
        inodes = {Path(f"/run/netns/{ns}").stat().st_ino for ns in self.lab.created}
        procs0 = cpu_by_process(inodes)
        own0 = time.process_time()
        print(f"typing into {len(live)} methods for {t_end - t0:.0f} s ...", flush=True)
        while True:
            now = time.monotonic()
            while actions and actions[0][0] <= now:
                _, target, down = actions.pop(0)
                if target == "#steady-end":
                    busy, total = (b - a for a, b in zip(cpu0, cpu_times(), strict=True))
                    self.cpu_busy = busy / max(total, 1e-9)
                    self.cpu_processes(procs0, cpu_by_process(inodes), now - t0)
                    self.cpu_processes_own = (time.process_time() - own0) / (now - t0)
                    self.snapshot_dupsession()
                    continue
                if mptcp and down:
                    self.mptcp_ss(f"before {target} down")
                self.lab.set_link(target, down=down)
                print(f"  t={now - t0:6.1f} s  {target} {'down' if down else 'up'}", flush=True)
            next_key = t_end
            for m in live:
                due = t0 + m.offset + typed[id(m)] * KEY_INTERVAL
                if due <= now and due < t_end:
                    m.type_key(time.monotonic())
                    typed[id(m)] += 1
                    due += KEY_INTERVAL
                next_key = min(next_key, due)
            if now >= t_end:
                break
            wake = min(next_key, actions[0][0] if actions else t_end)
            pump(wake - time.monotonic())
        end = time.monotonic() + 2.0  # last echoes
        while time.monotonic() < end:
            pump(end - time.monotonic())
        return steady[0], steady[1], outages


# --- figures ----------------------------------------------------------------------------------


def configured_rtt_ms(scenario: Any, uplink: str, hop: str) -> float:
    """Sum of the scenario's delays, out and back, from the client through `hop` to the server."""
    stages = [uplink, f"{uplink}-{hop}", hop]
    if hop != "server":
        stages += [hop, f"{hop}-server", "server"]
    return sum(
        float(scenario.stages.get(stage, {}).get(direction, {}).get("delay_ms", 0.0))
        for stage in stages
        for direction in ("out", "back")
    )


@dataclass
class Row:
    method: Method
    samples: list[float]  #: ms
    lost: int
    failover: list[tuple[str, float | None]]  #: (target, longest wait in ms or None = dead)
    #: per outage: (target, [(typed at, s after the outage began; echo wait in ms or None)])
    failover_samples: list[tuple[str, list[tuple[float, float | None]]]] = field(
        default_factory=list
    )

    def p(self, q: float) -> float:
        return pct(self.samples, q) if self.samples else float("nan")

    def failover_text(self) -> str:
        if not self.failover:
            return "-"
        return ", ".join(
            f"{uplink} {'dead' if gap is None else f'{gap:.0f}'}" for uplink, gap in self.failover
        )


def figures(methods: list[Method], steady: tuple[float, float], outages: list[Outage]) -> list[Row]:
    rows = []
    for m in methods:
        if m.error is not None and not m.sent:
            continue
        lat = m.latencies(steady[0], steady[1] - 1.0)
        samples = [x * 1e3 for x in lat if x is not None]
        failover: list[tuple[str, float | None]] = []
        traces: list[tuple[str, list[tuple[float, float | None]]]] = []
        for outage in outages:
            if not outage.hits(m):
                continue
            waits = []
            recovered = False
            trace: list[tuple[float, float | None]] = []
            for sent, echo in zip(m.sent, m.echoed, strict=True):
                if outage.start - IN_FLIGHT <= sent < outage.end:
                    end = echo if echo is not None else m.sent[-1]
                    waits.append(end - sent)
                    wait_ms = None if echo is None else round((echo - sent) * 1e3, 1)
                    trace.append((round(sent - outage.start, 3), wait_ms))
                    if outage.start <= sent < outage.end - 1.0 and echo and echo < outage.end:
                        recovered = True
            failover.append((outage.target, max(waits) * 1e3 if recovered and waits else None))
            traces.append((outage.target, trace))
        rows.append(Row(m, samples, sum(x is None for x in lat), failover, traces))
    return rows


def print_dupsession_paths(document: dict[str, Any] | None) -> None:
    """Which of dupsession's paths delivered each direction's first copy (steady state)."""
    if not document or not document.get("sessions"):
        return
    session = document["sessions"][0]
    paths = session["paths"]
    frames_in = sum(p["inbound"]["first"] for p in paths) or 1
    frames_out = sum(p["outbound"]["first"] for p in paths) or 1
    resent, duplicates = session.get("retransmissions"), session.get("duplicates")
    print(f"  dupsession client's view at the end of the steady state (retransmissions "
          f"{resent}, duplicates {duplicates}):")  # fmt: skip
    print(f"    {'path':<44} {'min RTT':>7} {'srtt':>6} {'first out':>9} {'first back':>10}")
    for p in paths:
        rtt_min = f"{p['rtt_min'] * 1e3:7.1f}" if p.get("rtt_min") is not None else "      -"
        srtt = f"{p['rtt'] * 1e3:6.1f}" if p.get("rtt") is not None else "     -"
        print(f"    {p.get('spec', p['id']):<44} {rtt_min} {srtt}"
              f" {p['outbound']['first'] / frames_out:9.1%}"
              f" {p['inbound']['first'] / frames_in:10.1%}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s steady state, 6 s outages")
    parser.add_argument("--seconds", type=float, help="steady-state typing time (default 150)")
    parser.add_argument("--outage", type=float, help="seconds each uplink is down (default 15)")
    parser.add_argument("--recovery", type=float, help="seconds between outages (default 15)")
    parser.add_argument(
        "--only", help="comma-separated subset of: ssh, dupsession, mosh, mptcp (default: all)"
    )
    parser.add_argument("--logs", metavar="DIR", help="keep server logs and raw terminal output")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record dupsession's client, relays and exit with py-spy during the steady state",
    )
    parser.add_argument("--screen-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.screen_echo:
        screen_echo()
        return 0
    if os.geteuid() != 0:
        print("lab_latency: needs root (network namespaces)", file=sys.stderr)
        return 2
    args.seconds = args.seconds or (20.0 if args.quick else 150.0)
    args.outage = args.outage or (6.0 if args.quick else 15.0)
    args.recovery = args.recovery or (6.0 if args.quick else 15.0)
    only = set(args.only.split(",")) if args.only else None

    bench = Bench(args)
    print(f"lab latency benchmark: {os.cpu_count()} CPUs, scenario {SCENARIO}, one keystroke "
          f"every {KEY_INTERVAL * 1e3:.0f} ms, {args.seconds:.0f} s steady state, then 3 outages "
          f"of {args.outage:.0f} s")  # fmt: skip
    t_start = time.monotonic()
    try:
        bench.start()
        bench.start_methods(only)
        steady_start, steady_end, outages = bench.run()
    finally:
        bench.stop()
    rows = figures(bench.methods, (steady_start, steady_end), outages)
    report(bench, rows, args, time.monotonic() - t_start)
    return 0


def report(bench: Bench, rows: list[Row], args: argparse.Namespace, elapsed: float) -> None:
    sc = bench.lab.scenario
    print(f"\nkeystroke echo latency (ms), steady state; failover = longest echo wait (ms) when "
          f"a route it uses dies ({args.outage:.0f} s outages)")  # fmt: skip
    header = (f"{'method':<22} {'route':<28} {'echoes':>6} {'lost':>4} {'p50':>6} {'p90':>6}"
              f" {'p99':>6} {'max':>6}  failover")  # fmt: skip
    print(header)
    for row in rows:
        m = row.method
        print(f"{m.name:<22} {m.route:<28} {len(row.samples):>6} {row.lost:>4}"
              f" {row.p(50):6.1f} {row.p(90):6.1f} {row.p(99):6.1f}"
              f" {max(row.samples, default=float('nan')):6.1f}  {row.failover_text()}")  # fmt: skip
    for m in bench.methods:
        if m.error is not None:
            print(f"  note: {m.name}: {m.error}")
    print(f"  TCP congestion control: {bench.cc}; machine CPU busy while typing (to the end of "
          f"the steady state): {bench.cpu_busy:.0%} of {os.cpu_count()} cores "
          f"({bench.cpu_before:.0%} in the 2 s before the lab started)")  # fmt: skip
    if bench.cpu_shares:
        shares = [f"{name} {share:.0%}" for name, share in bench.cpu_shares.items()]
        shares.append(f"this bench's driver {bench.cpu_processes_own:.0%}")
        print("  CPU by lab process (share of one core, since typing began): "
              + ", ".join(s for s in shares if not s.endswith(" 0%")))  # fmt: skip
    for line in bench.mptcp_lines:
        print(f"  MPTCP {line}")
    print_dupsession_paths(bench.dup_snapshot)
    routes = {r.method.route: r for r in rows if r.method.group == "ssh" and r.samples}
    configured = {
        f"{u}-{h}": configured_rtt_ms(sc, u, h) for u in sc.uplinks for h in (*sc.relays, "server")
    }
    verdicts: list[tuple[str, bool]] = []
    dup = next((r for r in rows if r.method.group == "dupsession" and r.samples), None)
    if routes:
        best_route, best = min(routes.items(), key=lambda kv: kv[1].p(50))
        base = best.p(50)
        print(f"  best route: {best_route}, loss-free echo RTT (plain ssh p50) {base:.1f} ms; "
              f"configured RTT {configured.get(best_route, float('nan')):.0f} ms; configured "
              f"RTTs: " + ", ".join(f"{k} {v:.0f}" for k, v in configured.items()))  # fmt: skip
        if dup is not None:
            limit = base * TARGET_DUP_P99_RATIO
            network = configured.get(best_route, float("nan"))
            verdicts.append((f"dupsession p99 {dup.p(99):.1f} ms <= {limit:.1f} ms: "
                             f"{dup.p(99) / base:.2f}x the best route's loss-free RTT {base:.1f} "
                             f"ms ({dup.p(99) / network:.2f}x its configured {network:.0f} ms)",
                             dup.p(99) <= limit))  # fmt: skip
        worst_ratio = min(r.p(99) / base for r in routes.values())
        verdicts.append((f"plain ssh p99 on every route >= {TARGET_SSH_P99_RATIO:g}x the best "
                         f"loss-free RTT (lowest: {worst_ratio:.1f}x)",
                         worst_ratio >= TARGET_SSH_P99_RATIO))  # fmt: skip
    if dup is not None:
        for group, label in (("mosh", "mosh"), ("mptcp", "MPTCP")):
            other = next((r for r in rows if r.method.group == group and r.samples), None)
            if other is not None:
                verdicts.append((f"dupsession p99 {dup.p(99):.1f} ms < {label} p99 "
                                 f"{other.p(99):.1f} ms", dup.p(99) < other.p(99)))  # fmt: skip
    print("\ntargets")
    for text, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"\n(run took {elapsed:.0f} s)")
    if args.json:
        doc = {
            "scenario": SCENARIO,
            "seconds": args.seconds,
            "outage": args.outage,
            "mptcp": bench.mptcp_lines,
            "cpu_busy": bench.cpu_busy,
            "cpu_busy_before": bench.cpu_before,
            "cpu_by_process": bench.cpu_shares,
            "methods": [
                {
                    "name": r.method.name,
                    "route": r.method.route,
                    "echoes": len(r.samples),
                    "lost": r.lost,
                    "p50": r.p(50),
                    "p90": r.p(90),
                    "p99": r.p(99),
                    "max": max(r.samples, default=None),
                    "mean": statistics.fmean(r.samples) if r.samples else None,
                    "failover": r.failover,
                    "samples": [round(x, 2) for x in r.samples],
                    "failover_samples": r.failover_samples,
                    "error": r.method.error,
                }
                for r in rows
            ],
            "verdicts": [{"target": t, "pass": ok} for t, ok in verdicts],
            "dupsession_client": bench.dup_snapshot,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
