"""A private OpenSSH server for end-to-end tests.

Why: dupsession exists to carry real `ssh` sessions, so the end-to-end tests run the real
client against a real `sshd` -- but never the machine's own. Everything here lives in one
temp dir (throwaway host and user keys, config, known_hosts, pid file, log), listens only on
127.0.0.1 at a free high port, and is stopped by its own PID. Nothing in /etc/ssh is read or
written (`sshd -f` and `ssh -F /dev/null`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.prereq import missing
from tests.support.processes import alive, descendants

__all__ = [
    "HOST_KEY_ALIAS",
    "PrivateSshd",
    "private_sshd",
    "require_binary",
    "sshd_config_text",
    "start_sshd",
]

# The name the host key is pinned under, so the same known_hosts verifies the server whether
# ssh reaches it directly, through a shim's port or through a ProxyCommand.
HOST_KEY_ALIAS = "dupsession-test"

SSHD_START_TIMEOUT = 10.0  # seconds for sshd to accept connections; it takes ~50 ms
SSHD_STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; it refuses to start without it

# Directives newer OpenSSH releases need for a test server but older ones reject.
# PerSourcePenalties (9.8+) would otherwise throttle 127.0.0.1 after a few failed sessions.
OPTIONAL_DIRECTIVES = ("PerSourcePenalties no",)
#: The session's shell skips root's ~/.bashrc. Debian's bash sources it for every command sshd
#: runs (SSH_CLIENT is set) unless SHLVL is already 1 or more; this machine's runs `pyenv
#: init`, whose rehash waits up to 60 s on a lock shared by every shell on the machine, so
#: `echo READY` came 30 s+ late when tests or benchmarks started shells at once (the lab's
#: "ssh session did not start" failures). A test's target must not depend on root's dotfiles.
SESSION_ENV = "SetEnv SHLVL=1"


def require_binary(name: str) -> str:
    """The absolute path of the program `name`, or skip the test (fail it when CI=true).

    Why fail under CI: a CI run that silently skips every end-to-end test would look green.
    sbin directories are searched too, since `sshd` is often not on a user's PATH.
    """
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is not None:
        return path
    reason = (
        f"{name!r} not found on PATH or in /usr/sbin: install it (Debian: apt-get install "
        "openssh-server openssh-client tmux socat, or run contrib/install-and-test.sh)"
    )
    missing(reason)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssh_keygen(path: Path, comment: str) -> str:
    """A new passphrase-less ed25519 key pair at `path`; returns the public key's
    "TYPE BASE64" (what a known_hosts line needs after the host name)."""
    subprocess.run(
        [require_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment,
         "-f", str(path)],
        check=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def strict_ssh_argv(
    *,
    identity: Path,
    known_hosts: Path,
    host_key_alias: str,
    destination: str,
    port: int,
    proxy_command: str | None = None,
    extra_opts: Sequence[str] = (),
    connect_timeout: int = 20,
) -> list[str]:
    """argv for `ssh` with nothing of the user's: no config, agent or known hosts; the host
    key checked strictly under `host_key_alias`; never a prompt. Append the remote command."""
    argv = [
        require_binary("ssh"),
        "-F", "/dev/null",
        "-i", str(identity),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", f"HostKeyAlias={host_key_alias}",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
    ]  # fmt: skip
    if proxy_command is not None:
        argv += ["-o", f"ProxyCommand={proxy_command}"]
    return [*argv, *extra_opts, "-p", str(port), destination]


@dataclass
class PrivateSshd:
    """A running private sshd and everything a client needs to log into it."""

    dir: Path
    """Temp dir holding keys, config, known_hosts, pid file and `sshd.log`."""
    port: int
    user: str
    user_key: Path
    """Private key whose public half is the only authorized key."""
    known_hosts: Path
    """Pins the host key for [127.0.0.1]:port and for `HOST_KEY_ALIAS`."""
    process: subprocess.Popen[bytes]
    ssh: str
    """Absolute path of the `ssh` client."""
    host: str = "127.0.0.1"

    @property
    def log(self) -> str:
        """sshd's log so far (LogLevel VERBOSE), for assertion messages."""
        return (self.dir / "sshd.log").read_text(errors="replace")

    def ssh_command(
        self,
        *remote_cmd: str,
        proxy_command: str | None = None,
        extra_opts: Sequence[str] = (),
        port: int | None = None,
    ) -> list[str]:
        """argv for `ssh` to this server, host key checked strictly, no agent or user config.

        `proxy_command` becomes `-o ProxyCommand=...` (ssh expands %h and %p in it).
        `extra_opts` go before the destination. `port` replaces the server's port, e.g. to
        connect through a TcpShim; the host key still verifies through `HOST_KEY_ALIAS`.
        """
        argv = strict_ssh_argv(
            identity=self.user_key,
            known_hosts=self.known_hosts,
            host_key_alias=HOST_KEY_ALIAS,
            destination=f"{self.user}@{self.host}",
            port=port or self.port,
            proxy_command=proxy_command,
            extra_opts=extra_opts,
        )
        return [*argv, *remote_cmd]

    def stop(self) -> None:
        """Stop sshd and its per-connection children, each by its own PID."""
        if self.process.poll() is not None:
            return
        # Per-connection children run in their own sessions (sshd calls setsid), so they
        # are found through /proc and stopped one by one -- first, while the listener is
        # still alive to reap them (an orphan zombie may never be reaped in a container).
        children = descendants(self.process.pid)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SSHD_STOP_TIMEOUT
        while any(alive(pid) for pid in children):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.process.terminate()
        try:
            self.process.wait(SSHD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(SSHD_STOP_TIMEOUT)


def sshd_config_text(
    root: Path,
    port: int,
    *,
    listen: str = "127.0.0.1",
    pid_file: Path | None = None,
    optional: Sequence[str] = (),
) -> str:
    """A private sshd's config: host key `root/host_ed25519`, the one authorized key in
    `root/authorized_keys`, public keys only, and `SESSION_ENV`.

    Why one definition: the tests, the lab (tests/lab/world.py) and the benchmarks
    (contrib/bench) all start their own sshds; a fix such as `SESSION_ENV` must reach each.
    """
    lines = [
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {root / 'host_ed25519'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {pid_file or root / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",  # CI runs as root
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the temp dir's modes are not sshd's business
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
        "AllowTcpForwarding yes",  # SSH relays use direct-tcpip channels
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "MaxStartups 100",  # tests open many connections at once
        SESSION_ENV,
        "MaxSessions 100",
        *optional,
    ]
    return "\n".join(lines) + "\n"


def _write_config(root: Path, port: int, optional: Sequence[str]) -> Path:
    config = root / "sshd_config"
    config.write_text(sshd_config_text(root, port, optional=optional))
    return config


def _check_config(sshd: str, root: Path, port: int) -> Path:
    """Write a config this sshd accepts, dropping optional directives it does not know."""
    optional = list(OPTIONAL_DIRECTIVES)
    while True:
        config = _write_config(root, port, optional)
        result = subprocess.run(
            [sshd, "-t", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode == 0:
            return config
        rejected = [d for d in optional if d.split()[0] in result.stderr]
        if not rejected:
            raise RuntimeError(f"sshd rejects its test config:\n{result.stderr}")
        optional = [d for d in optional if d not in rejected]


def _ensure_privsep_dir() -> None:
    if PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        PRIVSEP_DIR.chmod(0o755)  # mkdir's mode is filtered by the umask
    except PermissionError:
        pass  # not root: an unprivileged sshd can still serve its own user


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once the port accepts; False if sshd exited first (e.g. the port was taken)."""
    deadline = time.monotonic() + SSHD_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    raise TimeoutError(f"sshd did not listen on 127.0.0.1:{port} within {SSHD_START_TIMEOUT}s")


def start_sshd(attempts: int = 3) -> PrivateSshd:
    """Generate keys and config in a new temp dir and start sshd; call `.stop()` after.

    Prefer `private_sshd()` (or the `sshd` fixture), which also removes the temp dir.
    """
    sshd = require_binary("sshd")
    ssh = require_binary("ssh")
    _ensure_privsep_dir()
    root = Path(tempfile.mkdtemp(prefix="dupsession-sshd-"))
    user = getpass.getuser()
    host_key = ssh_keygen(root / "host_ed25519", "dupsession-test-host")
    ssh_keygen(root / "user_ed25519", f"{user}@dupsession-test")
    shutil.copyfile(root / "user_ed25519.pub", root / "authorized_keys")
    for _ in range(attempts):
        port = free_port()
        config = _check_config(sshd, root, port)
        (root / "known_hosts").write_text(
            f"[127.0.0.1]:{port} {host_key}\n{HOST_KEY_ALIAS} {host_key}\n"
        )
        with (root / "sshd.log").open("ab") as log:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        server = PrivateSshd(
            dir=root,
            port=port,
            user=user,
            user_key=root / "user_ed25519",
            known_hosts=root / "known_hosts",
            process=process,
            ssh=ssh,
        )
        try:
            if _wait_listening(process, port):
                return server
        except BaseException:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise
        server.stop()  # exited early: most likely the port was taken meanwhile; retry
    log_text = (root / "sshd.log").read_text(errors="replace")
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"sshd would not start after {attempts} attempts:\n{log_text}")


@contextlib.contextmanager
def private_sshd() -> Iterator[PrivateSshd]:
    """A private sshd for the duration of the block; stopped and its temp dir removed."""
    server = start_sshd()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
