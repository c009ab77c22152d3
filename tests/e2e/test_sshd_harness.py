"""The private sshd harness works: real ssh logs in directly, via ProxyCommand, via a shim."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from dupsession.testing.shim import Impairment, TcpShim
from tests.support.sshd import PrivateSshd, private_sshd, require_binary

pytestmark = pytest.mark.timeout(60)

SSH_TIMEOUT = 30  # seconds for one ssh command; ConnectTimeout alone does not bound a hang


def run_ssh(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=SSH_TIMEOUT, stdin=subprocess.DEVNULL
    )


def test_direct_ssh_runs_a_command(sshd: PrivateSshd) -> None:
    result = run_ssh(sshd.ssh_command("echo", "hello"))
    assert result.returncode == 0, f"{result.stderr}\n--- sshd log ---\n{sshd.log}"
    assert result.stdout == "hello\n"


def test_ssh_through_proxycommand(sshd: PrivateSshd) -> None:
    socat = require_binary("socat")
    argv = sshd.ssh_command("echo", "hello", proxy_command=f"{socat} - TCP:127.0.0.1:%p")
    result = run_ssh(argv)
    assert result.returncode == 0, f"{result.stderr}\n--- sshd log ---\n{sshd.log}"
    assert result.stdout == "hello\n"


def test_wrong_host_key_is_refused(sshd: PrivateSshd) -> None:
    # StrictHostKeyChecking really is on: another server's key does not verify.
    with private_sshd() as other:
        argv = other.ssh_command("true")
        argv[argv.index(f"UserKnownHostsFile={other.known_hosts}")] = (
            f"UserKnownHostsFile={sshd.known_hosts}"
        )
        result = run_ssh(argv)
    assert result.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr or "verification" in result.stderr


def test_stop_leaves_no_process() -> None:
    with private_sshd() as server:
        pid = server.process.pid
        assert run_ssh(server.ssh_command("true")).returncode == 0
    assert server.process.poll() is not None
    assert not server.dir.exists()
    try:
        with open(f"/proc/{pid}/stat") as stat:
            assert stat.read().split()[2] == "Z", f"sshd {pid} still running"
    except FileNotFoundError:
        pass


def test_ssh_through_tcp_shim_pays_the_delay(sshd: PrivateSshd) -> None:
    async def body() -> None:
        shim = TcpShim(
            (sshd.host, sshd.port), up=Impairment(delay=0.02), down=Impairment(delay=0.02)
        )
        async with shim:
            argv = sshd.ssh_command("echo", "hello", port=shim.port)
            start = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), SSH_TIMEOUT)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            elapsed = time.monotonic() - start
        assert proc.returncode == 0, err.decode()
        assert out == b"hello\n"
        # An ssh login is several round trips (banner, kex, auth, channel): >= 3 x 40 ms.
        assert elapsed >= 3 * 0.04
        assert shim.up_counters.bytes > 0 and shim.down_counters.bytes > 0

    asyncio.run(body())
