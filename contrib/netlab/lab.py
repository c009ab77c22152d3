"""Build a scenario out of network namespaces, run the emulator in the middle, tear it down.

Why namespaces + a TUN emulator: real sockets, real routing (policy routing per uplink, so
binding to an uplink's address or device picks that uplink), real OpenSSH, yet every packet
between nodes crosses one userspace process that impairs it per route and per direction.

Everything created carries a random run id (`dsl-<6 hex>-<node>`), is recorded in a state
JSON before it is made, and is removed by exactly those names and PIDs, so labs of parallel
runs never touch each other and a crashed run can still be cleaned with `netlab down STATE`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contrib.netlab import probe as _probe
from contrib.netlab.scenario import Scenario, load_scenario
from dupsession.testing.lifecycle import Running
from dupsession.testing.link import LinkSettings

__all__ = ["EMULATOR_PATH", "PROBE_PATH", "Lab", "LabError", "control_request"]

EMULATOR_PATH = Path(__file__).with_name("emulator.py")
PROBE_PATH = Path(_probe.__file__)
STATE_VERSION = 1
TUN = "tun0"
IMPAIR_TABLE = 100  # wan: forwarded packets go to the TUN through this table
UPLINK_TABLE_BASE = 100  # client: table 100 + i routes out of uplink i
START_TIMEOUT = 10.0  # seconds for the emulator to answer its control socket
STOP_TIMEOUT = 3.0  # seconds between asking a process to stop and SIGKILL
_RUN_ID = re.compile(r"^[0-9a-f]{6,12}$")

Command = Sequence[str] | str


class LabError(RuntimeError):
    """Building, driving or tearing down the lab failed; the message has the command's stderr."""


def _ip(*args: str) -> str:
    try:
        res = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise LabError("`ip` not found: install iproute2") from None
    if res.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def list_netns() -> set[str]:
    """Names of all network namespaces `ip netns` knows."""
    return {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}


