"""`dupsession forward`: a local TCP port whose every connection is its own session.

Like `ssh -L`, with nothing to set up on the target: a VNC viewer (or anything speaking TCP)
connects to the local port, and its bytes ride every path to the exit, which connects to the
target (its allow-list applies). Rules, each with its reason:
- One session per accepted connection, so one viewer's failure or slow link never touches
  another's; sessions run side by side, each in `dupsession status`.
- The listener outlives any session: a failed handshake or a lost session closes that one
  connection and says why on stderr, nothing else.
- Encryption is on by default (RFB and most forwarded protocols are plaintext); `--no-encrypt`
  or `encrypt = false` turn it off.
- Half-close passes through both ways: the local side's EOF becomes a FIN to the target and
  the target's FIN becomes our EOF, with the other direction still open (no lost bytes).
- Nothing is read from the local connection until the session is up (the handshake may take
  a while on a bad network), so its bytes wait in the kernel, bounded by the socket buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass

from dupsession.client import Client, ExitCode, SessionFailed, exit_code_for
from dupsession.core import wire
from dupsession.core.negotiate import Features
from dupsession.core.session import SessionState
from dupsession.keyfile import KeyFileError, load
from dupsession.settings import ClientSettings, ForwardSpec

log = logging.getLogger(__name__)

#: Above this many bytes queued toward the local peer, stop opening the exit's window.
LOCAL_HIGH_WATER = 1024 * 1024
#: At shutdown, how long (s) live sessions get to send their CLOSE before the loop ends.
SHUTDOWN_GRACE = 0.2


def _say(message: str) -> None:
    """One line on stderr: what the user of a long-running forward needs to see."""
    print(f"dupsession forward: {message}", file=sys.stderr, flush=True)


class LocalConnection(asyncio.Protocol):
    """One accepted connection: the session's byte stream (client.ByteStream) on a socket."""

    def __init__(self, forwarder: Forwarder, spec: ForwardSpec, settings: ClientSettings) -> None:
        self.forwarder = forwarder
        self.spec = spec
        self.settings = settings
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.peer = "?"
        self.task: asyncio.Task[None] | None = None
        # Bytes (and EOF) that arrive before the session is up wait here. Bounded: the first
        # chunk pauses reading (uvloop starts reading after `connection_made`, so pausing
        # there alone is not enough).
        self._early: list[bytes] = []
        self._early_eof = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=LOCAL_HIGH_WATER)  # type: ignore[attr-defined]
        transport.pause_reading()  # type: ignore[attr-defined]  # until the session is up
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.forwarder.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.client.local_data(data)
        else:
            self._early.append(data)
            self.pause_reading()

    def eof_received(self) -> bool:
        if self.client is not None:
            self.client.local_eof()
        else:
            self._early_eof = True
        return True  # keep our write side open: half-close

    def pause_writing(self) -> None:
        if self.client is not None and self.client.driver is not None:
            self.client.driver.pause_receiving(True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.local_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        client = self.client
        if client is not None and client.driver is not None and exc is not None:
            # The local peer is gone (reset): nothing the target says can be delivered.
            driver = client.driver
            driver.abort(wire.CloseCode.NORMAL, f"local connection lost: {exc}")

    # -- client.ByteStream ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(parts)

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    def is_congested(self) -> bool:
        return (
            self.transport is not None and self.transport.get_write_buffer_size() > LOCAL_HIGH_WATER
        )

    # -- the session ---------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        encrypt = settings.encrypt if settings.encrypt is not None else True
        client = Client(
            settings,
            self.spec.target,
            self.forwarder.psk,
            Features(
                encrypt=encrypt,
                compress=settings.compress,
                schedule=settings.schedule(),
                jumbo=True,
            ),
        )
        client.origin = f"forward {self.spec.bind}:{self.spec.port} from {self.peer}"
        try:
            await client.connect()
            if self.transport is None:  # the local peer left during the handshake
                raise SessionFailed(ExitCode.OK, "local connection closed before the session")
            self.client = client
            client.stream = self
            for chunk in self._early:
                client.local_data(chunk)
            self._early.clear()
            if self._early_eof:
                client.local_eof()
            else:
                self.resume_reading()
            assert client.result is not None
            event = await client.result
            code = exit_code_for(event)
            if code != ExitCode.OK:
                _say(f"{self.spec}: session for {self.peer} ended: {event.reason}")
            else:
                log.info("%s: session for %s ended: %s", self.spec, self.peer, event.reason)
        except SessionFailed as exc:
            if exc.code != ExitCode.OK:
                _say(f"{self.spec}: connection from {self.peer} failed: {exc}")
        except Exception as exc:  # the listener must survive whatever one session does
            _say(f"{self.spec}: connection from {self.peer} failed: {exc!r}")
            log.debug("session failure", exc_info=True)
        finally:
            driver = client.driver
            if driver is not None and driver.state is not SessionState.CLOSED:
                # The exit already opened the target for this session: tell it (CLOSE on every
                # path) instead of leaving both for its grace period (review A3).
                driver.abort(wire.CloseCode.NORMAL, "local connection closed")
            client.close()
            if self.transport is not None:
                self.transport.close()  # after what is buffered has gone out
            self.forwarder.connections.discard(self)

    def abort(self, reason: str) -> None:
        """Shutdown: tell the exit (CLOSE on every path), then let go of the local socket."""
        client = self.client
        if client is not None and client.driver is not None:
            driver = client.driver
            driver.abort(wire.CloseCode.NORMAL, reason)
        elif self.task is not None:
            self.task.cancel()


@dataclass
class Listener:
    spec: ForwardSpec
    server: asyncio.Server

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]  # type: ignore[no-any-return]


class Forwarder:
    """Listening sockets for one or more forwards, and the sessions of their connections."""

    def __init__(self, psk: bytes) -> None:
        self.psk = psk
        self.listeners: list[Listener] = []
        self.connections: set[LocalConnection] = set()

    async def listen(self, spec: ForwardSpec, settings: ClientSettings) -> Listener:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: LocalConnection(self, spec, settings), spec.bind, spec.port, reuse_address=True
        )
        listener = Listener(spec, server)
        self.listeners.append(listener)
        return listener

    async def close(self, reason: str) -> None:
        for listener in self.listeners:
            listener.server.close()
        for conn in list(self.connections):
            conn.abort(reason)
        if self.connections:
            await asyncio.sleep(SHUTDOWN_GRACE)  # the CLOSE frames go out, sessions wind down
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 1.0)


async def run(forwards: list[tuple[ForwardSpec, ClientSettings]]) -> int:
    """Serve `forwards` until SIGINT/SIGTERM; return the process exit code."""
    try:
        psks = {settings.key_path: load(settings.key_path) for _, settings in forwards}
    except KeyFileError as exc:
        _say(str(exc))
        return ExitCode.USAGE
    if len(set(psks.values())) > 1:
        _say("every forward must use the same key file in one process")
        return ExitCode.USAGE
    forwarder = Forwarder(next(iter(psks.values())))
    try:
        for spec, settings in forwards:
            listener = await forwarder.listen(spec, settings)
            bind, port = listener.address
            shown = f"[{bind}]" if ":" in bind else bind
            _say(f"listening on {shown}:{port} -> {spec.target} (through the exit)")
    except OSError as exc:
        _say(f"cannot listen: {exc}")
        await forwarder.close("forward failed to start")
        return ExitCode.USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await forwarder.close("forward stopped")
    return ExitCode.OK
