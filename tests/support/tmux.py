"""A command in a real terminal: a detached pane on a private tmux server.

Each pane's server has its own socket name (`-L`), so nothing here touches the user's tmux;
the command runs under `sh`, which prints how it ended (`shell_wrapped`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.processes import stop_pid
from tests.support.sshd import require_binary

EXITED = re.compile(r"exited with status (\d+)$", re.MULTILINE)  # after any ^C echo


def shell_wrapped(argv: Sequence[str], stdin_devnull: bool = False) -> list[str]:
    """`argv` under sh, which prints its exit status when it ends.

    sh traps SIGINT (a trap, not an ignore, so the command still gets Ctrl-C's SIGINT with
    the default action) and runs the trap only after the command ends: Ctrl-C reaches the
    command, and sh lives on to print how it ended (130 if SIGINT killed it).
    """
    redirect = " </dev/null" if stdin_devnull else ""
    # The sleep keeps the terminal open: output written just before the last process on a
    # pty exits can be lost to tmux (it reads EIO instead).
    script = f'trap true INT; "$@"{redirect}; echo "exited with status $?"; exec sleep 10'
    return ["sh", "-c", script, "sh", *argv]


class TmuxPane:
    """One command in a detached tmux pane (220x50 unless told) on a private tmux server.

    The server has its own socket name (`-L`), so nothing here touches the user's tmux; it
    keeps dead panes (remain-on-exit) so the command's exit status can be read.
    """

    def __init__(
        self,
        workdir: Path,
        argv: Sequence[str],
        env: dict[str, str],
        size: tuple[int, int] = (220, 50),
    ) -> None:
        self.tmux = require_binary("tmux")
        self.name = f"dupsession-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.target = f"={self.name}:"  # exact session name, its current window
        conf = workdir / f"{self.name}.conf"
        conf.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.env = {**env, "LANG": "C.UTF-8"}
        session_env = [
            arg
            for key in ("DUPSESSION_RUNTIME_DIR", "XDG_CONFIG_HOME")
            if key in env
            for arg in ("-e", f"{key}={env[key]}")
        ]
        self.closed = False
        self._tmux(
            "-f", str(conf), "new-session", "-d", "-s", self.name, "-x", str(size[0]),
            "-y", str(size[1]),
            *session_env, "--", *argv,
        )  # fmt: skip

    def _tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.tmux, "-u", "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert result.returncode == 0, f"tmux {args}: {result.stderr}"
        return result.stdout

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.target)

    def display(self, fmt: str) -> str:
        return self._tmux("display-message", "-p", "-t", self.target, fmt).strip()

    def send_keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.target, *keys)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if predicate(screen):
                return screen
            if self.display("#{pane_dead}") == "1":
                raise AssertionError(f"the command exited before showing {what}:\n{screen}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not on screen after {timeout}s:\n{screen}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        """The command's exit status, from the line the `shell_wrapped` wrapper prints.

        (tmux 3.3's own #{pane_dead_status} is sometimes never set: it can mark the pane
        dead on the pty's EOF and then leave the child unreaped.)
        """
        screen = self.wait_for(lambda s: EXITED.search(s) is not None, timeout, "an exit status")
        match = EXITED.search(screen)
        assert match is not None
        return int(match[1])

    def close(self) -> None:
        """Kill the session by its unique name; the private server then exits by itself."""
        if self.closed:
            return
        self.closed = True
        state = self._tmux(
            "display-message", "-p", "-t", self.target, "#{pane_dead} #{pane_pid}", check=False
        ).split()
        self._tmux("kill-session", "-t", self.target, check=False)
        if state[:1] == ["0"] and state[1:2] and state[1].isdigit():
            stop_pid(int(state[1]))  # the command, should it survive the hangup
        # The server exits with its last session but leaves its socket file behind.
        tmpdir = self.env.get("TMUX_TMPDIR") or "/tmp"
        with contextlib.suppress(OSError):
            (Path(tmpdir) / f"tmux-{os.getuid()}" / self.name).unlink()
