"""The client endpoint: handshake over every path, then one session between a byte stream
(ssh's stdin/stdout in ProxyCommand mode, or any asyncio stream pair) and the exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from dupsession import control, failures
from dupsession.aio.driver import SessionDriver
from dupsession.aio.streampath import StreamPath
from dupsession.aio.transports import UdpPath, open_path
from dupsession.core import events, negotiate, wire
from dupsession.core.errors import LocalProtocolError
from dupsession.core.handshake import ClientHandshake, HandshakeError, SessionKeys
from dupsession.core.session import Role, Session
from dupsession.pathspec import PathSpec, short_labels
from dupsession.report import PathReport, SessionReport
from dupsession.settings import ClientSettings, SettingsError
from dupsession.settings import load as settings_load

log = logging.getLogger(__name__)

#: How often (s) the config file is checked for added or removed paths.
CONFIG_POLL = 2.0
#: HELLO is resent on datagram paths this often (s) until a WELCOME arrives.
HELLO_RESEND = 0.5
#: After a stream path was hung up on right after its HELLO (the exit refuses our key), how
#: long (s) the other paths may still answer before the handshake fails as "wrong key".
WRONG_KEY_GRACE = 2.0


class ExitCode(IntEnum):
    """Process exit codes: scripts can tell failures apart without parsing stderr."""

    OK = 0
    ERROR = 1
    USAGE = 2
    HANDSHAKE = 3  #: no path answered: wrong key, exit down, or every path blocked
    REFUSED = 4  #: the exit's allow-list refused the target
    TARGET = 5  #: the exit could not reach the target
    LOST = 6  #: the session died: grace period over, or a protocol error


class SessionFailed(Exception):
    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_CLOSE_TO_EXIT: dict[int, ExitCode] = {
    wire.CloseCode.NORMAL: ExitCode.OK,
    wire.CloseCode.TARGET_UNREACHABLE: ExitCode.TARGET,
    wire.CloseCode.TARGET_REFUSED: ExitCode.REFUSED,
    wire.CloseCode.PROTOCOL_ERROR: ExitCode.LOST,
    wire.CloseCode.TIMEOUT: ExitCode.LOST,
    wire.CloseCode.SHUTDOWN: ExitCode.LOST,
    wire.CloseCode.UNKNOWN_SESSION: ExitCode.LOST,
}


class ByteStream(Protocol):
    """The local side of the session: where bytes come from and go to (stdio, a socket)."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, parts: list[bytes]) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_congested(self) -> bool: ...


@dataclass
class _Handshaking:
    handshake: ClientHandshake
    done: asyncio.Future[tuple[int, SessionKeys]]
    closed_after_hello: set[int]
    #: path id -> when its only HELLO went out; None once it is resent (then a WELCOME
    #: may answer either copy, and the time would not be a round trip).
    hello_sent: dict[int, float | None] = field(default_factory=dict)
    rtt: dict[int, float] = field(default_factory=dict)  #: HELLO-to-WELCOME, per path


