"""Uplink binding: pin a path's socket to an interface or a source address."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

#: Linux's TCP_NOTSENT_LOWAT (not named by every Python).
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
#: Unsent bytes the kernel holds for a stream path before it stops taking more (bytes). What
#: it holds beyond the congestion window is a queue no scheduler can reorder or drop; kept
#: small, the rest waits in the transport's buffer, whose high-water mark turns the path
#: unwritable for the core (backpressure), and the kernel's own congestion control (BBR or
#: CUBIC) sets what is in flight. 128 KiB still keeps a loopback or LAN path busy.
NOTSENT_LOWAT = 128 * 1024
#: Linux's TCP_CONGESTION (not named by every Python).
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
#: The kernel congestion control a stream path asks for. Paths are often lossy links (mobile,
#: Wi-Fi): CUBIC halves its window on each loss, random or not; BBR models the path and holds
#: its rate (not measured here against CUBIC: the netlab's namespaces already ran BBR). A
#: kernel without it (or one that does not let an unprivileged process pick it:
#: net.ipv4.tcp_allowed_congestion_control) keeps its default; `stream_congestion` says which
#: one a socket runs.
STREAM_CONGESTION = b"bbr"


def tune_stream(sock: socket.socket) -> None:
    """Every stream path's socket: no Nagle (keystrokes go at once), no deep unsent queue in
    the kernel (a transfer must not bury the next keystroke), BBR where the kernel has it."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Not Linux: the transport's high-water mark alone bounds our queue.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
    # Not available or not allowed: the kernel's default, as a plain ssh connection gets.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, STREAM_CONGESTION)


def stream_congestion(sock: socket.socket) -> str | None:
    """The kernel congestion control `sock` runs ("bbr", "cubic"), None where not Linux."""
    try:
        name = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16)
    except OSError:
        return None
    return name.split(b"\0", 1)[0].decode(errors="replace")


def is_address(uplink: str) -> bool:
    try:
        ipaddress.ip_address(uplink)
    except ValueError:
        return False
    return True


def make_socket(family: int, kind: int, uplink: str | None) -> socket.socket:
    """A non-blocking socket bound to `uplink` (an interface name or a source address).

    An interface uses SO_BINDTODEVICE (root or CAP_NET_RAW): routing then follows that
    interface whatever the default route says, which is what "use this uplink" means.
    """
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            tune_stream(sock)
        if uplink:
            if is_address(uplink):
                sock.bind((uplink, 0))
            else:
                try:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, uplink.encode() + b"\0"
                    )
                except PermissionError as exc:
                    raise PermissionError(
                        f"binding to interface {uplink!r} needs root or CAP_NET_RAW; "
                        "bind to the interface's address instead"
                    ) from exc
    except BaseException:
        sock.close()
        raise
    return sock
