"""`-v` (here DUPSESSION_LOG=info) says when the session lost its last path and when it
resumed: what a user whose ssh froze wants to read. One UDP path through a shim, cut and
restored while a real `dupsession` process holds the session."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import stop_pid
from tests.support.relay import Relay
from tests.support.shims import ShimThread
from tests.support.sshd import require_binary
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(60)


def wait_for(log: Path, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text := log.read_text()):
        assert time.monotonic() < deadline, f"never logged {pattern!r}:\n{text}"
        time.sleep(0.05)
    return text


def test_outage_and_resume_are_logged(
    tmp_path: Path, relays: Callable[..., Relay], shims: ShimThread
) -> None:
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        shim = shims.udp((relay.host, relay.port))
        log = tmp_path / "stderr"
        env = {**os.environ, "DUPSESSION_LOG": "info", "DUPSESSION_RUNTIME_DIR": str(tmp_path)}
        argv = [require_binary("dupsession"), "--key", str(relay.key)]
        argv += ["--path", f"udp://127.0.0.1:{shim.port}", "--", "127.0.0.1", str(target.port)]
        with log.open("wb") as err:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
        try:
            wait_for(log, r"path 1 \(default/direct/udp\) up", 15)
            shims.set(shim.up, blackhole=True)
            shims.set(shim.down, blackhole=True)
            wait_for(log, r"every path is down: holding the session up to 600 s", 10)
            shims.set(shim.up, blackhole=False)
            shims.set(shim.down, blackhole=False)
            text = wait_for(log, r"session resumed after \d+\.\d s with every path down", 10)
            assert "asyncssh" not in text
            assert process.stdin is not None
            process.stdin.close()  # EOF: the echo target closes, the session ends cleanly
            assert process.wait(15) == 0, log.read_text()
        finally:
            stop_pid(process.pid)
