"""Socket helpers both ends share: name resolution, buffer sizes, the UDP listener, limits.

The client's paths (`transports`, `sshpath`) and relayd's listeners (`relayd.server`,
`relayd.relay`) take these from here, so a buffer size or a read batch means the same thing
on both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

#: Datagrams read per wake-up before yielding to the loop (fairness between paths).
READ_BATCH = 256
#: One read: the largest UDP payload (and a GRO read of coalesced datagrams) fits.
RECV_SIZE = 65535
#: Socket buffers: big enough for a burst of a bandwidth-delay product of frames.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Stream paths report "not writable" above this much queued data.
WRITE_HIGH_WATER = 1024 * 1024
#: A TCP or SSH connect gives up after this long (s).
CONNECT_TIMEOUT = 10.0


async def resolve(host: str, port: int, kind: int) -> tuple[int, tuple[str, int]]:
    """The first address `host:port` resolves to, as (family, (address, port))."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=kind)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, addr = infos[0]
    return family, (str(addr[0]), int(addr[1]))


def tune_buffers(sock: socket.socket) -> None:
    """Ask for `SOCKET_BUFFER` each way; the kernel may grant less (net.core.*mem_max)."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


async def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to `host:port` with large buffers, for listeners."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        tune_buffers(sock)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock
