"""Run `relayd serve` as a real subprocess on a free port, with a fresh key, for e2e tests.

`start_relay()` returns once relayd logs that it listens; `Relay.stop()` sends SIGTERM to its
PID and checks that it exits 0 and that its log is clean (no ERROR, no traceback).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.sshd import free_port, require_binary

RELAY_START_TIMEOUT = 10.0  # seconds until relayd logs that it listens
RELAY_STOP_TIMEOUT = 10.0  # seconds for relayd to exit after SIGTERM

#: Log lines that must never appear in a clean relayd log.
UNCLEAN = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception in callback|never retrieved")


def keygen(path: Path) -> Path:
    """A fresh pre-shared key at `path`, made by the real `dupsession keygen` (mode 0600)."""
    dupsession = require_binary("dupsession")
    result = subprocess.run(
        [dupsession, "keygen", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    return path


@dataclass
class Relay:
    """A running `relayd serve` listening on 127.0.0.1:`port` (UDP and TCP)."""

    process: subprocess.Popen[bytes]
    port: int
    key: Path
    log_path: Path
    allow: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def path(self, scheme: str) -> str:
        """The `--path` URL of this relay's listener: udp://... or tcp://..."""
        return f"{scheme}://{self.host}:{self.port}"

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until `pattern` (a regex) appears in the log; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log)
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"relayd never logged {pattern!r}; log:\n{self.log}")
            if self.process.poll() is not None:
                raise AssertionError(
                    f"relayd exited ({self.process.returncode}) before logging {pattern!r}:\n"
                    f"{self.log}"
                )
            time.sleep(0.02)

    def sessions_opened(self) -> int:
        return len(re.findall(r"session \w+: opened", self.log))

    def stop(self, check: bool = True) -> int:
        """SIGTERM by PID; with `check`, assert exit 0 and a clean log. Idempotent."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(RELAY_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(RELAY_STOP_TIMEOUT)
                raise AssertionError(
                    f"relayd did not exit within {RELAY_STOP_TIMEOUT}s of SIGTERM:\n{self.log}"
                ) from None
        code = self.process.returncode
        if check:
            log = self.log
            assert code == 0, f"relayd exited {code}:\n{log}"
            unclean = [line for line in log.splitlines() if UNCLEAN.search(line)]
            assert not unclean, "relayd logged errors:\n" + "\n".join(unclean)
            assert re.search(r" INFO stopped$", log, re.M), f"relayd did not log 'stopped':\n{log}"
        return code


def start_relay(
    workdir: Path,
    allow: Sequence[str],
    *,
    key: Path | None = None,
    extra_args: Sequence[str] = (),
    attempts: int = 5,
    port: int | None = None,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> Relay:
    """Start relayd on a free port of 127.0.0.1 with `--allow` entries; `key` or a new one.

    `port` pins the port (a restart on the same address); `prefix` runs relayd under a
    wrapper (setpriv: unprivileged, sandboxed); `preexec_fn` runs in the child (rlimits).
    """
    relayd = require_binary("relayd")
    workdir.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = keygen(workdir / "relay.key")
    pinned = port
    for attempt in range(attempts):
        port = pinned or free_port()
        log_path = workdir / f"relayd-{port}-{attempt}-{time.monotonic_ns()}.log"
        argv = [
            *prefix,
            relayd,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--key",
            str(key),
            "--log-level",
            "info",
        ]
        for entry in allow:
            argv += ["--allow", entry]
        argv += list(extra_args)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=preexec_fn
            )
        relay = Relay(process, port, key, log_path, list(allow))
        deadline = time.monotonic() + RELAY_START_TIMEOUT
        while time.monotonic() < deadline:
            if "listening on" in relay.log:
                return relay
            if process.poll() is not None:
                break  # the port was taken meanwhile (UDP or TCP): try another
            time.sleep(0.02)
        else:
            relay.stop(check=False)
            raise AssertionError(
                f"relayd did not start within {RELAY_START_TIMEOUT}s:\n{relay.log}"
            )
        if attempt == attempts - 1:
            raise AssertionError(f"relayd would not start after {attempts} attempts:\n{relay.log}")
    raise AssertionError("unreachable")


def started_relays(
    workdir: Path,
    extra_args: Sequence[str] = (),
    check: Callable[[Relay], None] | None = None,
) -> Iterator[Callable[..., Relay]]:
    """The body of a `relays` fixture: `start(allow, **start_relay's keywords)` starts relayd
    (with `extra_args` before the test's own); at teardown each is stopped by PID with
    SIGTERM and must exit 0 with a clean log (one a test stopped itself was checked then),
    and passes `check` (run on its log after the stop)."""
    started: list[Relay] = []

    def start(allow: Sequence[str], **kwargs: Any) -> Relay:
        kwargs["extra_args"] = [*extra_args, *kwargs.get("extra_args", ())]
        relay = start_relay(workdir / f"relay{len(started)}", allow, **kwargs)
        started.append(relay)
        return relay

    yield start
    errors: list[str] = []
    for relay in started:
        try:
            relay.stop()
            if check is not None:
                check(relay)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)
