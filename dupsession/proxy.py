"""ProxyCommand mode: ssh's stdin/stdout become the session's byte stream.

What ssh expects of a ProxyCommand, and how it is met:
- EOF on our stdin (ssh done sending) becomes a FIN: the exit half-closes the target.
- The target closing becomes EOF on our stdout (the fd is closed), so ssh sees the end.
- Exit code 0 after a clean end; otherwise one line on stderr and a code from `ExitCode`.
- SIGHUP/SIGTERM (ssh tearing us down) sends CLOSE on every path, so the exit lets go of the
  target at once instead of holding it for the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from dupsession.client import Client, ExitCode, SessionFailed, exit_code_for
from dupsession.core import wire
from dupsession.keyfile import KeyFileError, load
from dupsession.settings import ClientSettings

log = logging.getLogger(__name__)

#: Our stdout counts as congested (stop opening the peer's window) above this many bytes.
STDOUT_HIGH_WATER = 1024 * 1024


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.local_data(data)

    def eof_received(self) -> bool:
        self.client.local_eof()
        return False


class _StdoutProtocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def resume_writing(self) -> None:
        self.client.local_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class StdioStream:
    """stdin/stdout as asyncio pipe transports (pipes, sockets and ttys all work)."""

    def __init__(self) -> None:
        self.reader: asyncio.ReadTransport | None = None
        self.writer: asyncio.WriteTransport | None = None

    async def open(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        # Duplicate the fds so closing the transports never closes fds Python itself owns.
        stdin = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        self.reader, _ = await loop.connect_read_pipe(lambda: _StdinProtocol(client), stdin)
        self.writer, _ = await loop.connect_write_pipe(lambda: _StdoutProtocol(client), stdout)
        self.writer.set_write_buffer_limits(high=STDOUT_HIGH_WATER)
        # Our own fd 1 must let go of the pipe too, or ssh never sees EOF on it; /dev/null
        # takes its place so no later socket can inherit fd 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

    def write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    def write_eof(self) -> None:
        if self.writer is not None:
            self.writer.close()  # pipes have no half-close: closing is ssh's EOF

    def pause_reading(self) -> None:
        if self.reader is not None:
            self.reader.pause_reading()

    def resume_reading(self) -> None:
        if self.reader is not None and not self.reader.is_reading():
            with contextlib.suppress(RuntimeError):
                self.reader.resume_reading()

    def is_congested(self) -> bool:
        return self.writer is not None and self.writer.get_write_buffer_size() > STDOUT_HIGH_WATER

    def close(self) -> None:
        for transport in (self.reader, self.writer):
            if transport is not None:
                transport.close()


async def run(settings: ClientSettings, host: str, port: int) -> int:
    """Run one ProxyCommand session; return the process exit code."""
    try:
        psk = load(settings.key_path)
    except KeyFileError as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    client = Client(settings, target, psk)
    stream = StdioStream()
    loop = asyncio.get_running_loop()
    try:
        await client.connect()
        client.stream = stream  # type: ignore[assignment]
        await stream.open(client)
        assert client.driver is not None
        driver = client.driver

        def terminate() -> None:
            driver.session.abort(wire.CloseCode.NORMAL, "client terminated", driver.now())
            driver.flush()

        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, terminate)
        assert client.result is not None
        event = await client.result
    except SessionFailed as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return exc.code
    finally:
        client.close()
        stream.close()
    code = exit_code_for(event)
    if code != ExitCode.OK:
        print(f"dupsession: session ended: {event.reason}", file=sys.stderr)
    elif event.by_peer is False and event.reason == "client terminated":
        log.debug("terminated by signal")
    return code
