"""Failures a user meets, each with its exit code and one clear line on stderr.

ExitCode (dupsession/client.py): 2 usage, 3 handshake/no answer, 4 refused by the exit's
allow-list, 5 target unreachable. Where it matters, dupsession runs as ssh's real
ProxyCommand (observed through `ProxyProbe`), so ssh's side of the failure is checked too.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dupsession.testing.shim import TcpShim, UdpShim
from tests.support.proxycmd import ProxyProbe, run_dupsession
from tests.support.relay import Relay, keygen
from tests.support.shims import ShimThread
from tests.support.sshd import PrivateSshd, free_port, require_binary

pytestmark = pytest.mark.timeout(60)

SSH_TIMEOUT = 30.0
CONNECT_TIMEOUT = 3.0  # --connect-timeout for the tests that wait for no answer
SLACK = 3.0  # seconds a failing dupsession may take beyond its connect timeout


def _one_line(stderr: str) -> str:
    """The whole of stderr, which must be exactly one line starting with 'dupsession: '."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("dupsession: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def _ssh_via(
    sshd: PrivateSshd, probe: ProxyProbe, port: int | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        sshd.ssh_command("echo", "unreachable", proxy_command=probe.command, port=port),
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - start


# ---------------------------------------------------------------------------- wrong key


@pytest.mark.parametrize("kinds", [("udp", "udp"), ("udp", "tcp")], ids=["udp-only", "udp+tcp"])
def test_wrong_key(
    kinds: tuple[str, ...],
    tmp_path: Path,
    sshd: PrivateSshd,
    relays: Callable[..., Relay],
    probes: Callable[..., ProxyProbe],
    shims: ShimThread,
) -> None:
    relay = relays(allow=[f"127.0.0.1:{sshd.port}"])
    wrong = keygen(tmp_path / "wrong.key")
    args = ["--key", str(wrong), "--connect-timeout", str(CONNECT_TIMEOUT)]
    # Each path through a (clean) shim, to count what the exit sends back: nothing.
    taps: list[UdpShim | TcpShim] = []
    for kind in kinds:
        make = shims.udp if kind == "udp" else shims.tcp
        taps.append(make((relay.host, relay.port)))
        args += ["--path", f"{kind}://127.0.0.1:{taps[-1].port}"]
    probe = probes(args)
    result, elapsed = _ssh_via(sshd, probe)

    assert result.returncode == 255, result
    assert "unreachable" not in result.stdout
    code = probe.wait()
    assert code == 3, probe.stderr
    line = _one_line(probe.stderr)
    assert "key" in line, line
    assert elapsed < CONNECT_TIMEOUT + SLACK, elapsed
    # relayd neither opened a session nor answered: not one byte came back on any path.
    assert relay.sessions_opened() == 0, relay.log
    assert "opened" not in relay.log and "connected to target" not in relay.log, relay.log
    for tap in taps:
        assert tap.up_counters.bytes > 0, "the client never sent a HELLO on this path"
        assert tap.down_counters.bytes == 0, tap.down_counters


def test_wrong_key_direct_names_the_key(tmp_path: Path, relays: Callable[..., Relay]) -> None:
    """With a TCP path the exit's silent hang-up is recognised as a wrong key."""
    relay = relays(allow=["127.0.0.1:22"])
    wrong = keygen(tmp_path / "wrong.key")
    args = ["--key", str(wrong), "--connect-timeout", str(CONNECT_TIMEOUT)]
    result, elapsed = run_dupsession([*args, "--path", relay.path("tcp"), "127.0.0.1", "22"])
    assert result.returncode == 3, result.stderr
    line = _one_line(result.stderr.decode())
    assert "wrong key" in line, line
    assert elapsed < CONNECT_TIMEOUT + SLACK
    assert relay.sessions_opened() == 0, relay.log


def test_wrong_key_with_udp_and_tcp_is_said_in_seconds(
    tmp_path: Path, relays: Callable[..., Relay]
) -> None:
    """The exit hangs up on the TCP path's HELLO: that is its answer, given after a short
    grace for the UDP path, not after the whole (default, 10 s) connect timeout."""
    relay = relays(allow=["127.0.0.1:22"])
    wrong = keygen(tmp_path / "wrong.key")
    paths = ["--path", relay.path("udp"), "--path", relay.path("tcp")]
    result, elapsed = run_dupsession(["--key", str(wrong), *paths, "127.0.0.1", "22"])
    assert result.returncode == 3, result.stderr
    assert "wrong key" in _one_line(result.stderr.decode())
    assert elapsed < 6, elapsed  # WRONG_KEY_GRACE (2 s) + start-up, well under 10 s
    assert relay.sessions_opened() == 0, relay.log


# ------------------------------------------------------------------------------ the ACL


def test_target_refused_by_acl(
    sshd: PrivateSshd, relays: Callable[..., Relay], probes: Callable[..., ProxyProbe]
) -> None:
    other = free_port()
    assert other != sshd.port
    relay = relays(allow=[f"127.0.0.1:{other}"])
    probe = probes(
        ["--key", str(relay.key), "--path", relay.path("udp"), "--path", relay.path("tcp")]
    )
    result, elapsed = _ssh_via(sshd, probe)

    assert result.returncode == 255, result
    code = probe.wait()
    assert code == 4, probe.stderr
    line = _one_line(probe.stderr)
    assert "not allowed" in line and f"127.0.0.1:{sshd.port}" in line, line
    assert elapsed < 10, elapsed  # an answer, not a timeout
    assert relay.sessions_opened() == 0, relay.log
    assert "refused" in relay.log
    assert "connected to target" not in relay.log


# ------------------------------------------------------------------- nothing answers


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("tcp",), "no path reachable"),
        (("tcp", "tcp"), "no path reachable"),
        (("udp", "tcp"), "no path reachable"),  # ICMP port unreachable answers for UDP
    ],
    ids=["tcp", "tcp+tcp", "udp+tcp"],
)
def test_no_path_reachable(tmp_path: Path, kinds: tuple[str, ...], expected: str) -> None:
    key = keygen(tmp_path / "key")
    args = ["--key", str(key), "--connect-timeout", str(CONNECT_TIMEOUT)]
    closed = []
    for kind in kinds:
        port = free_port()  # nothing listens there (UDP or TCP)
        closed.append(port)
        args += ["--path", f"{kind}://127.0.0.1:{port}"]
    result, elapsed = run_dupsession([*args, "127.0.0.1", "22"])

    assert result.returncode == 3, result.stderr
    line = _one_line(result.stderr.decode())
    assert expected in line, line
    if expected == "no path reachable":
        for port in closed:  # each path is named with why it failed
            assert f"127.0.0.1:{port}" in line, line
    assert elapsed < CONNECT_TIMEOUT + SLACK, elapsed