def control_request(
    path: str | Path, request: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """Send one JSON request to an emulator's control socket; raise LabError if not ok."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    if not reply.get("ok"):
        raise LabError(f"emulator refused {request.get('cmd')}: {reply.get('error')}")
    return reply


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`: for processes that are not our children."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_child(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Lab(Running):
    """A running scenario. Use as a context manager; cleanup happens even on exceptions.

    >>> with Lab("two-uplinks-two-relays") as lab:
    ...     lab.run("client", ["ip", "-br", "addr"])
    ...     lab.set_link("up1", down=True)
    """

    def __init__(
        self,
        scenario: Scenario | dict[str, Any] | str | Path,
        *,
        run_id: str | None = None,
        state_path: str | Path | None = None,
        python: str = sys.executable,
        emulator_sched: str = "rt",
    ) -> None:
        self.scenario = load_scenario(scenario)
        self.run_id = run_id or secrets.token_hex(3)
        if not _RUN_ID.match(self.run_id):
            raise LabError(f"run id must be 6-12 lowercase hex digits, not {self.run_id!r}")
        self.prefix = f"dsl-{self.run_id}"
        self.namespaces = {node: f"{self.prefix}-{node}" for node in self.scenario.nodes}
        self.python = python
        self.emulator_sched = emulator_sched
        self.workdir: Path | None = None
        self.state_path: Path | None = Path(state_path) if state_path else None
        self.created: list[str] = []  # namespaces that exist because of us, in creation order
        self.emulator_pid: int | None = None
        self.t0: float | None = None
        self._emulator: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[Any]] = []

    # -- names and addresses ---------------------------------------------------------------

    def ns(self, node: str) -> str:
        """The namespace name of `node` ("client", "wan", a relay name, "server")."""
        try:
            return self.namespaces[node]
        except KeyError:
            raise KeyError(f"no node {node!r}; nodes: {list(self.namespaces)}") from None

    def addr(self, node: str, iface: str | None = None) -> str:
        """IPv4 address of `node` on `iface`.

        client: iface is an uplink name (default: the first uplink). wan: iface is a link name.
        relays and server have one interface, eth0.
        """
        if node == "client":
            return self.scenario.link(iface or self.scenario.uplinks[0]).node_addr
        if node == "wan":
            if iface is None:
                raise KeyError("wan has one address per link: pass iface=<link name>")
            return self.scenario.link(iface).wan_addr
        self.ns(node)
        if iface not in (None, "eth0"):
            raise KeyError(f"{node} has only eth0, not {iface!r}")
        return self.scenario.link(node).node_addr

    @property
    def control_path(self) -> Path:
        assert self.workdir is not None, "lab is not up"
        return self.workdir / "control.sock"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:  # `with Lab(...)`: up, and down however the body ends
        self.up()

    def close(self) -> None:
        self.down()

    def up(self) -> Lab:
        """Create namespaces, links and routes, start the emulator, write the state file."""
        if os.geteuid() != 0:
            raise LabError("netlab needs root (network namespaces, veth, TUN)")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        if self.state_path is None:
            self.state_path = self.workdir / "state.json"
        self.t0 = time.time()
        try:
            self.save_state()  # names are recorded before anything exists
            self._build()
            self._start_emulator()
            self.save_state()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        sc = self.scenario
        for node in sc.nodes:
            _ip("netns", "add", self.ns(node))
            self.created.append(self.ns(node))
            self.save_state()
        for node in sc.nodes:
            sysctls = {
                "net/ipv4/conf/all/rp_filter": 0,
                "net/ipv4/conf/default/rp_filter": 0,
                "net/ipv6/conf/all/disable_ipv6": 1,
                "net/ipv6/conf/default/disable_ipv6": 1,
            }
            if node == "wan":
                sysctls |= {
                    "net/ipv4/ip_forward": 1,
                    "net/ipv4/conf/all/send_redirects": 0,
                    "net/ipv4/conf/default/send_redirects": 0,
                }
            script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in sysctls.items())
            self._exec_checked(node, ["sh", "-ec", script])
            self._ip(node, "link set lo up")
        for link in sc.links:
            far = link.node
            peer = f"peer name {link.ifname} netns {self.ns(far)}"
            self._ip("wan", f"link add {link.name} type veth {peer}")
            self._ip("wan", f"addr add {link.wan_addr}/24 dev {link.name}")
            self._ip(far, f"addr add {link.node_addr}/24 dev {link.ifname}")
            self._ip("wan", f"link set {link.name} up")
            self._ip(far, f"link set {link.ifname} up")
        for i, name in enumerate(sc.uplinks, 1):
            gateway = sc.link(name).wan_addr
            table = UPLINK_TABLE_BASE + i
            # By source address: a socket bound to the uplink's address leaves by it.
            self._ip("client", f"route add default via {gateway} dev {name} table {table}")
            src = self.addr("client", name)
            self._ip("client", f"rule add from {src} lookup {table} priority {1000 + i}")
            # By device: one default per uplink in main, so SO_BINDTODEVICE finds a route.
            self._ip("client", f"route add default via {gateway} dev {name} metric {100 + i}")
        for link in sc.links:
            if link.kind != "uplink":
                self._ip(link.node, f"route add default via {link.wan_addr}")
        # A persistent TUN: if the emulator dies, traffic stops instead of bypassing it.
        self._ip("wan", f"tuntap add dev {TUN} mode tun")
        self._ip("wan", f"link set {TUN} txqueuelen 2000 up")
        self._ip("wan", f"route add default dev {TUN} table {IMPAIR_TABLE}")
        for link in sc.links:
            self._ip("wan", f"rule add iif {link.name} lookup {IMPAIR_TABLE} priority 100")

    def _ip(self, node: str, command: str) -> str:
        """`ip -n <node's namespace> COMMAND` (names never contain spaces)."""
        return _ip("-n", self.ns(node), *command.split())

    def _start_emulator(self) -> None:
        assert self.workdir is not None
        config_path = self.workdir / "emulator.json"
        config_path.write_text(json.dumps(self.scenario.emulator_config(self.t0)))
        log_path = self.workdir / "emulator.log"
        argv = ["ip", "netns", "exec", self.ns("wan"), self.python, str(EMULATOR_PATH)]
        argv += ["--config", str(config_path), "--tun", TUN, "--control", str(self.control_path)]
        argv += ["--sched", self.emulator_sched]
        with open(log_path, "ab") as log:
            # `ip netns exec` execs the command, so this PID is the emulator's own.
            self._emulator = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.emulator_pid = self._emulator.pid
        self.save_state()
        end = time.monotonic() + START_TIMEOUT
        while True:
            if self._emulator.poll() is not None:
                raise LabError(f"emulator exited at start: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                control_request(self.control_path, {"cmd": "ping"}, timeout=1.0)
                return
            if time.monotonic() > end:
                raise LabError(f"emulator did not answer within {START_TIMEOUT} s")
            time.sleep(0.02)

    def down(self) -> None:
        """Stop our processes by PID and delete exactly the namespaces we created.

        Safe to call twice and after a half-finished `up`. Every step is tried even when an
        earlier one fails; the first failure is raised at the end, and the state file then
        still lists what is left, so `netlab down STATE` can be run again.
        """
        errors: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(exc)

        for proc in self._procs:
            attempt(functools.partial(_stop_child, proc))
        self._procs.clear()
        attempt(self._stop_emulator)
        existing: set[str] = set()
        attempt(lambda: existing.update(list_netns()))
        for name in reversed(self.created):
            if name in existing:
                attempt(functools.partial(self._delete_netns, name))
        remaining = set(self.created)
        attempt(lambda: remaining.intersection_update(list_netns()))
        self.created = [name for name in self.created if name in remaining]
        if errors:
            attempt(self.save_state)
            raise LabError(f"teardown incomplete, left: {self.created}") from errors[0]
        if self.state_path is not None and self.state_path.parent != self.workdir:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _delete_netns(self, name: str) -> None:
        # Anything still running inside our namespace was started through this lab.
        for pid in _ip("netns", "pids", name).split():
            _stop_pid(int(pid))
        _ip("netns", "delete", name)

    def _stop_emulator(self) -> None:
        pid = self.emulator_pid
        if pid is None:
            return
        ours = self.workdir is not None and str(self.control_path) in _cmdline(pid)
        if self._emulator is None and not ours:
            self.emulator_pid = None  # the recorded PID is gone or reused: not ours any more
            return
        with contextlib.suppress(OSError, LabError, ValueError):
            control_request(self.control_path, {"cmd": "stop"}, timeout=1.0)
        if self._emulator is not None:
            try:
                self._emulator.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _stop_child(self._emulator)
            self._emulator = None
        else:
            end = time.monotonic() + STOP_TIMEOUT
            while _pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
            if _pid_alive(pid):
                _stop_pid(pid)
        self.emulator_pid = None

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What `netlab up` writes: enough for another process to drive or tear down the lab."""
        sc = self.scenario
        addresses: dict[str, dict[str, str]] = {"client": {}, "wan": {}}
        for link in sc.links:
            addresses.setdefault(link.node, {})[link.ifname] = link.node_addr
            addresses["wan"][link.name] = link.wan_addr
        return {
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "scenario_name": sc.name,
            "scenario": sc.raw,
            "t0": self.t0,
            "namespaces": self.namespaces,
            "created": self.created,
            "addresses": addresses,
            "links": [link.to_dict() for link in sc.links],
            "routes": sc.routes(),
            "workdir": str(self.workdir) if self.workdir else None,
            "emulator": {
                "pid": self.emulator_pid,
                "control": str(self.control_path) if self.workdir else None,
                "log": str(self.workdir / "emulator.log") if self.workdir else None,
                "tun": TUN,
            },
            "pids": [p.pid for p in self._procs if p.poll() is None],
        }

    def save_state(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        tmp.replace(self.state_path)

    @classmethod
    def attach(cls, state_path: str | Path) -> Lab:
        """A Lab for a state file written by `netlab up` (for set, exec, stats, down)."""
        state_path = Path(state_path)
        state = json.loads(state_path.read_text())
        if state.get("version") != STATE_VERSION:
            raise LabError(f"{state_path}: unknown state version {state.get('version')}")
        lab = cls(state["scenario"], run_id=state["run_id"], state_path=state_path)
        if lab.namespaces != state["namespaces"]:
            raise LabError(f"{state_path}: namespace names do not match its scenario")
        lab.created = list(state["created"])
        lab.workdir = Path(state["workdir"]) if state.get("workdir") else None
        lab.emulator_pid = state["emulator"]["pid"]
        lab.t0 = state.get("t0")
        return lab

    # -- driving ---------------------------------------------------------------------------

    def set_link(
        self,
        target: str,
        direction: str = "both",
        *,
        down: bool | None = None,
        loss: float | None = None,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        rate_kbit: float | None = None,
        settings: LinkSettings | None = None,
        **params: Any,
    ) -> list[str]:
        """Change a link or route (`up1`, `up1-relay1`, globs like `up1-*`) live.

        `direction` is "out" (away from the client), "back" or "both"; other keyword names are
        those of the scenario format (p_enter_bad, outages, reorder, ...). `settings` gives
        every setting in the testing vocabulary instead (`dupsession.testing.link`; keywords
        override it). Returns the names of the stages changed.
        """
        if settings is not None:
            params = {**settings.netlab_params(), **params}
        named = {
            "down": down,
            "loss": loss,
            "delay_ms": delay_ms,
            "jitter_ms": jitter_ms,
            "rate_kbit": rate_kbit,
        }
        params.update({k: v for k, v in named.items() if v is not None})
        reply = control_request(
            self.control_path, {"cmd": "set", "target": target, "dir": direction, "params": params}
        )
        return list(reply["changed"])

    def stats(self) -> dict[str, Any]:
        """Emulator counters and current settings per link and route."""
        reply = control_request(self.control_path, {"cmd": "stats"})
        reply.pop("ok", None)
        return reply

    def reset_counters(self) -> None:
        control_request(self.control_path, {"cmd": "reset"})

    def argv(self, node: str, cmd: Command) -> list[str]:
        """The argv that runs `cmd` (a list, or a string for `sh -c`) inside `node`."""
        cmd = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.ns(node), *cmd]

    def run(
        self,
        node: str,
        cmd: Command,
        *,
        check: bool = True,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run inside `node`; output captured as text unless told otherwise."""
        kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL if "input" not in kwargs else None)
        if kwargs["stdin"] is None:
            del kwargs["stdin"]
        return subprocess.run(self.argv(node, cmd), check=check, timeout=timeout, **kwargs)

    def popen(self, node: str, cmd: Command, **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen inside `node`; the lab stops it (by PID) on teardown."""
        proc = subprocess.Popen(self.argv(node, cmd), **kwargs)
        self._procs.append(proc)
        return proc

    def _exec_checked(self, node: str, cmd: list[str]) -> None:
        res = self.run(node, cmd, check=False, timeout=20)
        if res.returncode != 0:
            raise LabError(f"{' '.join(cmd)} in {node}: {res.stderr.strip()}")

    # -- measuring helpers -----------------------------------------------------------------

    def start_echo(self, node: str, port: int = 9000, duration: float = 120.0) -> Any:
        """A UDP echo server on `node`'s addresses, up when this returns, stopped at teardown."""
        proc = self.popen(
            node,
            [
                self.python,
                str(PROBE_PATH),
                "echo",
                "--port",
                str(port),
                "--duration",
                str(duration),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise LabError(f"echo server on {node} did not start: {line!r}")
        return proc

    def udp_probe(
        self,
        node: str,
        dst: str,
        *,
        port: int = 9000,
        uplink: str | None = None,
        dev: str | None = None,
        count: int = 20,
        interval: float = 0.01,
        wait: float = 1.0,
        size: int = 64,
    ) -> dict[str, Any]:
        """Probe a UDP echo at `dst` (a node name or an address) from `node`.

        `uplink` binds the source address of that uplink (client only); `dev` binds the
        socket to a device with SO_BINDTODEVICE. Returns sent, received, lost, rtt_ms.
        """
        to = self.addr(dst) if dst in self.namespaces else dst
        cmd = [
            self.python,
            str(PROBE_PATH),
            "udp",
            "--to",
            to,
            "--port",
            str(port),
            "--count",
            str(count),
            "--interval",
            str(interval),
            "--wait",
            str(wait),
            "--size",
            str(size),
        ]
        if uplink:
            cmd += ["--bind", self.addr(node, uplink)]
        if dev:
            cmd += ["--dev", dev]
        res = self.run(node, cmd, timeout=count * interval + wait + 30)
        result: dict[str, Any] = json.loads(res.stdout)
        return result

    def tcp_transfer(
        self,
        node: str,
        dst: str,
        nbytes: int,
        *,
        port: int = 5001,
        uplink: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, float]:
        """Send `nbytes` over one TCP connection from `node` to `dst` (a node name).

        Returns bytes, seconds (first to last byte at the receiver) and MB/s.
        """
        sink = self.popen(
            dst,
            [self.python, str(PROBE_PATH), "sink", "--bind", self.addr(dst), "--port", str(port),
             "--duration", str(timeout)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise LabError(f"TCP sink on {dst} did not start")
        cmd = [self.python, str(PROBE_PATH), "send", "--to", self.addr(dst), "--port", str(port)]
        cmd += ["--bytes", str(nbytes)]
        if uplink:
            cmd += ["--bind", self.addr(node, uplink)]
        self.run(node, cmd, timeout=timeout)
        report = json.loads(sink.stdout.readline())
        sink.wait(timeout)
        seconds = max(report["seconds"], 1e-9)
        return {
            "bytes": report["bytes"],
            "seconds": seconds,
            "mbps": report["bytes"] / seconds / 1e6,
        }
