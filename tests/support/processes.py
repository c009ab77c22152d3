"""Processes the tests start or find: liveness, process trees, stopping, waiting.

Everything works by PID through /proc, so it serves processes that are not our children
(a daemon's forks, the `dupsession` an ssh ProxyCommand started) as well as our own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Seconds between SIGTERM and SIGKILL.
STOP_TIMEOUT = 5.0


def alive(pid: int) -> bool:
    """Running, as opposed to exited (gone, or a zombie waiting for its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid`, parents before children (sshd forks one per
    connection, each in its own session, so a process group would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM `pid` (not our child) and wait for it to go; SIGKILL if it will not."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def stop_tree(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM `pid`'s descendants, then `pid`; SIGKILL whatever is left after `timeout`."""
    pids = [*reversed(descendants(pid)), pid]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in pids:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def stop_process(
    proc: subprocess.Popen[Any], *, tree: bool = False, timeout: float = STOP_TIMEOUT
) -> None:
    """Stop our child `proc` (and, with `tree`, its descendants first), each by PID."""
    if tree and proc.poll() is None:
        for pid in descendants(proc.pid):
            stop_pid(pid, timeout)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, step: float = 0.02
) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
