"""The client's UDP path hands one wake-up's datagrams to its owner as one batch.

Without GRO (the netlab's veths, most NICs' UDP) every read is one datagram, and a
download's client fed its session one frame per call: 5,800 `frames_received` calls a second
on the netlab (docs/BENCHMARKS.md, "CPU per frame on the netlab"). Now one call per wake-up,
the datagrams in arrival order; an error report comes after the frames read before it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from dupsession.aio.transports import UdpPath
from dupsession.aio.udp import BatchSocket


class Owner:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def path_frames(self, path_id: int, frames: list[bytes]) -> None:
        self.calls.append((path_id, list(frames)))

    def path_error(self, path_id: int, reason: str) -> None:
        self.calls.append(("error", path_id))


class Loop:
    def remove_reader(self, fd: int) -> None:
        pass

    def add_reader(self, fd: int, callback: object) -> None:
        pass


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with closing(receiver), closing(sender):
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.connect(receiver.getsockname())
        receiver.connect(sender.getsockname())
        yield receiver, sender


def udp_path(sock: socket.socket, owner: Owner) -> UdpPath:
    path: Any = object.__new__(UdpPath)
    path.path_id, path.owner, path._loop = 3, owner, Loop()
    path._sock, path._io = sock, BatchSocket(sock)
    return path  # type: ignore[no-any-return]


def test_one_wake_up_is_one_batch_in_arrival_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    owner = Owner()
    path = udp_path(receiver, owner)
    datagrams = [bytes([i]) * (40 + i) for i in range(7)]
    for datagram in datagrams:
        sender.send(datagram)
    path._readable()
    assert owner.calls == [(3, datagrams)]  # was seven calls of one frame each
    path._readable()  # drained: nothing more, no empty batch
    assert owner.calls == [(3, datagrams)]


def test_frames_read_before_an_error_go_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, _ = pair
    owner = Owner()
    path = udp_path(receiver, owner)

    class Scripted:
        sock = receiver

        def read_connected(self, batch: list[bytes], limit: int) -> None:
            batch += [b"a", b"b", b"c"]
            raise ConnectionRefusedError

    path._io = Scripted()  # type: ignore[assignment]
    path._readable()
    assert owner.calls == [(3, [b"a", b"b", b"c"]), ("error", 3)]


@pytest.mark.parametrize("gro", [True, False])
def test_a_gso_send_reads_back_as_its_datagrams(
    pair: tuple[socket.socket, socket.socket], gro: bool
) -> None:
    """One `read_connected` per wake-up takes every datagram waiting, with or without GRO
    (on loopback a GSO send reaches a UDP_GRO socket as one coalesced read, cut apart by the
    control message's segment size), in order, up to its limit, the rest left waiting."""
    receiver, sender = pair
    io = BatchSocket(receiver, batching=gro)
    assert io.gro is gro
    frames = [bytes([i]) * 100 for i in range(9)] + [b"z" * 60]
    BatchSocket(sender).send_frames(frames)
    BatchSocket(sender).send_frames([b"y" * 80])
    batch: list[bytes] = [b"before"]
    io.read_connected(batch, 1 + len(frames))
    assert batch == [b"before", *frames]
    io.read_connected(batch, 100)
    assert batch[-1] == b"y" * 80  # left waiting past the limit, read next time
    io.read_connected(batch, 100)  # nothing waiting: returns, raises nothing
    assert len(batch) == 2 + len(frames)
