"""The README's journey, followed literally: `dupsession init` on a fresh HOME, the printed
`relayd serve` line run as printed (but on loopback), the printed ssh_config block pasted
above a `Host *` section, then `ssh myserver` through the private sshd.

This is the test of the allow-list name trap: `Host myserver` with `--allow localhost:PORT`
works because the block's HostName is what ssh passes as %h, and HostKeyAlias keeps the
host key filed under "myserver".
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.relay import RELAY_START_TIMEOUT, Relay
from tests.support.sshd import HOST_KEY_ALIAS, PrivateSshd, free_port, require_binary

pytestmark = pytest.mark.timeout(90)

SSH_TIMEOUT = 40.0


def user_env(home: Path) -> dict[str, str]:
    """A login-like environment: HOME, and PATH with the installed console scripts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DUPSESSION_"))}
    bindir = str(Path(require_binary("dupsession")).parent)
    env.update(HOME=str(home), PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}")
    return env


def printed_blocks(stdout: str) -> tuple[str, str]:
    """(the relayd serve line, the ssh_config block) as `init` printed them."""
    relayd = next(line for line in stdout.splitlines() if line.startswith("relayd serve "))
    block = re.search(r"^Host myserver\n(?:    .*\n)+", stdout, re.M)
    assert block, stdout
    return relayd, block.group(0)


def start_printed_relayd(line: str, key: Path, workdir: Path, env: dict[str, str]) -> Relay:
    argv = shlex.split(line)
    # As printed, but on loopback (tests never listen on the machine's addresses) and with
    # the key where this test keeps the exit's copy.
    listen = argv.index("--listen") + 1
    port = int(argv[listen].rsplit(":", 1)[1])
    argv[listen] = argv[listen].replace("0.0.0.0", "127.0.0.1")
    argv[argv.index("--key") + 1] = str(key)
    log_path = workdir / "relayd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [require_binary("relayd"), *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
    relay = Relay(process, port, key, log_path, [argv[argv.index("--allow") + 1]])
    deadline = time.monotonic() + RELAY_START_TIMEOUT
    while "listening on" not in relay.log:
        assert process.poll() is None and time.monotonic() < deadline, relay.log
        time.sleep(0.02)
    return relay


def test_init_to_ssh_session(tmp_path: Path, sshd: PrivateSshd) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)
    exit_port = free_port()
    init = subprocess.run(
        [
            require_binary("dupsession"),
            "init",
            f"127.0.0.1:{exit_port}",
            "--host",
            "myserver",
            "--target",
            f"localhost:{sshd.port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert init.returncode == 0, init.stderr
    key = home / ".config" / "dupsession" / "key"
    assert key.stat().st_mode & 0o777 == 0o600
    relayd_line, block = printed_blocks(init.stdout)
    assert f"--allow localhost:{sshd.port}" in relayd_line
    assert "ProxyCommand dupsession -- %h %p" in block
    assert "HostName localhost" in block and "HostKeyAlias myserver" in block

    # The exit's own copy of the key, as `scp` would leave it.
    exit_key = tmp_path / "exit.key"
    exit_key.write_bytes(key.read_bytes())
    exit_key.chmod(0o600)
    relay = start_printed_relayd(relayd_line, exit_key, tmp_path, env)
    try:
        # known_hosts as a first `ssh myserver` would have filed it (under the alias).
        pinned = [
            line.split(None, 1)[1]
            for line in sshd.known_hosts.read_text().splitlines()
            if line.split(None, 1)[0] == HOST_KEY_ALIAS
        ]
        assert pinned
        known = tmp_path / "known_hosts"
        known.write_text("".join(f"myserver {k}\n" for k in pinned))
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(
            block + "\nHost *\n"
            f"    User {sshd.user}\n"
            f"    IdentityFile {sshd.user_key}\n"
            "    IdentitiesOnly yes\n"
            "    IdentityAgent none\n"
            f"    UserKnownHostsFile {known}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ServerAliveInterval 5\n"  # shorter, and ignored: the block above wins
        )
        described = subprocess.run(
            [require_binary("dupsession"), "config", "localhost", str(sshd.port)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert described.returncode == 0, described.stderr
        assert f"path default/direct/udp udp://127.0.0.1:{exit_port}" in described.stdout
        assert f"path default/direct/tcp tcp://127.0.0.1:{exit_port}" in described.stdout

        result = subprocess.run(
            [sshd.ssh, "-F", str(ssh_config), "myserver", "echo", "journey-ok"],
            capture_output=True,
            text=True,
            timeout=SSH_TIMEOUT,
            env={**env, "DUPSESSION_LOG": "info"},  # lifecycle lines, through ssh's stderr
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (result.stderr, relay.log)
        assert result.stdout == "journey-ok\n"
        log = result.stderr
        assert re.search(r"session [0-9a-f]{16} to localhost:\d+: exit answered on path", log), log
        assert "path 1 (default/direct/udp) open" in log, log
        assert "asyncssh" not in log, log
        assert f"localhost:{sshd.port}" in relay.log, relay.log
        effective = subprocess.run(
            [sshd.ssh, "-F", str(ssh_config), "-G", "myserver"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        ).stdout
        assert "serveraliveinterval 30" in effective
        assert "serveralivecountmax 21" in effective
    finally:
        relay.stop()
