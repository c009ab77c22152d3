"""`dupsession -- HOST PORT` typed at a shell works like nc: lines typed in the terminal reach
the target, its answers show, Ctrl-D half-closes (exit 0 when the target then closes), Ctrl-C
ends it quietly with 130. A real terminal: a private tmux pane."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.relay import Relay
from tests.support.sshd import require_binary
from tests.support.targets import TcpTarget
from tests.support.tmux import shell_wrapped

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("end", ["ctrl-d", "ctrl-c"])
def test_typed_lines_reach_the_target(
    end: str, tmp_path: Path, relays: Callable[..., Relay], pane_factory: Any
) -> None:
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        argv = [require_binary("dupsession"), "--key", str(relay.key)]
        argv += ["--path", relay.path("udp"), "--path", relay.path("tcp")]
        argv += ["--", "127.0.0.1", str(target.port)]
        env = {**os.environ, "DUPSESSION_RUNTIME_DIR": str(tmp_path / "run")}
        pane = pane_factory(shell_wrapped(argv), env, (100, 20))
        pane.wait_for(lambda s: relay.sessions_opened() == 1, 15, "the session")
        pane.send_keys("typed-at-a-tty", "Enter")
        # Once from the terminal's own echo, once from the target's.
        pane.wait_for(lambda s: s.count("typed-at-a-tty") == 2, 10, "the echo from the target")
        pane.send_keys("C-d" if end == "ctrl-d" else "C-c")
        assert pane.wait_exit(10) == (0 if end == "ctrl-d" else 130)
        assert "Traceback" not in pane.capture()
