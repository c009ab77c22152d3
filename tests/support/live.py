"""A live client session over three impaired UDP paths, for the status and probe tests.

A real `dupsession 127.0.0.1 ECHOPORT` process, fed a 16-byte "keystroke" every 50 ms by a
writer thread, reaches an echo target through a real `relayd` over three UDP shims with
distinct, asymmetric one-way delays (`ROUTES`): the views must show each route's RTT, the
winners of each direction and the losers' lag.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dupsession import control
from dupsession.testing.shim import Impairment
from tests.support.processes import stop_pid
from tests.support.relay import Relay, start_relay
from tests.support.shims import ShimThread
from tests.support.sshd import require_binary
from tests.support.targets import TcpTarget

KEYSTROKE = 16  #: bytes per keystroke record
KEYSTROKE_INTERVAL = 0.05  #: seconds between keystrokes
WARMUP_TIMEOUT = 20.0  #: seconds for the session to have enough samples
MIN_FRAMES = 60  #: frames each way before the views are judged (the lag averages settle)
MIN_RTT_SAMPLES = 20  #: RTT samples per path before the views are judged

#: Measured values must be within ABS_TOL + REL_TOL * expected of the configured ones.
ABS_TOL = 0.008
REL_TOL = 0.20


@dataclass(frozen=True)
class Route:
    name: str
    up: float  #: one-way delay client -> exit (s)
    down: float  #: one-way delay exit -> client (s)
    loss: float = 0.0  #: per datagram, each direction

    @property
    def rtt(self) -> float:
        return self.up + self.down


ROUTES = (
    Route("A", 0.010, 0.030),
    Route("B", 0.060, 0.010),
    Route("C", 0.050, 0.050, loss=0.10),
)
FIRST_UP = "A"  #: the lowest up delay
FIRST_DOWN = "B"  #: the lowest down delay


def close_to(measured: float, expected: float) -> bool:
    return abs(measured - expected) <= ABS_TOL + REL_TOL * expected


def expected_lags(routes: Sequence[Route]) -> dict[str, tuple[float, float]]:
    """(lag up, lag down) of each route: how far behind the fastest copy its copies arrive."""
    best_up = min(r.up for r in routes)
    best_down = min(r.down for r in routes)
    return {r.name: (r.up - best_up, r.down - best_down) for r in routes}


# -- the workload -------------------------------------------------------------------------------


class Typist:
    """A `dupsession ... HOST PORT` process typing a keystroke record every 50 ms."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        dupsession = require_binary("dupsession")
        self.process = subprocess.Popen(
            [dupsession, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.sent = 0
        self.echoed = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _write(self) -> None:
        assert self.process.stdin is not None
        counter = 0
        try:
            while not self._stop.wait(KEYSTROKE_INTERVAL):
                self.process.stdin.write(b"key %011d\n" % counter)
                self.process.stdin.flush()
                counter += 1
                self.sent += KEYSTROKE
        except OSError as exc:
            self.errors.append(exc)

    def _read(self) -> None:
        stdout = self.process.stdout
        assert isinstance(stdout, io.BufferedReader)  # Popen's default buffering
        while data := stdout.read1(65536):
            self.echoed += len(data)

    def finish(self, timeout: float = 15.0) -> tuple[int, str]:
        """Stop typing, close stdin (EOF to the target), wait; (exit code, stderr)."""
        self._stop.set()
        self._writer.join(5)
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_pid(self.process.pid)
            self.process.wait(5)
            raise AssertionError(f"dupsession did not exit {timeout}s after EOF") from None
        finally:
            self._reader.join(5)
        return code, self.process.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            stop_pid(self.process.pid)
            self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@dataclass
class LiveSession:
    run_dir: Path
    env: dict[str, str]  #: for subprocesses: only this module's control sockets are seen
    relay: Relay
    target_port: int
    specs: dict[str, str]  #: route name -> the client's --path URL (without its ?via=NAME)
    typist: Typist

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.target_port}"

    def label(self, route: Route) -> str:
        """The path's short name in the views: uplink/via/transport."""
        return f"default/{route.name}/udp"

    def route_of_spec(self, spec: str) -> Route:
        names = [name for name, s in self.specs.items() if s == spec]
        assert len(names) == 1, f"unknown path {spec!r}; expected one of {self.specs}"
        return next(r for r in ROUTES if r.name == names[0])

    def client_document(self) -> dict[str, Any]:
        documents = control.discover("client", self.run_dir)
        assert len(documents) == 1, documents
        return documents[0]

    def wait_warm(self) -> dict[str, Any]:
        """Wait until every path has RTT samples and both directions enough frames."""
        deadline = time.monotonic() + WARMUP_TIMEOUT
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.typist.process.poll() is None, "dupsession exited during warm-up"
            documents = control.discover("client", self.run_dir)
            if documents and documents[0]["sessions"]:
                doc = documents[0]["sessions"][0]
                paths = doc.get("paths", [])
                if (
                    doc.get("state") == "up"
                    and len(paths) == len(ROUTES)
                    and all(p.get("rtt_count", 0) >= MIN_RTT_SAMPLES for p in paths)
                    and sum(p["outbound"]["first"] for p in paths) >= MIN_FRAMES
                    and sum(p["inbound"]["first"] for p in paths) >= MIN_FRAMES
                ):
                    return doc
            time.sleep(0.2)
        raise AssertionError(f"session not warm after {WARMUP_TIMEOUT}s: {doc}")


def start_live_session(
    workdir: Path, shims: ShimThread, target: TcpTarget, relay_args: Sequence[str] = ()
) -> LiveSession:
    """relayd, three shims in front of it, and a typing dupsession; caller cleans up."""
    run_dir = workdir / "run"
    run_dir.mkdir(mode=0o700, parents=True)
    env = {
        **os.environ,
        "DUPSESSION_RUNTIME_DIR": str(run_dir),
        "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
    }
    relay = start_relay(
        workdir / "relay",
        [f"127.0.0.1:{target.port}"],
        extra_args=["--control", str(run_dir / "relayd-status.sock"), *relay_args],
    )
    try:
        specs = {}
        for seed, route in enumerate(ROUTES):
            shim = shims.udp(
                (relay.host, relay.port),
                up=Impairment(delay=route.up, loss=route.loss),
                down=Impairment(delay=route.down, loss=route.loss),
                seed=seed,
            )
            specs[route.name] = f"udp://127.0.0.1:{shim.port}"
        args = ["--key", str(relay.key)]
        for route in ROUTES:
            args += ["--path", f"{specs[route.name]}?via={route.name}"]
        typist = Typist([*args, "127.0.0.1", str(target.port)], env)
    except BaseException:
        relay.stop(check=False)
        raise
    return LiveSession(run_dir, env, relay, target.port, specs, typist)
