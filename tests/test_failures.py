"""Fail fast, say why: every path failed hard -> exit 3 at once, one short grouped line;
`-v` / DUPSESSION_LOG show dupsession's own path events, library chatter only at -vvv."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dupsession.failures import grouped, reason
from dupsession.pathspec import parse_path
from tests.prereq import missing
from tests.support.sshd import free_port

TIMEOUT = 30


def test_reasons_are_short_words() -> None:
    assert reason(OSError(errno.ENODEV, "No such device")) == "no such interface"
    assert reason(ConnectionRefusedError(errno.ECONNREFUSED, "x")) == "connection refused"
    assert reason(TimeoutError()) == "timed out"
    assert reason(socket.gaierror(-2, "Name or service not known")).startswith("cannot resolve")
    assert reason(OSError(errno.EACCES, "Permission denied")) == "permission denied"


def test_grouping_by_uplink_and_label() -> None:
    urls = [
        "udp://198.18.0.1:7300?bind=wlan0",
        "tcp://198.18.0.1:7300?bind=wlan0",
        "udp://198.18.1.1:7400?bind=wlan0&via=vps1",
        "udp://198.18.0.1:7300?bind=usb0",
        "tcp://198.18.0.1:7300?bind=usb0",
        "udp://198.18.1.1:7400?bind=usb0&via=vps1",
        "tcp://198.18.0.9:7300",
    ]
    specs = {i: parse_path(url) for i, url in enumerate(urls, start=1)}
    errors = {1: "no such interface", 2: "no such interface", 3: "no such interface"}
    errors |= {4: "connection refused", 5: "connection refused", 6: "network unreachable"}
    errors[7] = "connection refused"
    line = grouped(specs, errors)
    assert line == (
        "uplink wlan0: no such interface; "
        "usb0/direct/udp, usb0/direct/tcp, tcp://198.18.0.9:7300: connection refused; "
        "usb0/vps1/udp: network unreachable"
    )
    both = grouped(specs, dict.fromkeys(range(1, 7), "no such interface"))
    assert both == "uplinks wlan0, usb0: no such interface"


def run(home: Path, *argv: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DUPSESSION_"))}
    env.update(HOME=str(home), **extra)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dupsession.cli", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return result, time.monotonic() - start


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "h").mkdir()
    return tmp_path / "h"


def test_missing_uplinks_fail_at_once_in_one_short_line(home: Path) -> None:
    if os.geteuid() != 0:
        missing("binding to an interface name needs root")
    init, _ = run(home, "init", "198.18.0.1", "--uplink", "wlan9", "--uplink", "usb9")
    assert init.returncode == 0, init.stderr
    config = home / ".config" / "dupsession" / "config.toml"
    config.write_text(config.read_text() + '[relays.vps1]\nurl = "udp://198.18.1.1:7400"\n')
    result, elapsed = run(home, "--", "localhost", "22")  # 2 uplinks x 3 routes = 6 paths
    assert result.returncode == 3, result.stderr
    assert (
        result.stderr == "dupsession: no path reachable: uplinks wlan9, usb9: no such interface\n"
    )
    assert elapsed < 5, elapsed  # not the 10 s connect timeout


def test_exit_down_fails_at_once_on_udp_and_tcp(home: Path) -> None:
    key = home / "key"
    assert run(home, "keygen", str(key))[0].returncode == 0
    port = free_port()  # nothing listens: ICMP port unreachable for UDP, RST for TCP
    result, elapsed = run(
        home, "--key", str(key), "--path", f"udp://127.0.0.1:{port}",
        "--path", f"tcp://127.0.0.1:{port}", "--", "localhost", "22",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr == (
        f"dupsession: no path reachable: udp://127.0.0.1:{port}, tcp://127.0.0.1:{port}: "
        "connection refused\n"
    )
    assert elapsed < 5, elapsed


@pytest.mark.parametrize("level", ["-v", "env", "-vvv"])
def test_verbose_shows_own_events_and_library_chatter_only_at_vvv(level: str, home: Path) -> None:
    key = home / "key"
    assert run(home, "keygen", str(key))[0].returncode == 0
    port = free_port()
    argv = ["--key", str(key), "--path", f"tcp://127.0.0.1:{port}"]
    argv += ["--path", f"ssh://127.0.0.1:{port}?exit=127.0.0.1:7300", "--", "localhost", "22"]
    if level == "env":
        result, _ = run(home, *argv, DUPSESSION_LOG="info")
    else:
        result, _ = run(home, level, *argv)
    assert result.returncode == 3, result.stderr
    assert "dupsession.client: path 1 (default/direct/tcp) lost: connection refused" in (
        result.stderr
    )
    assert ("asyncssh" in result.stderr) == (level == "-vvv"), result.stderr
