"""Stream paths keep no deep queue in the kernel (TCP_NOTSENT_LOWAT on every path socket) and
run BBR where the kernel has it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from dupsession.aio import bind
from dupsession.aio.bind import (
    NOTSENT_LOWAT,
    TCP_NOTSENT_LOWAT,
    make_socket,
    stream_congestion,
    tune_stream,
)
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


def kernel_setting(name: str) -> str:
    return Path(f"/proc/sys/net/ipv4/{name}").read_text().strip()


def test_stream_sockets_run_bbr_where_the_kernel_has_it() -> None:
    """CUBIC halves its window on each loss, random or not; BBR models the path and holds
    its rate. A kernel that cannot give BBR leaves the socket on its default, never an error.
    (Where the default is already bbr this cannot tell the request from the default: the
    next test can.)"""
    sock = make_socket(socket.AF_INET, socket.SOCK_STREAM, None)
    try:
        running = stream_congestion(sock)
        available = kernel_setting("tcp_available_congestion_control").split()
        if "bbr" in available:  # (root may have just loaded tcp_bbr by asking for it)
            assert running == "bbr"
        else:
            assert running == kernel_setting("tcp_congestion_control")
    finally:
        sock.close()


def test_tune_stream_asks_for_its_congestion_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request is really made: asked for reno (built into every Linux kernel, and root may
    pick any available one), a tuned socket runs reno whatever the kernel's default."""
    assert "reno" in kernel_setting("tcp_available_congestion_control").split()
    monkeypatch.setattr(bind, "STREAM_CONGESTION", b"reno")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as untuned:
        assert stream_congestion(untuned) == kernel_setting("tcp_congestion_control")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tune_stream(sock)
        assert stream_congestion(sock) == "reno"
    finally:
        sock.close()


def test_a_congestion_control_the_kernel_lacks_leaves_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bind, "STREAM_CONGESTION", b"no-such-cc")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tune_stream(sock)  # no error: the path opens with the kernel's default
        assert stream_congestion(sock) == kernel_setting("tcp_congestion_control")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
