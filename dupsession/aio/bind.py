"""Uplink binding: pin a path's socket to an interface or a source address."""

from __future__ import annotations

import ipaddress
import socket


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
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
