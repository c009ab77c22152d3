"""Stream paths keep no deep queue in the kernel: TCP_NOTSENT_LOWAT on every path socket."""

from __future__ import annotations

import socket
import sys

import pytest

from dupsession.aio.bind import NOTSENT_LOWAT, TCP_NOTSENT_LOWAT, make_socket, tune_stream
from tests.prereq import missing


@pytest.fixture(autouse=True)
def linux() -> None:
    """TCP_NOTSENT_LOWAT is a Linux socket option: skip elsewhere, fail under CI=true."""
    if not sys.platform.startswith("linux"):
        missing("TCP_NOTSENT_LOWAT is a Linux socket option")


def test_client_stream_sockets_cap_unsent_bytes_and_disable_nagle() -> None:
    sock = make_socket(socket.AF_INET, socket.SOCK_STREAM, None)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == NOTSENT_LOWAT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


def test_exit_side_sockets_get_the_same_tuning() -> None:
    """relayd tunes each accepted path connection with the same function."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        tune_stream(accepted)
        assert accepted.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == NOTSENT_LOWAT
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        for s in (accepted, client, server):
            s.close()
