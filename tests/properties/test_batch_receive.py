"""Frames taken a read at a time (`Session.receive_frames`, the stream's next frames as one run)
leave a session exactly as the same frames taken one by one (`receive_frame`) do.

The simulator hands frames over one at a time, so the batch path gets its own property: one
client's frames (both path kinds, ACKs among them), in any order, repeated, forged or cut
short, in batches of any size, go to two exits; their streams, counters, arrival records and
ACK state must be the same.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import events, wire
from dupsession.core.negotiate import Compress, Features
from dupsession.core.paths import PathState
from dupsession.core.session import Role, Session, SessionConfig
from tests.support.session import T0, handshake
from tests.support.strategies import PROPERTY

pytestmark = pytest.mark.timeout(300)

#: Runs of consecutive frames of one path's output: (first index, count, damage to the first
#: one: 0 none, 1 a flipped bit, 2 cut short). Runs make the in-order stretches a transfer is
#: made of; their starts put them in any order, repeated, with holes.
Run = tuple[int, int, int]
batches = st.lists(
    st.tuples(
        st.sampled_from([0, 1]),  # path 0 a datagram path, 1 a stream path
        st.lists(
            st.tuples(
                st.integers(0, 3) | st.integers(0, 150),  # often at the stream's start
                st.integers(1, 40),
                st.sampled_from([0, 0, 0, 1, 2]),
            ),
            max_size=4,
        ),
    ),
    max_size=20,
)


def _damaged(frame: bytes, damage: int, at: int) -> bytes:
    if damage == 1:
        flipped = bytearray(frame)
        flipped[at % len(frame)] ^= 0x10
        return bytes(flipped)
    if damage == 2:
        return frame[: at % len(frame)]
    return frame


def _state(session: Session) -> tuple[object, ...]:
    receiver, acks = session.receiver, session.acks
    paths = tuple(
        (
            p.data_recv,
            p.bytes_recv,
            p.last_recv,
            p.bad_frames,
            p.inbound.frames,
            p.inbound.first,
            p.peer_ts_us,
            p.peer_ts_recv,  # (`echo recv`: the count before the DATA behind the ACK)
        )
        for p in session.paths.values()
    )
    return (
        receiver.cumulative,
        sorted(receiver.held),
        receiver.held_bytes,
        receiver.fin_delivered,
        list(receiver.ranges),
        receiver.arrivals,
        session.duplicates,
        session.bad_frames,
        session.stale_frames,
        session.bytes_in,
        session.state,
        acks.count,
        acks.since,
        paths,
    )


def _stream(session: Session) -> tuple[bytes, list[str]]:
    data, others = [], []
    while (event := session.next_event()) is not None:
        if isinstance(event, events.StreamData):
            data.append(event.data)
        else:
            others.append(type(event).__name__)
    return b"".join(data), others


@settings(PROPERTY, max_examples=300)
@given(
    size=st.integers(0, 120_000),
    fin=st.booleans(),
    encrypt=st.booleans(),
    compress=st.sampled_from(list(Compress)),
    window_frames=st.sampled_from([4, 40, 8192]),
    arrivals=batches,
    in_order_first=st.booleans(),
    datagram_path=st.booleans(),
)
def test_a_batch_leaves_the_session_as_frames_one_by_one_do(
    size: int,
    fin: bool,
    encrypt: bool,
    compress: Compress,
    window_frames: int,
    arrivals: list[tuple[int, list[Run]]],
    in_order_first: bool,
    datagram_path: bool,
) -> None:
    sid, keys = handshake()
    features = Features(encrypt=encrypt, compress=compress)
    client = Session(Role.CLIENT, sid, keys, T0, None, features)
    config = SessionConfig(window_frames=window_frames)
    one_by_one = Session(Role.EXIT, sid, keys, T0, config, features)
    batched = Session(Role.EXIT, sid, keys, T0, config, features)
    for session in (client, one_by_one, batched):
        if datagram_path or session is not client:  # without it: 16 KiB frames, too big for it
            session.add_path(0, True, T0)
        session.add_path(1, False, T0)
    client.send(bytes(range(256)) * (size // 256) + bytes(size % 256))
    if fin:
        client.close_stream()
    out = client.transmit(T0)
    if in_order_first:  # a bulk transfer's usual start: the stream path's frames, in order
        arrivals = [(1, [(0, len(out.get(1, [])), 0)]), *arrivals]
    now = T0
    for path_id, picks in arrivals:
        frames = out.get(path_id) or out.get(1 - path_id, [])
        if not frames:
            continue
        batch = [
            _damaged(frames[i % len(frames)], damage if i == start else 0, i)
            for start, count, damage in picks
            for i in range(start, start + count)
        ]
        now += 0.001
        for frame in batch:
            one_by_one.receive_frame(frame, now, path_id)
        batched.receive_frames(batch, now, path_id)
    assert _state(batched) == _state(one_by_one)
    lags = [
        (a.inbound.lag, b.inbound.lag)
        for a, b in zip(one_by_one.paths.values(), batched.paths.values(), strict=True)
    ]
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in lags)
    assert _stream(batched) == _stream(one_by_one)
    # and the ACKs they owe say the same
    assert one_by_one.transmit(now).keys() == batched.transmit(now).keys()


def test_the_property_can_fail() -> None:
    """The control: a frame the batch skips shows in the compared state."""
    sid, keys = handshake()
    client = Session(Role.CLIENT, sid, keys, T0)
    a, b = Session(Role.EXIT, sid, keys, T0), Session(Role.EXIT, sid, keys, T0)
    for session in (client, a, b):
        session.add_path(1, False, T0)
    client.send(b"x" * 5000)
    frames = [f for f in client.transmit(T0)[1] if f[1] == wire.FrameType.DATA]
    for frame in frames:
        a.receive_frame(frame, T0 + 0.001, 1)
    b.receive_frames(frames[:-1], T0 + 0.001, 1)
    assert _state(a) != _state(b)


def test_a_stream_sized_frame_on_a_datagram_path_is_refused_in_a_batch_too() -> None:
    """A 16 KiB frame (cut while only stream paths existed) arriving on a datagram path is
    over that path kind's maximum (review A12): bad, in a run as one by one."""
    sid, keys = handshake()
    client = Session(Role.CLIENT, sid, keys, T0)
    client.add_path(1, False, T0)
    client.send(bytes(40_000))
    frames = [f for f in client.transmit(T0)[1] if f[1] == wire.FrameType.DATA]
    assert len(frames[0]) > wire.MAX_DATAGRAM_FRAME
    client.add_path(0, True, T0)  # joins later: its probe makes the path live at the exits
    (probe,) = client.transmit(T0)[0]
    one_by_one, batched = Session(Role.EXIT, sid, keys, T0), Session(Role.EXIT, sid, keys, T0)
    for session in (one_by_one, batched):
        session.add_path(0, True, T0)
        session.receive_frame(probe, T0, 0)
        assert session.paths[0].state is PathState.UP
    for frame in frames:
        one_by_one.receive_frame(frame, T0 + 0.001, 0)
    batched.receive_frames(frames, T0 + 0.001, 0)
    assert batched.bad_frames == one_by_one.bad_frames == len(frames)
    assert _state(batched) == _state(one_by_one)
