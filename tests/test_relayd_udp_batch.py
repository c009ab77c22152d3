"""relayd's UDP input batching keeps arrival order (review F4).

`ExitServer._udp_readable` with a scripted socket (only the dispatch: no keys, no sessions):
runs of DATA from one known path address of one session go to its driver as one
`frames_received` call; anything else (an ACK, another session, another address, an unknown
address) flushes the run first and is handled alone, in arrival order."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dupsession.core import wire
from relayd.server import PROMPT_INPUT, ExitServer

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
            frames_received=lambda frames, pid: log.append(("run", sid, pid, list(frames))),
            prompt=lambda: None,
        )
        return SimpleNamespace(driver=driver, addresses=SimpleNamespace(path_of=book.get))

    server: Any = object.__new__(ExitServer)
    server.sessions = {S1: session(S1, {A: 0, B: 1}), S2: session(S2, {C: 0})}
    server._udp_frame = lambda d, addr: log.append(("alone", d, addr))
    server._poked = []  # no driver here pokes
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


def test_a_lone_short_frame_is_flushed_at_once_and_every_poked_session_at_the_read_end() -> None:
    """A keystroke's or an echo's datagram prompts its session's driver as soon as it is fed
    (`SessionDriver.prompt` flushes it if the session is interactive), not after the rest of
    the read (up to READ_BATCH datagrams of other sessions); a run of a transfer's frames
    does not, and every session poked during the read is prompted when the read ends."""
    log: list[Any] = []
    poked: list[Any] = []

    def session(sid: bytes) -> Any:
        def fed(frames: list[bytes], pid: int) -> None:
            log.append(("run", sid, len(frames)))
            if driver not in poked:  # as `SessionDriver.poke`: once per pending flush
                poked.append(driver)

        driver = SimpleNamespace(frames_received=fed, prompt=lambda: log.append(("prompt", sid)))
        return SimpleNamespace(driver=driver, addresses=SimpleNamespace(path_of={A: 0}.get))

    server: Any = object.__new__(ExitServer)
    server.sessions = {S1: session(S1)}
    server._poked = poked
    big = data(S1, 1) + bytes(PROMPT_INPUT)  # a transfer's full-size frame
    server._udp_io = Io([([data(S1, 0)], A), ([ack(S2, 0)], B), ([big, big], A)])
    server._udp_frame = lambda d, addr: log.append(("alone", addr))
    server._udp_readable()
    assert log == [
        ("run", S1, 1),
        ("prompt", S1),  # at once: before the next datagram is handled
        ("alone", B),
        ("run", S1, 2),  # no prompt for a transfer's run...
        ("prompt", S1),  # ...until the read ends
    ]
    assert poked == []
