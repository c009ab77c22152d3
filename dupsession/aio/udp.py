"""Batched datagram I/O: UDP GSO on send, UDP GRO on receive, plain calls where unsupported.

Python has no sendmmsg/recvmmsg, so a frame per syscall caps a UDP path at a few tens of
thousands of frames per second, and on loopback every `send` also pays the receiver's whole
kernel path. Linux (4.18+ for GSO, 5.0+ for GRO) lets one call carry many datagrams instead:

- GSO: one `sendmsg` with a `UDP_SEGMENT` control message carries up to `GSO_MAX_SEGMENTS`
  datagrams of one size (the last may be shorter); the kernel (or the NIC) cuts them. On the
  wire they are exactly the datagrams a loop of `send` calls would have sent.
- GRO: with `UDP_GRO` set, one `recvmsg` may return several datagrams of one flow back to
  back, with their segment size in a control message; `recv_frames` cuts them apart again.

Either feature is switched off for a socket the first time the kernel refuses it, and the
plain one-call-per-datagram path takes over; nothing else changes.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

from dupsession.aio.sockets import RECV_SIZE  # a GRO read: up to 64 KiB of datagrams

#: From <linux/udp.h>; not all Pythons name them.
UDP_SEGMENT = 103
UDP_GRO = 104
SOL_UDP = getattr(socket, "SOL_UDP", 17)
#: The kernel's UDP_MAX_SEGMENTS is 64 on older kernels (128 on newer ones).
GSO_MAX_SEGMENTS = 64
#: One GSO send stays below the largest IPv4 UDP payload (65507).
GSO_MAX_BYTES = 65000

_SEGMENT = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_ANCILLARY = socket.CMSG_SPACE(_GRO_SIZE.size) if hasattr(socket, "CMSG_SPACE") else 0
#: Errors meaning "this kernel, route or device cannot do GSO": fall back, never retry.
_GSO_UNSUPPORTED = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
_LINUX = sys.platform.startswith("linux")
#: A plain int: `flags & socket.MSG_TRUNC` is an IntFlag operation in Python 3.11, ~1 us of
#: enum machinery per datagram read.
_MSG_TRUNC = int(socket.MSG_TRUNC)


class BatchSocket:
    """One non-blocking UDP socket with batched sends and receives (connected or not)."""

    __slots__ = ("gro", "gso", "sock")

    def __init__(self, sock: socket.socket, batching: bool = True) -> None:
        self.sock = sock
        self.gso = batching and _LINUX and hasattr(sock, "sendmsg")
        self.gro = False
        if batching and _LINUX and _ANCILLARY:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            except OSError:
                pass
            else:
                self.gro = True

    # -- send ------------------------------------------------------------------------------

    def send_frames(self, frames: list[bytes], addr: tuple[str, int] | None = None) -> None:
        """Send each frame as one datagram; a full socket buffer drops the rest (loss).

        A refused send (ICMP port unreachable from an earlier datagram) skips that datagram.
        """
        count = len(frames)
        if count == 1 or not self.gso:
            self._send_plain(frames, addr)
            return
        sendmsg = self.sock.sendmsg
        i = 0
        while i < count:
            size = len(frames[i])
            limit = min(count, i + min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
            j = i + 1
            while j < limit and len(frames[j]) == size:
                j += 1
            if j < limit and len(frames[j]) < size:
                j += 1  # GSO allows one shorter datagram at the end
            if j - i == 1:
                if not self._send_plain(frames[i:j], addr):
                    return
                i = j
                continue
            ancillary = [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))]
            try:
                if addr is None:
                    sendmsg(frames[i:j], ancillary)
                else:
                    sendmsg(frames[i:j], ancillary, 0, addr)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                pass
            except OSError as exc:
                if exc.errno not in _GSO_UNSUPPORTED:
                    raise
                self.gso = False  # this kernel or device cannot: one datagram per call
                self._send_plain(frames[i:], addr)
                return
            i = j

    def _send_plain(self, frames: list[bytes], addr: tuple[str, int] | None) -> bool:
        sock = self.sock
        for frame in frames:
            try:
                if addr is None:
                    sock.send(frame)
                else:
                    sock.sendto(frame, addr)
            except (BlockingIOError, InterruptedError):
                return False
            except ConnectionRefusedError:
                continue
        return True

    # -- receive ---------------------------------------------------------------------------

    def read_connected(self, batch: list[bytes], limit: int) -> None:
        """A connected socket's reads until nothing is waiting or `batch` holds `limit`
        frames: `recv_frames` in a loop, each datagram's frames appended to `batch`.

        One call per wake-up, not one per datagram: the netlab's download client reads ~6,600
        datagrams a second, each alone (veths do no GRO), and each paid a method call, two
        result tuples and a source address (a connected socket's is known): ~0.3 us of ~5 per
        datagram (docs/BENCHMARKS.md, "The downloading client's CPU"). Any error but "nothing
        waiting" propagates, with what was read before it left in `batch`.
        """
        append, sock = batch.append, self.sock
        count = len(batch)
        try:
            if not self.gro:
                recv = sock.recv
                while count < limit:
                    append(recv(RECV_SIZE))
                    count += 1
                return
            recvmsg = sock.recvmsg
            while count < limit:
                data, ancillary, flags, _ = recvmsg(RECV_SIZE, _ANCILLARY)
                if flags & _MSG_TRUNC:
                    continue  # larger than any frame: not ours
                if ancillary:  # a GRO read: several datagrams, cut apart
                    frames = _gro_frames(data, ancillary)
                    batch += frames
                    count += len(frames)
                else:
                    append(data)
                    count += 1
        except (BlockingIOError, InterruptedError):
            return

    def recv_frames(self) -> tuple[list[bytes], tuple[str, int] | None]:
        """One read: the datagrams it held (several when GRO coalesced them) and their source.

        Raises BlockingIOError when nothing is waiting, like `recvfrom`.
        """
        if not self.gro:
            data, addr = self.sock.recvfrom(RECV_SIZE)
            return [data], addr
        data, ancillary, flags, addr = self.sock.recvmsg(RECV_SIZE, _ANCILLARY)
        if flags & _MSG_TRUNC:
            return [], addr  # larger than any frame: not ours
        return _gro_frames(data, ancillary) if ancillary else [data], addr


def _gro_frames(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams of one read: cut at the segment size a UDP_GRO control message gives."""
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size = _GRO_SIZE.unpack_from(value)[0]
            if 0 < size < len(data):
                return [data[k : k + size] for k in range(0, len(data), size)]
    return [data]