# -------------------------------------------------------------- target unreachable


def test_target_unreachable(
    sshd: PrivateSshd, relays: Callable[..., Relay], probes: Callable[..., ProxyProbe]
) -> None:
    dead = free_port()  # allowed, but nothing listens there
    relay = relays(allow=[f"127.0.0.1:{dead}"])
    probe = probes(
        ["--key", str(relay.key), "--path", relay.path("udp"), "--path", relay.path("tcp")]
    )
    result, elapsed = _ssh_via(sshd, probe, port=dead)

    assert result.returncode == 255, result
    code = probe.wait()
    assert code == 5, probe.stderr
    line = _one_line(probe.stderr)
    assert "cannot connect" in line and f"127.0.0.1:{dead}" in line, line
    assert elapsed < 10, elapsed
    assert relay.sessions_opened() == 1
    relay.wait_for_log(r"closed by exit: exit cannot connect")


@pytest.mark.parametrize("kinds", [("udp",), ("tcp",)], ids=["udp", "tcp"])
def test_target_unreachable_while_input_streams(
    kinds: tuple[str, ...], relays: Callable[..., Relay]
) -> None:
    """stdin still pours in when the exit says the target is unreachable: still one line."""
    dead = free_port()
    relay = relays(allow=[f"127.0.0.1:{dead}"])
    args = ["--key", str(relay.key)]
    for kind in kinds:
        args += ["--path", relay.path(kind)]
    for _ in range(3):
        result, elapsed = run_dupsession([*args, "127.0.0.1", str(dead)], input=bytes(20_000_000))
        assert result.returncode == 5, result.stderr.decode()
        line = _one_line(result.stderr.decode())
        assert "cannot connect" in line, line
        assert elapsed < 10, elapsed


# ------------------------------------------------------------------------ bad input


def _usage(args: list[str]) -> str:
    result, elapsed = run_dupsession(args, timeout=15)
    assert result.returncode == 2, result
    assert elapsed < 5, elapsed
    assert result.stdout == b""
    return _one_line(result.stderr.decode())


def test_bad_path_scheme(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    line = _usage(["--key", str(key), "--path", "ftp://x:1", "127.0.0.1", "22"])
    assert "ftp://x:1" in line and "udp://" in line and "tcp://" in line, line


def test_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    line = _usage(["--key", str(missing), "--path", "udp://127.0.0.1:9", "127.0.0.1", "22"])
    assert str(missing) in line and "key" in line, line


def test_key_file_readable_by_others(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    key.chmod(0o644)
    line = _usage(["--key", str(key), "--path", "udp://127.0.0.1:9", "127.0.0.1", "22"])
    assert f"chmod 600 {key}" in line, line


def test_no_paths_at_all(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    line = _usage(["--key", str(key), "127.0.0.1", "22"])
    assert "--path" in line, line


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    before = key.read_text()
    result = subprocess.run(
        [require_binary("dupsession"), "keygen", str(key)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert key.read_text() == before
