"""Which paths a due ACK goes on: every datagram path; a stream path only with news of its own.

A stream path loses nothing, so its copy of an ACK the datagram paths carry repeats their news,
and each copy costs the peer a read and a whole ACK's processing (relayd's download at 5 %
loss: the two TCP paths' copies were half of its ~1,100 ACKs a second). A stream path still
gets the due ACK when it took DATA since its last one, carries ours, when the window reopens,
and once its last one is an eighth of its smoothed RTT old (its RTT samples, which decide
whether bulk data may use it at all: tests/sim/test_one_flow_per_link.py).
"""

from __future__ import annotations

from dupsession.core import wire
from dupsession.core.session import Session
from tests.support.session import T0, Out, Pair, data_frames, drain

DATAGRAM, STREAM = 0, 1


def _pair() -> tuple[Pair, float]:
    pair = Pair(paths=0)
    for session in (pair.client, pair.exit):
        session.add_path(DATAGRAM, True, T0)
        session.add_path(STREAM, False, T0)
    return pair, pair.connect()


def _exit_frames(exit_: Session, now: float, count: int) -> list[bytes]:
    """`count` DATA frames of the exit's stream, in order (taken by hand, paths aside)."""
    exit_.send(bytes(range(256)) * (count * 5))
    frames: list[bytes] = []
    for step in range(1000):
        for frame in data_frames(exit_.transmit(now + step * 0.01), None):
            if frame not in frames:  # one copy of each (the policy may send it on both paths)
                frames.append(frame)
        if len(frames) >= count:
            return frames[:count]
    raise AssertionError("the exit sent too little")


def _acked_paths(out: Out) -> set[int]:
    return {pid for pid, frames in out.items() if any(f[1] == wire.FrameType.ACK for f in frames)}


def test_a_due_ack_skips_a_stream_path_without_news_of_its_own() -> None:
    pair, now = _pair()
    client = pair.client
    frames = _exit_frames(pair.exit, now, 6 * 16)
    batches = [frames[i : i + 16] for i in range(0, len(frames), 16)]  # an ACK due per batch
    gap = client.paths[STREAM].rtt.srtt / 8
    assert gap > 0.004

    def feed(path_id: int, at: float) -> set[int]:
        for frame in batches.pop(0):
            client.receive_frame(frame, at, path_id)
        drain(client)
        return _acked_paths(client.transmit(at))

    t = now + 0.001
    # the stream path's last ACK (the connect's probe) is older than srtt / 8: both paths
    assert feed(DATAGRAM, t) == {DATAGRAM, STREAM}
    # 1 ms later, news on the datagram path only: the stream path has nothing of its own
    assert feed(DATAGRAM, t + 0.001) == {DATAGRAM}
    # DATA that came on the stream path is acked there too
    assert feed(STREAM, t + 0.002) == {DATAGRAM, STREAM}
    # a reopened window goes everywhere (DATA taken while frozen moved it)
    client.pause_receiving(True)
    for frame in batches.pop(0):
        client.receive_frame(frame, t + 0.003, DATAGRAM)
    client.pause_receiving(False)
    assert client.acks.window_update
    assert _acked_paths(client.transmit(t + 0.003)) == {DATAGRAM, STREAM}
    assert feed(DATAGRAM, t + 0.004) == {DATAGRAM}
    # srtt / 8 after its last ACK the stream path gets the due one again (its RTT samples)
    assert feed(DATAGRAM, t + 0.003 + gap) == {DATAGRAM, STREAM}


def test_a_stream_path_carrying_our_data_takes_the_due_ack() -> None:
    """A stream path that carries our DATA in the batch takes the due ACK with it: it costs
    no extra write there, and the peer's RTT sample of the path stays fresh (review J8)."""
    pair, now = _pair()
    client = pair.client
    frames = _exit_frames(pair.exit, now, 32)
    t = now + 0.001
    for frame in frames[:16]:
        client.receive_frame(frame, t, DATAGRAM)
    drain(client)
    assert _acked_paths(client.transmit(t)) == {DATAGRAM, STREAM}  # the first: srtt/8 old
    for frame in frames[16:]:
        client.receive_frame(frame, t + 0.001, DATAGRAM)
    drain(client)
    client.send(b"k")  # a keystroke: it goes on every path, the stream path too
    out = client.transmit(t + 0.001)
    assert any(f[1] == wire.FrameType.DATA for f in out.get(STREAM, []))
    assert _acked_paths(out) == {DATAGRAM, STREAM}
