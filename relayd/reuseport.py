"""UDP sockets sharing the listener's address: the kernel's demux for session workers.

With `--session-processes`, the listener joins an SO_REUSEPORT group, and a worker opens one
socket per client address in that group, bound to the listener's address and connected to
the client's: Linux delivers a datagram to the connected socket whose 4-tuple it matches
before any unconnected one, so a worker's clients reach it without a hop through the
dispatcher, and everything else still reaches the listener.

One gap closed here: between a fresh socket's bind and its connect, the group's hash would
hand it a share of every other client's datagrams (6 of 8 in a check on this kernel, see
docs/BENCHMARKS.md). A one-instruction classic BPF program on the group ("return 0": the
group's first socket, the listener) makes every datagram that no connected socket matches go
to the listener, never to a socket about to connect (tests/relayd/test_worker_pool.py checks
both: the share without it, none with it).
"""

from __future__ import annotations

import ctypes
import socket
import struct

from dupsession.aio.sockets import tune_buffers

#: From <asm-generic/socket.h>; Python does not name it.
SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_RETURN_ZERO = struct.pack("HBBI", _BPF_RET_K, 0, 0, 0)  # struct sock_filter


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def steer_to_first(sock: socket.socket) -> None:
    """Attach "return 0" to the socket's reuseport group (the listener is its first socket).

    Raises OSError where the kernel cannot (then workers must not be used)."""
    program = ctypes.create_string_buffer(_RETURN_ZERO)
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def listener(host: str, port: int) -> socket.socket:
    """The exit's UDP listener, first of its reuseport group, steering strays to itself."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        tune_buffers(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        steer_to_first(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_socket(local: tuple[str, int], peer: tuple[str, int]) -> socket.socket:
    """A socket in the listener's group, connected to one client address."""
    sock = socket.socket(_family(local[0]), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        tune_buffers(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(local)
        sock.connect(peer)
    except BaseException:
        sock.close()
        raise
    return sock
