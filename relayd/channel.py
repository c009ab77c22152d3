"""The dispatcher <-> session worker channel: one SOCK_SEQPACKET socketpair per worker.

A SEQPACKET socket keeps message boundaries and order and reports the peer's death as EOF, so
each message is one packet: a kind byte, then its body. The channel is inherited by
descriptor number (never a path in the file system), so only the two processes hold it.

Dispatcher -> worker:
  CONFIG    pickle of (ExitConfig, listen address, log level): first message, again on SIGHUP
  ASSIGN    session id (8): this worker now serves that session
  DATAGRAM  source address, datagram (a HELLO, a JOIN, a datagram from an address the
            worker has no socket for yet)
  STREAM    token (8), peer address, the bytes already read; the TCP connection's descriptor
            (SCM_RIGHTS)
  QUIT      reason (UTF-8): close every session (CLOSE three times) and exit
Worker -> dispatcher:
  READY     (empty): the worker runs and read its CONFIG
  SNAPSHOT  JSON list of SESSION documents (docs/CONTROL.md)
  BOUNCE    source address, datagram: reached the worker's socket but is not its session's
  SETTLED   token (8): the STREAM's connection bound to the session or closed (until then it
            counts against the dispatcher's limits on unauthenticated connections)

CONFIG is a pickle because it comes from the parent that spawned the worker, over a channel no
one else holds; the worker's messages to the dispatcher are JSON or raw bytes, parsed with
bounds checks: a worker that runs network input never feeds the dispatcher a pickle.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios

CONFIG, ASSIGN, DATAGRAM, STREAM, QUIT = b"C", b"A", b"U", b"T", b"Q"
READY, SNAPSHOT, BOUNCE, SETTLED = b"R", b"S", b"B", b"D"

#: Largest message: a TCP connection's first read (framing.READ_SIZE plus a held partial frame)
#: with its header. The socket buffers are sized for a few of them.
MAX_MESSAGE = 512 * 1024
CHANNEL_BUFFER = 2 * 1024 * 1024

_ADDR = struct.Struct("!BH")  # host length, port; then the host (UTF-8)
TOKEN = struct.Struct("!Q")  #: a STREAM's, echoed by its SETTLED


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(dispatcher's end, worker's end), both with room for `MAX_MESSAGE` packets."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (mine, theirs):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, CHANNEL_BUFFER)
    mine.setblocking(False)
    return mine, theirs


def send_buffer(sock: socket.socket) -> int:
    """The send buffer the kernel gave (bytes of skb truesize): `CHANNEL_BUFFER` asked for,
    at most 2 x net.core.wmem_max (416 KiB on a default kernel)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def queued(sock: socket.socket) -> int:
    """Bytes sent and not yet read by the peer (SIOCOUTQ, in `send_buffer`'s units)."""
    (count,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))
    return int(count)


def pack_addr(addr: tuple[str, int]) -> bytes:
    host = str(addr[0]).encode()
    return _ADDR.pack(len(host), int(addr[1])) + host


def unpack_addr(body: bytes | memoryview) -> tuple[tuple[str, int], int]:
    """(address, offset of what follows); ValueError for a short or bad body."""
    if len(body) < _ADDR.size:
        raise ValueError("short address")
    size, port = _ADDR.unpack_from(body)
    end = _ADDR.size + size
    if len(body) < end:
        raise ValueError("short address")
    return (bytes(body[_ADDR.size : end]).decode(), port), end


def datagram(kind: bytes, data: bytes, addr: tuple[str, int]) -> bytes:
    """A DATAGRAM or BOUNCE message."""
    return kind + pack_addr(addr) + data


def send(sock: socket.socket, message: bytes, fds: list[int] | None = None) -> bool:
    """Send one message without blocking; False if it did not go (a full channel is loss,
    as a full socket buffer is on the wire; a dead peer shows as EOF on the reader)."""
    try:
        if fds:
            socket.send_fds(sock, [message], fds)
        else:
            sock.send(message)
    except (BlockingIOError, InterruptedError, BrokenPipeError, ConnectionResetError):
        return False
    except OSError:  # EMSGSIZE: larger than this machine's socket buffers allow
        return False
    return True
