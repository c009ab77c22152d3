"""relayd's UDP input batching keeps arrival order (review F4).

`ExitServer._udp_readable` with a scripted socket (only the dispatch: no keys, no sessions):
runs of DATA from one known path address of one session go to its driver as one
`frames_received` call; anything else (an ACK, another session, another address, an unknown
address) flushes the run first and is handled alone, in arrival order."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dupsession.core import wire
from relayd.server import ExitServer

A, B, C = ("198.18.0.1", 1000), ("198.18.0.2", 2000), ("198.18.0.3", 3000)
S1, S2 = b"\x01" * 8, b"\x02" * 8


def frame(kind: int, sid: bytes, n: int) -> bytes:
    body = bytes([wire.VERSION, kind, 0, 0]) + sid + n.to_bytes(8, "big")
    return body + bytes(64) + bytes(wire.TAG_SIZE)


def data(sid: bytes, n: int) -> bytes:
    return frame(int(wire.FrameType.DATA), sid, n)


def ack(sid: bytes, n: int) -> bytes:
    return frame(int(wire.FrameType.ACK), sid, n)


class Io:
    def __init__(self, reads: list[tuple[list[bytes], tuple[str, int]]]) -> None:
        self.reads = reads

    def recv_frames(self) -> tuple[list[bytes], tuple[str, int]]:
        if not self.reads:
            raise BlockingIOError
        return self.reads.pop(0)


def test_batches_keep_arrival_order() -> None:
    log: list[Any] = []

    def session(sid: bytes, book: dict[tuple[str, int], int]) -> Any:
        driver = SimpleNamespace(
            frames_received=lambda frames, pid: log.append(("run", sid, pid, list(frames)))
        )
        return SimpleNamespace(driver=driver, addresses=SimpleNamespace(path_of=book.get))

    server: Any = object.__new__(ExitServer)
    server.sessions = {S1: session(S1, {A: 0, B: 1}), S2: session(S2, {C: 0})}
    server._udp_frame = lambda d, addr: log.append(("alone", d, addr))
    d = [data(S1, i) for i in range(6)]
    e = [data(S2, i) for i in range(2)]
    a = ack(S1, 9)
    unknown = data(S1, 7)
    server._udp_io = Io(
        [
            ([d[0], d[1]], A),  # one GRO read: two DATA
            ([d[2]], A),  # the run goes on across reads
            ([a], A),  # an ACK: flush, then alone
            ([d[3]], A),
            ([e[0]], C),  # another session: flush, new run
            ([e[1]], C),
            ([d[4]], B),  # same session, another path's address: new run
            ([unknown], ("198.18.0.9", 9)),  # unknown address: alone
            ([d[5]], B),
        ]
    )
    server._udp_readable()
    assert log == [
        ("run", S1, 0, [d[0], d[1], d[2]]),
        ("alone", a, A),
        ("run", S1, 0, [d[3]]),
        ("run", S2, 0, [e[0], e[1]]),
        ("run", S1, 1, [d[4]]),
        ("alone", unknown, ("198.18.0.9", 9)),
        ("run", S1, 1, [d[5]]),
    ]
