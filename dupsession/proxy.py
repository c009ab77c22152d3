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
import fcntl
import logging
import os
import signal
import stat
import sys
import threading
from typing import Any

from dupsession.client import Client, ExitCode, SessionFailed, exit_code_for
from dupsession.core import wire
from dupsession.core.negotiate import Features
from dupsession.keyfile import KeyFileError, load
from dupsession.settings import ClientSettings

log = logging.getLogger(__name__)

#: Our stdout counts as congested (stop opening the peer's window) above this many bytes.
STDOUT_HIGH_WATER = 1024 * 1024
#: Pipe capacity asked for on stdin/stdout (Linux F_SETPIPE_SZ; 1 MiB is the unprivileged
#: maximum). The default 64 KiB makes every 64 KiB of a bulk transfer cost a wake-up of both
#: ssh and us, on top of a small read; best effort, the default works too.
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Chunk size of the threads that stand in for stdin/stdout when they are not pollable.
PUMP_CHUNK = 64 * 1024


def _pollable(fd: int) -> bool:
    """Whether the event loop can watch `fd`: pipes and sockets yes; files and ttys no.

    uvloop aborts the whole process (SIGABRT, no message) when asked to watch a regular file
    or /dev/null, and plain asyncio refuses them; `dupsession ... </dev/null >out` must work.
    A terminal it accepts but never reads (typed lines were silently never sent), so
    `dupsession HOST PORT` typed at a shell, like nc, goes through a pump thread too.
    """
    mode = os.fstat(fd).st_mode
    return (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not os.isatty(fd)


def _grow_pipe(fd: int) -> None:
    if stat.S_ISFIFO(os.fstat(fd).st_mode) and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(src: int, dst: int) -> None:
    """Copy `src` to `dst` until EOF or an error on either side, then close both."""
    try:
        while chunk := os.read(src, PUMP_CHUNK):
            _write_all(dst, chunk)
    except OSError as exc:  # the other end went away (EPIPE) or the file failed
        log.debug("stdio pump stopped: %s", exc)
    finally:
        os.close(src)
        os.close(dst)


def _pump(src: int, dst: int) -> threading.Thread:
    thread = threading.Thread(target=_copy, args=(src, dst), name="stdio-pump", daemon=True)
    thread.start()
    return thread


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
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.client.local_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class StdioStream:
    """stdin/stdout as asyncio pipe transports (pipes, sockets, ttys and files all work)."""

    def __init__(self) -> None:
        self.reader: asyncio.ReadTransport | None = None
        self.writer: asyncio.WriteTransport | None = None
        self._stdout: _StdoutProtocol | None = None
        self._out_pump: threading.Thread | None = None
        # Session bytes that arrive while `open` is still awaiting the pipe transports (the
        # exit's target often speaks first: sshd's banner) wait here instead of being lost.
        self._early: list[bytes] = []
        self._early_eof = False

    async def open(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        # Duplicate the fds so closing the transports never closes fds Python itself owns.
        in_fd = os.dup(sys.stdin.fileno())
        out_fd = os.dup(sys.stdout.fileno())
        # A regular file, /dev/null or a terminal cannot be watched by the loop: a thread
        # copies it through a pipe instead, which the loop can watch (and keeps backpressure).
        if not _pollable(in_fd):
            pipe_r, pipe_w = os.pipe()
            _pump(in_fd, pipe_w)
            in_fd = pipe_r
        if not _pollable(out_fd):
            pipe_r, pipe_w = os.pipe()
            self._out_pump = _pump(pipe_r, out_fd)
            out_fd = pipe_w
        _grow_pipe(in_fd)
        _grow_pipe(out_fd)
        stdin = os.fdopen(in_fd, "rb", buffering=0)
        stdout = os.fdopen(out_fd, "wb", buffering=0)
        self.reader, _ = await loop.connect_read_pipe(lambda: _StdinProtocol(client), stdin)
        self.writer, self._stdout = await loop.connect_write_pipe(
            lambda: _StdoutProtocol(client), stdout
        )
        self.writer.set_write_buffer_limits(high=STDOUT_HIGH_WATER)
        for chunk in self._early:
            self.writer.write(chunk)
        self._early.clear()
        if self._early_eof:
            self.writer.close()
        # Our own fd 1 must let go of the pipe too, or ssh never sees EOF on it; /dev/null
        # takes its place so no later socket can inherit fd 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

    def write(self, data: bytes) -> None:
        if self.writer is None:
            self._early.append(data)  # bounded by the session's receive window
        elif not self.writer.is_closing():
            self.writer.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.writer is None:
            self._early.extend(parts)
        elif not self.writer.is_closing():
            self.writer.writelines(parts)

    def write_eof(self) -> None:
        if self.writer is None:
            self._early_eof = True
        else:
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

    async def drained(self, stop: asyncio.Event) -> None:
        """Wait until everything written to stdout has left (or `stop` is set).

        Without this the loop ends with the pipe transport's buffer still full, and the tail
        of the stream (up to STDOUT_HIGH_WATER bytes) is silently lost: a truncated download
        with exit code 0.
        """
        self.close()
        if self._stdout is None:
            return
        stopped = asyncio.ensure_future(stop.wait())
        try:
            waiters: list[asyncio.Future[Any]] = [self._stdout.closed, stopped]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self._out_pump is not None and not stop.is_set():
            await asyncio.to_thread(self._out_pump.join)


async def run(settings: ClientSettings, host: str, port: int) -> int:
    """Run one ProxyCommand session; return the process exit code."""
    try:
        psk = load(settings.key_path)
    except KeyFileError as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # ssh encrypts its own stream: encrypting it again costs CPU for nothing, unless asked.
    client = Client(
        settings,
        target,
        psk,
        Features(
            encrypt=settings.encrypt is True,
            compress=settings.compress,
            schedule=settings.schedule(),
            jumbo=True,
        ),
    )
    stream = StdioStream()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted = False
    try:
        await client.connect()
        client.stream = stream
        await stream.open(client)
        assert client.driver is not None
        driver = client.driver

        def terminate(sig: signal.Signals) -> None:
            nonlocal interrupted
            interrupted = sig == signal.SIGINT
            stop.set()
            driver.abort(wire.CloseCode.NORMAL, "client terminated")

        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, terminate, sig)
        assert client.result is not None
        event = await client.result
    except SessionFailed as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return exc.code
    finally:
        client.close()
        await stream.drained(stop)
    code = exit_code_for(event)
    if interrupted:  # Ctrl-C in `dupsession HOST PORT` from a terminal: quiet, like nc
        return 128 + signal.SIGINT
    if code != ExitCode.OK:
        print(f"dupsession: session ended: {event.reason}", file=sys.stderr)
    elif event.by_peer is False and event.reason == "client terminated":
        log.debug("terminated by signal")
    return code