class Client:
    """Owns the paths; first runs the handshake, then drives the session."""

    def __init__(
        self,
        settings: ClientSettings,
        target: str,
        psk: bytes,
        features: negotiate.Features | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock  #: monotonic seconds: the handshake's and (via the driver) the session's
        self.target = target
        self.psk = psk
        self.wanted = features or negotiate.Features()  #: what we offer in the HELLO
        self.features = negotiate.Features()  #: what the exit agreed to
        self.origin: str | None = None  #: where the stream comes from, for status views
        self.paths: dict[int, UdpPath | StreamPath] = {}
        self.driver: SessionDriver | None = None
        self._hs: _Handshaking | None = None
        self._path_errors: dict[int, str] = {}
        self.stream: ByteStream | None = None
        self.result: asyncio.Future[events.SessionClosed] | None = None
        self.started = self.clock()
        self._control: control.ControlServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._up: set[int] = set()  #: paths the session counts as up (for outage notes)
        self._outage_since: float | None = None  #: when the last path went down

    # -- PathOwner ---------------------------------------------------------------------------

    def path_open(self, path_id: int, sink: object) -> None:
        self._path_errors.pop(path_id, None)
        path = self.paths[path_id]
        log.info("path %d (%s) open", path_id, path.spec.label)
        if self.driver is not None:
            self.driver.attach(path_id, path, path.datagram, link=path.spec.uplink or "default")
        elif self._hs is not None:
            self._hs.hello_sent.setdefault(path_id, self.clock())
            path.send_frames([self._hs.handshake.hello_frame(path_id)])

    def path_frames(self, path_id: int, frames: list[bytes]) -> None:
        """The frames of one read from a path: the session's, or the handshake's."""
        if self.driver is not None:
            self.driver.frames_received(frames, path_id)
            return
        for frame in frames:
            self._handshake_frame(path_id, frame)

    def _handshake_frame(self, path_id: int, frame: bytes) -> None:
        hs = self._hs
        if hs is None or hs.done.done() or len(frame) < 2 or frame[1] != wire.FrameType.WELCOME:
            return
        try:
            welcome, keys = hs.handshake.accept(path_id, frame)
        except (wire.FrameError, HandshakeError) as exc:
            log.debug("path %d: ignoring bad welcome: %s", path_id, exc)
            return
        if keys is None:
            code = (
                ExitCode.REFUSED if welcome.status == wire.WelcomeStatus.REFUSED else ExitCode.ERROR
            )
            hs.done.set_exception(
                SessionFailed(code, f"exit refused the session: {welcome.reason}")
            )
            return
        try:
            self.features = negotiate.settle(self.wanted, welcome.options)
        except negotiate.NegotiationError as exc:
            hs.done.set_exception(SessionFailed(ExitCode.HANDSHAKE, str(exc)))
            return
        sent = hs.hello_sent.get(path_id)
        if sent is not None:
            hs.rtt[path_id] = self.clock() - sent
        hs.done.set_result((path_id, keys))

    def path_writable(self, path_id: int, writable: bool) -> None:
        if self.driver is not None:
            self.driver.set_path_writable(path_id, writable)

    def path_lost(self, path_id: int, reason: str) -> None:
        self._path_errors[path_id] = reason
        if self.driver is not None:
            self.driver.detach(path_id, self.paths[path_id])
        elif self._hs is not None:
            self._hs.closed_after_hello.add(path_id)
            self._fail_fast()
            if "closed by peer" in reason and not self.paths[path_id].datagram:
                # The exit (or a relay) took the connection and hung up on our HELLO: it is
                # there and did not accept our key. Other paths get a moment to answer after
                # all; then that is the answer, not the whole connect timeout.
                loop = asyncio.get_running_loop()
                loop.call_later(WRONG_KEY_GRACE, self._fail_unanswered)
        log.info("path %d (%s) lost: %s", path_id, self.paths[path_id].spec.label, reason)

    def _fail_unanswered(self) -> None:
        if self._hs is not None and not self._hs.done.done():
            failure = SessionFailed(ExitCode.HANDSHAKE, self._handshake_failure())
            self._hs.done.set_exception(failure)

    def path_error(self, path_id: int, reason: str) -> None:
        """A datagram path got an error back (ICMP port unreachable: nothing listens there).

        While the handshake runs it counts as that path's answer, so "exit down" is said at
        once; in a session it is only logged: datagram paths stay up and keep probing.
        """
        if self.driver is None and self._hs is not None and path_id not in self._path_errors:
            self._path_errors[path_id] = reason
            log.info("path %d (%s): %s", path_id, self.paths[path_id].spec.label, reason)
            self._fail_fast()
        else:
            log.debug("path %d: %s", path_id, reason)

    def _fail_fast(self) -> None:
        """Every path failed hard (refused, no such interface, no route): waiting out the
        connect timeout would only delay the same answer. A silent path is no failure."""
        assert self._hs is not None
        if not self._hs.done.done() and all(p in self._path_errors for p in self.paths):
            failure = SessionFailed(ExitCode.HANDSHAKE, self._handshake_failure())
            self._hs.done.set_exception(failure)

    def _path_event(self, event: events.Event) -> None:
        """A stream path gone silent is reconnected rather than waited for."""
        if isinstance(event, events.PathDown):
            path = self.paths.get(event.path_id)
            if isinstance(path, StreamPath):
                log.info("path %d (%s) silent: reconnecting", event.path_id, path.spec.label)
                path.reconnect()
            elif path is not None:
                log.info("path %d (%s) down: no answer", event.path_id, path.spec.label)
        elif isinstance(event, events.PathUp) and event.path_id in self.paths:
            log.info("path %d (%s) up", event.path_id, self.paths[event.path_id].spec.label)
        self._note_outage(event)

    def _note_outage(self, event: events.Event) -> None:
        """Say when the session loses its last path and when it resumes: the two moments a
        user watching `-v` (or wondering why ssh froze) wants to know about."""
        if isinstance(event, events.PathUp):
            self._up.add(event.path_id)
            if self._outage_since is not None:
                log.info(
                    "session resumed after %.1f s with every path down",
                    self.clock() - self._outage_since,
                )
                self._outage_since = None
        elif isinstance(event, events.PathDown):
            was_up = bool(self._up)
            self._up.discard(event.path_id)
            if was_up and not self._up:
                self._outage_since = self.clock()
                log.info(
                    "every path is down: holding the session up to %g s for one to come back",
                    self.settings.session.grace_period,
                )

    # -- Endpoint (session events) -----------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        assert self.stream is not None and self.driver is not None
        self.stream.write(data)
        if self.stream.is_congested():
            self.driver.pause_receiving(True)

    def on_data_parts(self, parts: list[bytes]) -> None:
        """`on_data` for several pieces: the stream writes them with one `writev`."""
        assert self.stream is not None and self.driver is not None
        self.stream.writelines(parts)
        if self.stream.is_congested():
            self.driver.pause_receiving(True)

    def on_eof(self) -> None:
        assert self.stream is not None
        self.stream.write_eof()

    def on_closed(self, event: events.SessionClosed) -> None:
        log.info("session closed by %s: %s", "the exit" if event.by_peer else "us", event.reason)
        if self.result is not None and not self.result.done():
            self.result.set_result(event)

    def on_writable(self) -> None:
        if self.stream is not None:
            self.stream.resume_reading()

    # -- the local stream -------------------------------------------------------------------

    def local_data(self, data: bytes) -> None:
        assert self.driver is not None and self.stream is not None
        try:
            self.driver.send(data)
        except LocalProtocolError:
            # The session ended (e.g. the exit could not reach the target) while ssh was
            # still writing: nowhere to send it.
            self.stream.pause_reading()
            return
        if not self.driver.writable():
            self.stream.pause_reading()

    def local_eof(self) -> None:
        if self.driver is not None:
            self.driver.close_stream()

    def local_drained(self) -> None:
        if self.driver is not None:
            self.driver.pause_receiving(False)

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open every path and run the handshake; raise SessionFailed with a clear reason."""
        if not self.settings.paths:
            raise SessionFailed(
                ExitCode.USAGE,
                "no paths configured: give --path udp://HOST:PORT (or tcp://) or a config file",
            )
        loop = asyncio.get_running_loop()
        await self._start_control()
        handshake = ClientHandshake(
            self.psk, self.target, time.time(), negotiate.offer(self.wanted)
        )
        self._hs = _Handshaking(handshake, loop.create_future(), set())
        for index, spec in enumerate(self.settings.paths, start=1):
            self.paths[index] = open_path(index, spec, self)
        for pid in self.paths:
            self._spawn(self._open(pid))
        resend = loop.create_task(self._resend_hello())
        try:
            first, keys = await asyncio.wait_for(
                asyncio.shield(self._hs.done), self.settings.connect_timeout
            )
        except TimeoutError:
            raise SessionFailed(ExitCode.HANDSHAKE, self._handshake_failure()) from None
        finally:
            resend.cancel()
        session = Session(
            Role.CLIENT,
            handshake.session_id,
            keys,
            self.clock(),
            self.settings.session,
            self.features,
        )
        log.info(
            "session %s to %s: exit answered on path %d (%s) after %.0f ms",
            handshake.session_id.hex(),
            self.target,
            first,
            self.paths[first].spec.label,
            (self.clock() - self.started) * 1e3,
        )
        self.driver = SessionDriver(session, self, self.clock)
        self.driver.on_path_event = self._path_event
        self.result = loop.create_future()
        for pid, path in self.paths.items():
            if path.is_open():
                link = path.spec.uplink or "default"
                self.driver.attach(pid, path, path.datagram, self._hs.rtt.get(pid), link)
        if self.settings.config_path is not None:
            self._watcher = loop.create_task(self._watch_config(self.settings.config_path))

    async def _open(self, path_id: int) -> None:
        path = self.paths[path_id]
        try:
            await path.open()
        except (OSError, TimeoutError) as exc:
            self.path_lost(path_id, failures.reason(exc))
            path.retry_later()

    async def _resend_hello(self) -> None:
        assert self._hs is not None
        while True:
            await asyncio.sleep(HELLO_RESEND)
            for pid, path in self.paths.items():
                if path.datagram and pid not in self._path_errors:
                    self._hs.hello_sent[pid] = None  # resent: no longer a clean sample
                    path.send_frames([self._hs.handshake.hello_frame(pid)])

    def _handshake_failure(self) -> str:
        assert self._hs is not None
        timeout = self.settings.connect_timeout
        stream_ids = [pid for pid, p in self.paths.items() if not p.datagram]
        if any(
            p in self._hs.closed_after_hello and "closed by peer" in self._path_errors.get(p, "")
            for p in stream_ids
        ):
            return (
                "the exit closed the connection without answering the handshake: "
                "wrong key (the exit and this client must share the same key file)"
            )
        if len(self._path_errors) == len(self.paths):
            specs = {pid: path.spec for pid, path in self.paths.items()}
            return f"no path reachable: {failures.grouped(specs, self._path_errors)}"
        return (
            f"no answer from the exit within {timeout:g} s on any path: "
            "wrong key, exit not running, or every path blocked"
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, holding a reference until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_config(self, config: Path) -> None:
        """Paths added to (or removed from) the config join (or leave) the live session."""
        seen = _mtime(config)
        while True:
            await asyncio.sleep(CONFIG_POLL)
            mtime = _mtime(config)
            if mtime == seen:
                continue
            seen = mtime
            try:
                fresh = settings_load(config, self.settings.host)
            except SettingsError as exc:
                log.warning("config change ignored: %s", exc)
                continue
            self.update_paths(list(fresh.paths))

    def update_paths(self, specs: list[PathSpec]) -> None:
        """Open paths not yet in the session, close the ones no longer wanted."""
        assert self.driver is not None
        current = {str(p.spec): pid for pid, p in self.paths.items()}
        wanted = {str(spec): spec for spec in specs}
        for key, pid in current.items():
            if key not in wanted:
                log.info("path %d (%s) removed from the config", pid, key)
                path = self.paths.pop(pid)
                path.close()
                self.driver.detach(pid, path)
                self.driver.remove_path(pid)
                self._path_errors.pop(pid, None)
        next_id = max(self.paths, default=0) + 1
        for key, spec in wanted.items():
            if key in current:
                continue
            log.info("path %d (%s) added from the config", next_id, key)
            self.paths[next_id] = open_path(next_id, spec, self)
            self._spawn(self._open(next_id))
            next_id += 1

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in self._tasks:
            task.cancel()
        for path in self.paths.values():
            path.close()
        if self.driver is not None:
            self.driver.stop()
        if self._control is not None:
            self._control.close()
            self._control = None

    # -- observation -------------------------------------------------------------------------

    async def _start_control(self) -> None:
        """Expose this session to `dupsession status`; a failure here never stops the session."""
        try:
            path = control.socket_path("client", str(os.getpid()) + f"-{id(self):x}")
            server = control.ControlServer(path, "client", self.snapshot)
            await server.start()
        except (OSError, control.ControlError) as exc:
            log.info("no control socket (%s): dupsession status will not see this session", exc)
            return
        self._control = server

    def snapshot(self) -> list[dict[str, Any]]:
        """This session for the control channel (its SESSION document)."""
        return [self.report().as_dict()]

    def report(self) -> SessionReport:
        """This session now: the core's snapshot plus what only we know (paths' URLs, errors)."""
        age = self.clock() - self.started
        core = None
        if self.driver is not None:
            state = control.STATE_NAMES[self.driver.state]
            core = dataclasses.replace(self.driver.snapshot(), state=state, age=age)
        opened = {path.id: path for path in core.paths} if core is not None else {}
        labels = short_labels({pid: path.spec for pid, path in self.paths.items()})
        paths = []
        for pid in [*opened, *(pid for pid in self.paths if pid not in opened)]:
            spec = self.paths[pid].spec
            path_core = opened.get(pid)
            if path_core is not None:
                state = path_core.state
            elif core is None or pid not in self._path_errors:
                state = "connecting"
            else:  # never opened (refused, no route): shown, not hidden
                state = "unreachable"
            paths.append(
                PathReport(
                    id=pid,
                    state=state,
                    core=path_core,
                    spec=str(spec),
                    label=labels[pid],
                    uplink=spec.uplink or "default",
                    via=spec.via,
                    error=self._path_errors.get(pid),
                )
            )
        return SessionReport(
            role="client",
            state="connecting" if core is None else core.state,
            age=age,
            bytes_out=0 if core is None else core.bytes_out,
            bytes_in=0 if core is None else core.bytes_in,
            paths=tuple(paths),
            target=self.target,
            origin=self.origin,
            core=core,
        )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def exit_code_for(event: events.SessionClosed) -> ExitCode:
    return _CLOSE_TO_EXIT.get(event.code, ExitCode.ERROR)  # a peer's unknown code: ERROR


async def wait_closed(client: Client) -> events.SessionClosed:
    assert client.result is not None
    return await client.result
