"""A whole dupsession deployment inside a netlab lab, for end-to-end tests.

Who runs where (every process started in its namespace, stopped by its own PID):

    client   real `ssh`, whose ProxyCommand is `dupsession --config CONFIG %h %p`
    relay1   `relayd relay` (UDP + TCP) forwarding to the exit
    relay2   `relayd relay`, and a stock `sshd` used as an SSH relay (direct-tcpip)
    server   `relayd serve` (the exit) and the target `sshd` on 127.0.0.1:22

Paths come from a dupsession config TOML (uplinks x (direct + relays)), so config path
generation is exercised end to end. Routes have their own asymmetric delays and independent
loss (`ROUTES`); `route_rtt` gives each path's RTT as the scenario configures it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from contrib.netlab import Lab
from dupsession import control
from tests.prereq import lab_problem, missing
from tests.support.processes import stop_process, wait_for
from tests.support.proxycmd import ProxyProbe
from tests.support.sshd import require_binary, ssh_keygen, sshd_config_text, strict_ssh_argv

SSH_PORT = 22
EXIT_PORT = 7300
RELAY_PORT = 7400
PLAIN_PORT = 2222  #: the server's sshd for plain ssh and MPTCP ssh (`start_plain_sshd`)
JUMP = "relay2"  #: the relay namespace that also runs a stock sshd (the SSH relay)
UPLINKS = ("up1", "up2")
RELAYS = ("relay1", "relay2")
GRACE = 120.0  #: seconds: the exit's and the client's grace period, covers every outage
PROBE_INTERVAL = 0.5  #: the client's probe interval (the default, written into the config)

#: (uplink, relay or "server") -> (out ms, back ms, loss per direction). Asymmetric on purpose:
#: the best way out (up1-relay1) is not the best way back for most routes.
ROUTES: dict[tuple[str, str], tuple[float, float, float]] = {
    ("up1", "relay1"): (10, 12, 0.02),
    ("up1", "relay2"): (25, 15, 0.03),
    ("up1", "server"): (20, 30, 0.04),
    ("up2", "relay1"): (30, 20, 0.05),
    ("up2", "relay2"): (18, 22, 0.03),
    ("up2", "server"): (35, 25, 0.02),
}
#: relay -> (out ms, back ms) of its clean leg to the server.
RELAY_LEGS: dict[str, tuple[float, float]] = {"relay1": (3, 3), "relay2": (4, 4)}

START_TIMEOUT = 15.0  #: seconds for a daemon to log that it listens
STOP_TIMEOUT = 5.0  #: seconds between SIGTERM and SIGKILL
#: Log lines that must never appear in a daemon's or the client's log.
UNCLEAN = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception in callback|never retrieved")


def scenario() -> dict[str, Any]:
    routes: dict[str, Any] = {}
    for (uplink, far), (out, back, loss) in ROUTES.items():
        routes[f"{uplink}-{far}"] = {
            "loss": loss,
            "out": {"delay_ms": out},
            "back": {"delay_ms": back},
        }
    for relay, (out, back) in RELAY_LEGS.items():
        routes[f"{relay}-server"] = {"out": {"delay_ms": out}, "back": {"delay_ms": back}}
    return {
        "name": "dupsession-e2e",
        "uplinks": list(UPLINKS),
        "relays": list(RELAYS),
        "seed": 3,
        "routes": routes,
    }


def rate_limited(
    routes: dict[str, tuple[float, float, float]], loss: float, seed: int, queue_ms: float = 60
) -> dict[str, Any]:
    """A scenario of routes `name -> (one-way delay ms, upload kbit/s, download kbit/s)`,
    each shaper queueing at most `queue_ms` (a sane router), `loss` each way; relay legs
    clean. For the policy tests and the aggregation bench."""
    out: dict[str, Any] = {}
    for name, (delay, up, down) in routes.items():
        out[name] = {
            "loss": loss,
            "out": {"delay_ms": delay, "rate_kbit": up, "queue_bytes": int(up * queue_ms / 8)},
            "back": {"delay_ms": delay, "rate_kbit": down, "queue_bytes": int(down * queue_ms / 8)},
        }
    for relay in RELAYS:
        out.setdefault(f"{relay}-server", {"out": {"delay_ms": 2}, "back": {"delay_ms": 2}})
    return {"name": "rate-limited", "uplinks": list(UPLINKS), "relays": list(RELAYS),
            "seed": seed, "routes": out}  # fmt: skip


#: uplink -> (out ms, back ms, up kbit/s, down kbit/s) of its direct route to the server:
#: issue 9's seed-like network (uplink 1 is the better one: shorter RTT, more capacity).
SEED_LIKE: dict[str, tuple[float, float, float, float]] = {
    "up1": (20, 35, 20_000, 50_000),
    "up2": (45, 30, 10_000, 30_000),
}


def seed_like(loss: float, seed: int, scale: float = 1.0, queue_ms: float = 200) -> dict[str, Any]:
    """Issue 9's seed-like scenario: each uplink's capacity (times `scale`) shaped on its
    link, so every path and connection on that uplink shares it, queueing at most `queue_ms`
    each way (a bloated router); its direct route to the server carries the one-way delays
    and `loss` per direction. Relay legs are clean (the scenario's paths are direct)."""
    links: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    for uplink, (out, back, up, down) in SEED_LIKE.items():
        links[uplink] = {
            "out": {"rate_kbit": up * scale, "queue_bytes": int(up * scale * queue_ms / 8)},
            "back": {"rate_kbit": down * scale, "queue_bytes": int(down * scale * queue_ms / 8)},
        }
        routes[f"{uplink}-server"] = {
            "loss": loss, "out": {"delay_ms": out}, "back": {"delay_ms": back},
        }  # fmt: skip
    return {"name": "seed-like", "uplinks": list(SEED_LIKE), "relays": list(RELAYS),
            "seed": seed, "links": links, "routes": routes}  # fmt: skip


def one_way(uplink: str, via: str) -> tuple[float, float]:
    """(out, back) delay in ms of the path from `uplink` via a relay (or "server": direct)."""
    out, back, _ = ROUTES[uplink, via]
    if via != "server":
        out += RELAY_LEGS[via][0]
        back += RELAY_LEGS[via][1]
    return out, back


def route_rtt(uplink: str, via: str) -> float:
    return sum(one_way(uplink, via))


def require_lab() -> None:
    """Skip (fail under CI=true) unless this machine can build a lab and run OpenSSH."""
    problem = lab_problem()
    if problem:
        missing(f"lab e2e: {problem}")
    for name in ("ssh", "sshd", "ssh-keygen", "dupsession", "relayd"):
        require_binary(name)


@dataclass
class Daemon:
    """A long-running process in one namespace, logging to a file."""

    name: str
    node: str
    argv: list[str]
    log_path: Path
    ready: str  #: regex that appears in the log once it serves
    proc: subprocess.Popen[bytes] | None = None
    tree: bool = False  #: stop its children too (sshd)

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, lab: Lab) -> Daemon:
        offset = len(self.log)
        with self.log_path.open("ab") as log:
            self.proc = lab.popen(
                self.node, self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not re.search(self.ready, self.log[offset:]):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.log[-3000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup, no goodbye frames."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, tree=self.tree)

    def unclean_lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if UNCLEAN.search(line)]


def sshd_daemon(root: Path, name: str, node: str, listen: str, user_pub: Path) -> Daemon:
    """A private sshd config in `root` (own host key, one authorized key) listening on `listen`.

    tests/support/sshd.py's config, on any address of a namespace (its port space is private).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "authorized_keys").write_text(user_pub.read_text())
    (root / "sshd_config").write_text(sshd_config_text(root, SSH_PORT, listen=listen))
    sshd = require_binary("sshd")
    argv = [sshd, "-D", "-e", "-f", str(root / "sshd_config")]
    return Daemon(name, node, argv, root / "sshd.log", r"Server listening on", tree=True)


@dataclass(frozen=True)
class Download:
    """One `ssh cat FILE` read to its end (`World.download`); times are monotonic."""

    digest: str  #: sha256 hex of what arrived
    received: int
    started: float  #: when ssh was started
    first: float  #: first byte
    last: float  #: last byte

    @property
    def seconds(self) -> float:
        """From starting ssh to the last byte (connection set-up included)."""
        return self.last - self.started


@dataclass
class World:
    """The lab plus every daemon; `ssh_popen` starts a real ssh session in the client."""

    lab: Lab
    dir: Path
    #: More `relayd serve` arguments for the exit (a bench's variant: --session-processes N).
    exit_args: tuple[str, ...] = ()
    key: Path = field(init=False)
    user_key: Path = field(init=False)
    known_hosts: Path = field(init=False)
    jump_known_hosts: Path = field(init=False)
    exit: Daemon = field(init=False)
    relays: dict[str, Daemon] = field(init=False, default_factory=dict)
    sshds: dict[str, Daemon] = field(init=False, default_factory=dict)
    proxies: list[ProxyProbe] = field(init=False, default_factory=list)
    sessions: list[subprocess.Popen[Any]] = field(init=False, default_factory=list)
    run_dir: Path | None = field(init=False, default=None)
    plain_known_hosts: Path | None = field(init=False, default=None)
    plain_port: int = field(init=False, default=PLAIN_PORT)

    def start(self) -> World:
        lab, d = self.lab, self.dir
        subprocess.run(
            [require_binary("dupsession"), "keygen", str(d / "psk")],
            check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.key = d / "psk"
        # Control sockets (`dupsession status`): a short path, unix socket names are limited.
        self.run_dir = Path(tempfile.mkdtemp(prefix="dsl-run-"))
        self.user_key = d / "user_ed25519"
        ssh_keygen(self.user_key, "root@dupsession-lab")
        user_pub = self.user_key.with_suffix(".pub")
        server_root, jump_root = d / "sshd-server", d / "sshd-jump"
        for root in (server_root, jump_root):
            root.mkdir()
        server_host = ssh_keygen(server_root / "host_ed25519", "lab-server")
        jump_host = ssh_keygen(jump_root / "host_ed25519", "lab-jump")
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"lab-server {server_host}\n")
        self.jump_known_hosts = d / "jump_known_hosts"
        self.jump_known_hosts.write_text(f"{lab.addr(JUMP)} {jump_host}\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd needs it
        self.sshds["server"] = sshd_daemon(
            server_root, "sshd@server", "server", "127.0.0.1", user_pub
        ).start(lab)
        self.sshds[JUMP] = sshd_daemon(
            jump_root, f"sshd@{JUMP}", JUMP, lab.addr(JUMP), user_pub
        ).start(lab)
        relayd = require_binary("relayd")
        self.exit = Daemon(
            "exit",
            "server",
            [relayd, "serve", "--listen", f"0.0.0.0:{EXIT_PORT}", "--key", str(self.key),
             "--allow", f"127.0.0.1:{SSH_PORT}", "--grace", str(GRACE),
             "--control", str(self.run_dir / "relayd.sock"), "--log-level", "info",
             *self.exit_args],
            d / "exit.log",
            r"listening on",
        ).start(lab)  # fmt: skip
        for relay in RELAYS:
            self.relays[relay] = Daemon(
                relay,
                relay,
                [relayd, "relay", "--listen", f"0.0.0.0:{RELAY_PORT}",
                 "--exit", f"{lab.addr('server')}:{EXIT_PORT}", "--key", str(self.key),
                 "--log-level", "info"],
                d / f"{relay}.log",
                r"relay listening on",
            ).start(lab)  # fmt: skip
        return self

    def close(self) -> None:
        """Stop every process by PID, sessions first; the lab's teardown does the rest."""
        for proc in self.sessions:
            stop_process(proc)
        for proxy in self.proxies:
            proxy.cleanup()
        exit_daemon = getattr(self, "exit", None)
        for daemon in [*self.relays.values(), exit_daemon, *self.sshds.values()]:
            if daemon is not None:
                daemon.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- client side ------------------------------------------------------------------------

    def write_config(
        self,
        uplinks: Iterable[str] | None = None,
        name: str = "client.toml",
        policy: str | None = None,
    ) -> Path:
        """A dupsession config: uplinks x (direct udp+tcp, relay1 udp+tcp, relay2 udp, SSH
        relay through relay2's sshd). Uplinks default to the uplinks' source addresses;
        `policy` None is the default policy."""
        lab = self.lab
        if uplinks is None:
            uplinks = [lab.addr("client", u) for u in UPLINKS]
        jump = (
            f"ssh://root@{lab.addr(JUMP)}:{SSH_PORT}?identity={self.user_key}"
            f"&known_hosts={self.jump_known_hosts}"
        )
        relay_url = {r: f"{lab.addr(r)}:{RELAY_PORT}" for r in RELAYS}
        policy_line = f'policy = "{policy}"\n' if policy is not None else ""
        text = f"""\
key = "{self.key}"
{policy_line}uplinks = [{", ".join(f'"{u}"' for u in uplinks)}]
exit = "lab"
grace_period = {GRACE}
probe_interval = {PROBE_INTERVAL}
connect_timeout = 20

[exits.lab]
address = "{lab.addr("server")}:{EXIT_PORT}"
transports = ["udp", "tcp"]

[relays.relay1]
url = "udp://{relay_url["relay1"]}"

[relays.relay1tcp]
url = "tcp://{relay_url["relay1"]}?via=relay1"

[relays.relay2]
url = "udp://{relay_url["relay2"]}"

[relays.jump]
url = "{jump}&via={JUMP}"
"""
        path = self.dir / name
        path.write_text(text)
        return path

    def write_paths_config(
        self,
        name: str,
        policy: str | None,
        routes: Iterable[str],
        tiers: dict[str, str] | None = None,
        transports: Iterable[str] = ("udp",),
    ) -> Path:
        """A config of explicit paths, one per route `UPLINK-server` or `UPLINK-RELAY` and
        transport, each bound to its uplink's address, with `policy` (None: the default) and
        any route's tier."""
        lab, tiers = self.lab, tiers or {}
        urls = []
        for route in routes:
            uplink, far = route.split("-")
            port = EXIT_PORT if far == "server" else RELAY_PORT
            for kind in transports:
                url = f"{kind}://{lab.addr(far)}:{port}?bind={lab.addr('client', uplink)}"
                url += f"&via={far}" + (f"&tier={tiers[route]}" if route in tiers else "")
                urls.append(url)
        quoted = ", ".join(f'"{u}"' for u in urls)
        policy_line = f'policy = "{policy}"\n' if policy is not None else ""
        path = self.dir / name
        path.write_text(
            f'key = "{self.key}"\n{policy_line}grace_period = {GRACE}\n'
            f"connect_timeout = 20\npaths = [{quoted}]\n"
        )
        return path

    def start_plain_sshd(self, port: int = PLAIN_PORT) -> None:
        """An sshd on the server's lab address started under `mptcpize run`, so that one
        daemon serves plain ssh and MPTCP ssh (`plain_ssh_argv`); MPTCP limits on both ends
        and a subflow endpoint on the client's second uplink: one subflow per uplink."""
        lab = self.lab
        root = self.dir / "sshd-plain"
        root.mkdir()
        ssh_keygen(root / "host_ed25519", "lab-server")
        daemon = sshd_daemon(
            root, "sshd-plain", "server", lab.addr("server"), self.user_key.with_suffix(".pub")
        )
        config = (root / "sshd_config").read_text().replace(f"Port {SSH_PORT}\n", f"Port {port}\n")
        (root / "sshd_config").write_text(config)
        daemon.argv = [require_binary("mptcpize"), "run", *daemon.argv]
        self.sshds["plain"] = daemon.start(lab)
        for node in ("client", "server"):
            lab.run(
                node, ["ip", "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"]
            )
        second = UPLINKS[1]
        lab.run(
            "client",
            ["ip", "mptcp", "endpoint", "add", lab.addr("client", second), "dev", second,
             "subflow"],
        )  # fmt: skip
        host = " ".join((root / "host_ed25519.pub").read_text().split()[:2])
        self.plain_known_hosts = self.dir / "plain_known_hosts"
        self.plain_known_hosts.write_text(f"[{lab.addr('server')}]:{port} {host}\n")
        self.plain_port = port

    def plain_ssh_argv(self, remote: str, uplink: str = "up1", mptcp: bool = False) -> list[str]:
        """Plain OpenSSH from `uplink`'s address to `start_plain_sshd`'s daemon, no
        dupsession; with `mptcp`, under `mptcpize run` (a subflow per uplink)."""
        lab = self.lab
        assert self.plain_known_hosts is not None, "start_plain_sshd() first"
        argv = [
            require_binary("ssh"), "-F", "/dev/null", "-i", str(self.user_key),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={self.plain_known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-b", lab.addr("client", uplink), "-p", str(self.plain_port),
            f"root@{lab.addr('server')}", remote,
        ]  # fmt: skip
        return [require_binary("mptcpize"), "run", *argv] if mptcp else argv

    def proxy(self, config: Path, name: str) -> ProxyProbe:
        proxy = ProxyProbe(self.dir, ["-v", "--config", str(config)], name)
        self.proxies.append(proxy)
        return proxy

    def ssh_argv(self, proxy: ProxyProbe, remote: str, tty: bool = False) -> list[str]:
        """`ssh` through `proxy` to the server's sshd; `tty`: with a pty (`-tt`)."""
        argv = strict_ssh_argv(
            identity=self.user_key,
            known_hosts=self.known_hosts,
            host_key_alias="lab-server",
            destination="root@127.0.0.1",
            port=SSH_PORT,
            proxy_command=proxy.command,
            extra_opts=["-tt"] if tty else (),
            connect_timeout=30,
        )
        return [*argv, remote]

    def ssh_popen(
        self, proxy: ProxyProbe, remote: str, tty: bool = False, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        env = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(self.run_dir)}
        proc = self.lab.popen("client", self.ssh_argv(proxy, remote, tty), env=env, **kwargs)
        self.sessions.append(proc)
        return proc

    def download(self, config: Path, source: Path, name: str, timeout: float = 60.0) -> Download:
        """`ssh cat SOURCE` through dupsession with `config`, read to its end (within
        `timeout` s); ssh and dupsession must both exit 0."""
        proxy = self.proxy(config, name)
        started = time.monotonic()
        proc = self.ssh_popen(
            proxy, f"cat {source}", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        drain.start()
        digest, received, first = hashlib.sha256(), 0, None
        while chunk := proc.stdout.read1(1 << 20):
            now = time.monotonic()
            first = first or now
            digest.update(chunk)
            received += len(chunk)
            assert now - started < timeout, f"too slow: {received} B in {timeout} s"
        last = time.monotonic()
        code = proc.wait(30)
        drain.join(10)
        assert code == 0, b"".join(errors).decode() + self.diagnostics(proxy)
        assert proxy.wait() == 0, self.diagnostics(proxy)
        return Download(digest.hexdigest(), received, started, first or last, last)

    def client_paths(self) -> list[dict[str, Any]]:
        """The live client session's paths, from its control socket (`dupsession status`):
        each with spec, uplink, via, state ("probing", "up", "down"), rtt, bytes_recv..."""
        sessions = [s for doc in control.discover("client", self.run_dir) for s in doc["sessions"]]
        assert len(sessions) == 1, sessions
        paths: list[dict[str, Any]] = sessions[0]["paths"]
        return paths

    def diagnostics(self, proxy: ProxyProbe | None = None, tail: int = 3000) -> str:
        parts = []
        if proxy is not None:
            parts.append(f"--- dupsession stderr ---\n{proxy.stderr[-tail:]}")
        parts.append(f"--- exit log ---\n{self.exit.log[-tail:]}")
        for name, relay in self.relays.items():
            parts.append(f"--- {name} log ---\n{relay.log[-tail // 3 :]}")
        return "\n".join(parts)

    def check_logs_clean(self) -> None:
        unclean = {d.name: d.unclean_lines() for d in [self.exit, *self.relays.values()]}
        unclean = {k: v for k, v in unclean.items() if v}
        assert not unclean, f"daemons logged errors: {unclean}"
        for proxy in self.proxies:
            bad = [line for line in proxy.stderr.splitlines() if UNCLEAN.search(line)]
            assert not bad, f"dupsession logged errors:\n{proxy.stderr[-4000:]}"

    # -- routes ------------------------------------------------------------------------------

    def set_routes(self, routes: Iterable[tuple[str, str]], down: bool) -> None:
        for uplink, via in routes:
            self.lab.set_link(f"{uplink}-{via}", down=down)


class EchoSession:
    """`ssh ... cat` with a writer sending a numbered line every `interval` and a reader
    stamping each echo: keystroke-like traffic whose every byte can be accounted for.
    Through dupsession (`proxy`), or plain ssh: `ssh_argv(remote)` (`World.plain_ssh_argv`)."""

    REMOTE = "echo READY; exec cat"
    TTY = False  #: run REMOTE with a pty (`ssh -tt`): REMOTE must then set it raw itself
    END = b""  #: sent before stdin closes: a pty passes no EOF, so REMOTE exits on this line

    def __init__(
        self,
        world: World,
        proxy: ProxyProbe | None,
        interval: float = 0.05,
        ssh_argv: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.world = world
        self.proxy = proxy
        self.interval = interval
        self.stderr_path = world.dir / f"{id(self):x}.ssh.stderr"
        pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "bufsize": 0}
        with self.stderr_path.open("wb") as err:
            if proxy is not None:
                self.proc = world.ssh_popen(proxy, self.REMOTE, self.TTY, stderr=err, **pipes)
            else:
                assert ssh_argv is not None, "EchoSession needs a proxy or an ssh_argv"
                self.proc = world.lab.popen("client", ssh_argv(self.REMOTE), stderr=err, **pipes)
                world.sessions.append(self.proc)
        self.sent: list[float] = []  #: monotonic send time of line i
        self.received: list[tuple[bytes, float]] = []  #: (line, monotonic arrival)
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.started = 0.0

    @property
    def ssh_stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def start(self, timeout: float = 30.0) -> EchoSession:
        assert self.proc.stdout is not None
        out: IO[bytes] = self.proc.stdout
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if box != [b"READY\n"]:
            raise AssertionError(
                f"ssh session did not start ({box!r}); ssh stderr:\n{self.ssh_stderr}\n"
                + self.world.diagnostics(self.proxy)
            )
        self.started = time.monotonic()
        self._reader.start()
        self._writer.start()
        return self

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        t0 = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            delay = t0 + seq * self.interval - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.sent.append(time.monotonic())
            try:
                stdin.write(b"%07d\n" % seq)
            except OSError:
                return
            seq += 1

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for line in stdout:
            self.received.append((line, time.monotonic()))

    def wait_echoes(self, count: int, timeout: float) -> None:
        wait_for(lambda: len(self.received) >= count, timeout, f"{count} echoes", step=0.005)

    def stop(self) -> None:
        """Stop writing (ssh's stdin stays open): several sessions can stop together."""
        self._stop.set()
        self._writer.join(5)

    def finish(self, timeout: float = 30.0) -> int:
        """Stop writing, end ssh's stdin, wait for every echo and for ssh to exit."""
        self.stop()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            if self.END:
                self.proc.stdin.write(self.END)
            self.proc.stdin.close()
        self._reader.join(timeout)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"ssh did not exit; stderr:\n{self.ssh_stderr}\n"
                + self.world.diagnostics(self.proxy)
            ) from None

    def check_stream(self) -> None:
        """Every line came back once, in order, intact: no byte lost or repeated."""
        got = [line for line, _ in self.received]
        want = [b"%07d\n" % i for i in range(len(self.sent))]
        if got != want:
            first = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None
            )
            raise AssertionError(
                f"echo stream differs: sent {len(want)} lines, got {len(got)}; first "
                f"difference at {first}: {got[first : first + 3] if first is not None else ''}\n"
                + self.world.diagnostics(self.proxy)
            )

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Echo time in ms of every line sent in [since, until) (monotonic)."""
        return [
            (arrived - self.sent[i]) * 1000
            for i, (_, arrived) in enumerate(self.received)
            if since <= self.sent[i] < until
        ]

    def arrivals_after(self, when: float) -> list[float]:
        return [arrived for _, arrived in self.received if arrived >= when]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
