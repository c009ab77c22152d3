"""`dupsession` as ssh's ProxyCommand, observed: its PID, stderr and exit code.

ssh hides its ProxyCommand: it shares ssh's stderr, its exit code is never reported, and ssh
sends it SIGHUP on the way out. `ProxyProbe` writes a small wrapper script that runs the real
`dupsession` with its stderr in a file, ignores ssh's SIGHUP so that the exit code is always
recorded, and records the PID, so the test can assert on all three and stop a leftover
process by its PID.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.processes import stop_pid
from tests.support.sshd import require_binary

EXIT_TIMEOUT = 20.0  # seconds for dupsession to finish after ssh did


class ProxyProbe:
    """One observed `dupsession` ProxyCommand; `command` goes into `-o ProxyCommand=`."""

    def __init__(self, workdir: Path, args: Sequence[str], name: str = "proxy") -> None:
        dupsession = require_binary("dupsession")
        workdir.mkdir(parents=True, exist_ok=True)
        self.err_path = workdir / f"{name}.stderr"
        self.rc_path = workdir / f"{name}.rc"
        self.pid_path = workdir / f"{name}.pid"
        self.wrapper_pid_path = workdir / f"{name}.wrapper.pid"
        script = workdir / f"{name}.sh"
        q = shlex.quote
        script.write_text(
            "#!/bin/sh\n"
            "trap '' HUP\n"
            f"echo $$ > {q(str(self.wrapper_pid_path))}\n"
            f'sh -c \'echo $$ > "$0"; exec "$@"\' {q(str(self.pid_path))} '
            f'{q(dupsession)} "$@" 2>{q(str(self.err_path))}\n'
            f"echo $? > {q(str(self.rc_path))}.tmp\n"
            f"mv {q(str(self.rc_path))}.tmp {q(str(self.rc_path))}\n"
        )
        script.chmod(0o755)
        self.command = " ".join([q(str(script)), *(q(a) for a in args), "%h", "%p"])

    @property
    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def started(self) -> bool:
        return self.pid_path.exists()

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """dupsession's exit code, once it has exited (fail if it does not in time)."""
        deadline = time.monotonic() + timeout
        while not self.rc_path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dupsession still running {timeout}s after ssh; stderr:\n{self.stderr}"
                )
            time.sleep(0.02)
        return int(self.rc_path.read_text().strip())

    def cleanup(self) -> None:
        """Stop dupsession and its wrapper by PID if they are still around."""
        for path in (self.pid_path, self.wrapper_pid_path):
            with contextlib.suppress(FileNotFoundError, ValueError):
                stop_pid(int(path.read_text().strip()))


def run_dupsession(
    args: Sequence[str],
    *,
    input: bytes | None = b"",
    timeout: float = 30.0,
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run `dupsession ARGS` directly, stdin from `input`; return the result and seconds taken."""
    dupsession = require_binary("dupsession")
    start = time.monotonic()
    result = subprocess.run([dupsession, *args], input=input, capture_output=True, timeout=timeout)
    return result, time.monotonic() - start
