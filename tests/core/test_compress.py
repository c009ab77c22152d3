"""Stream compression: records round-trip, every write flushed, `auto` follows the stream,
and a decompression bomb is a protocol error with bounded memory."""

from __future__ import annotations

import os
import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import compress, wire
from dupsession.core.compress import (
    RECORD_HEAD,
    RECORD_INPUT,
    CompressionError,
    StreamCompressor,
    StreamDecompressor,
)
from dupsession.core.events import SessionClosed, StreamData, StreamEnded
from dupsession.core.negotiate import Compress, Features
from dupsession.core.session import Role, Session, SessionState
from tests.support.session import handshake

T0 = 100.0
LOG = b"2026-12-02 02:17:40 relayd INFO session 4cc331b: opened for target 127.0.0.1:5900\n"


def decode_all(decoder: StreamDecompressor, data: bytes) -> bytes:
    decoder.feed(data)
    out = []
    while (chunk := decoder.next_chunk()) is not None:
        out.append(chunk)
    return b"".join(out)


writes = st.lists(
    st.one_of(st.binary(max_size=50), st.integers(0, 100_000).map(lambda n: LOG * (n // 80))),
    max_size=8,
)


@pytest.mark.parametrize("mode", [Compress.ON, Compress.AUTO])
# No per-example deadline: the bodies take 0-11 ms, but one stall of the shared VM
# (100+ ms seen beside other work) would fail the run as Flaky (review L16).
@settings(deadline=None)
@given(chunks=writes)
def test_every_write_decodes_on_its_own(mode: Compress, chunks: list[bytes]) -> None:
    """Flushed at every write: the records of one write decode without any later byte."""
    encoder, decoder = StreamCompressor(mode), StreamDecompressor()
    for chunk in chunks:
        assert decode_all(decoder, encoder.encode(chunk)) == chunk
        assert decoder.backlog == 0


def test_a_keystroke_is_not_held_back_after_bulk() -> None:
    encoder, decoder = StreamCompressor(Compress.ON), StreamDecompressor()
    decode_all(decoder, encoder.encode(LOG * 5000))
    records = encoder.encode(b"q")
    assert records == RECORD_HEAD.pack(compress.RAW, 1) + b"q"  # too small to gain: raw
    assert decode_all(decoder, records) == b"q"
    assert decode_all(decoder, encoder.encode(LOG)) == LOG  # the history survives raw records


def test_text_compresses_and_history_spans_writes() -> None:
    encoder = StreamCompressor(Compress.ON)
    first = len(encoder.encode(LOG * 100))
    assert first < len(LOG) * 100 / 10
    assert len(encoder.encode(LOG * 100)) < first  # the same text again: mostly references


def test_auto_turns_off_for_incompressible_data_and_retries() -> None:
    encoder, decoder = StreamCompressor(Compress.AUTO), StreamDecompressor()
    noise = os.urandom(compress.AUTO_SAMPLE * 2)
    assert decode_all(decoder, encoder.encode(noise)) == noise
    assert not encoder.compressing
    raw = encoder.encode(b"x" * 1000)
    assert raw[0] == compress.RAW and len(raw) == 1000 + RECORD_HEAD.size
    text = LOG * (compress.AUTO_RETRY // len(LOG) + 1000)
    assert decode_all(decoder, encoder.encode(text)) == text  # retried after AUTO_RETRY bytes
    assert encoder.compressing
    assert decode_all(decoder, encoder.encode(b"y" * 1000)) == b"y" * 1000


def test_on_compresses_even_incompressible_data() -> None:
    encoder = StreamCompressor(Compress.ON)
    encoder.encode(os.urandom(compress.AUTO_SAMPLE * 2))
    assert encoder.encode(b"z" * 100)[0] == compress.ZSTD


def _bomb(size: int) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=compress.WINDOW_LOG)
    zobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = zobj.compress(bytes(size)) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    return RECORD_HEAD.pack(compress.ZSTD, len(body)) + body


def test_a_decompression_bomb_is_an_error_not_an_oom() -> None:
    record = _bomb(1 << 30)  # 1 GiB of zeros in a few hundred bytes
    assert len(record) < 100_000
    decoder = StreamDecompressor()
    decoder.feed(record)
    with pytest.raises(CompressionError, match="expands beyond"):
        decoder.next_chunk()
    assert decoder._sink.size <= RECORD_INPUT + 1  # what it held when it stopped


@pytest.mark.parametrize(
    "stream",
    [
        RECORD_HEAD.pack(7, 3) + b"abc",  # unknown kind
        RECORD_HEAD.pack(compress.RAW, 0),  # empty record
        RECORD_HEAD.pack(compress.ZSTD, 4) + b"junk",  # not zstd
    ],
)
def test_malformed_records_are_errors(stream: bytes) -> None:
    with pytest.raises(CompressionError):
        decode_all(StreamDecompressor(), stream)


def pair(features: Features) -> tuple[Session, Session]:
    sid, keys = handshake()
    client = Session(Role.CLIENT, sid, keys, T0, None, features)
    exit_ = Session(Role.EXIT, sid, keys, T0, None, features)
    for session in (client, exit_):
        session.add_path(0, False, T0)
    return client, exit_


def move(src: Session, dst: Session, now: float) -> list[bytes]:
    frames = src.transmit(now).get(0, [])
    for frame in frames:
        dst.receive_frame(frame, now, 0)
    return frames


def received(session: Session) -> tuple[bytes, list[object]]:
    events = list(iter(session.next_event, None))
    return b"".join(e.data for e in events if isinstance(e, StreamData)), events


def test_compression_happens_before_encryption_and_shrinks_the_wire() -> None:
    text = LOG * 2000
    sizes = {}
    for mode in (Compress.OFF, Compress.ON):
        client, exit_ = pair(Features(encrypt=True, compress=mode))
        client.send(text)
        frames = move(client, exit_, T0)
        data = [f for f in frames if f[1] == wire.FrameType.DATA]
        assert b"relayd INFO" not in b"".join(data)
        sizes[mode] = sum(map(len, data))
        assert received(exit_)[0] == text
    assert sizes[Compress.ON] * 10 < sizes[Compress.OFF]


def test_bomb_from_the_peer_closes_the_session_with_a_protocol_error() -> None:
    client, exit_ = pair(Features(compress=Compress.ON))
    client.sender.push(_bomb(1 << 28))  # straight into the stream, past the compressor
    move(client, exit_, T0)
    _, events = received(exit_)
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert closed and closed[0].code == wire.CloseCode.PROTOCOL_ERROR
    assert "expands beyond" in closed[0].reason


def test_truncated_record_at_the_end_is_a_protocol_error() -> None:
    client, exit_ = pair(Features(compress=Compress.ON))
    client.sender.push(RECORD_HEAD.pack(compress.RAW, 10) + b"abc")
    client.close_stream()
    move(client, exit_, T0)
    _, events = received(exit_)
    assert any(
        isinstance(e, SessionClosed) and e.code == wire.CloseCode.PROTOCOL_ERROR for e in events
    )
    assert StreamEnded() not in events


def test_output_is_lazy_while_the_consumer_is_full() -> None:
    """Decoding waits for the consumer, and a large undecoded backlog freezes the window."""
    client, exit_ = pair(Features(compress=Compress.ON))
    exit_.pause_receiving(True)
    text = random.Random(1).randbytes(64) * 40_000  # 2.5 MB, compresses well
    client.send(text)
    move(client, exit_, T0)
    assert received(exit_)[0] == b""  # nothing decoded while paused
    exit_.pause_receiving(False)
    got = b""
    now = T0
    while len(got) < len(text):
        before = len(got)
        move(exit_, client, now)
        move(client, exit_, now)
        chunk, _ = received(exit_)
        got += chunk
        assert len(chunk) <= compress.DRAIN_BUDGET + RECORD_INPUT  # bounded per step
        now += 0.001
        assert len(got) > before or exit_.get_timer() is not None
    assert got == text


def held_close() -> tuple[Session, bytes, float]:
    """A client whose consumer is full when the exit, done, closes: the client holds the
    exit's CLOSE (nothing reported, nothing sent) with the exit's whole stream undelivered."""
    client, exit_ = pair(Features(compress=Compress.ON))
    client.pause_receiving(True)
    text = random.Random(2).randbytes(64) * 2_000  # 128 KB, within the frozen window
    exit_.send(text)
    exit_.close_stream()
    client.close_stream()
    now = T0
    for _ in range(4):
        move(exit_, client, now)
        move(client, exit_, now)
        now += 0.01
    assert exit_.state is SessionState.CLOSED  # its FIN acked, ours delivered: it is done
    move(exit_, client, now)  # its CLOSE
    got, events = received(client)
    assert got == b"" and not any(isinstance(e, SessionClosed) for e in events)
    assert client.transmit(now) == {}  # the peer is gone: nothing more to say to it
    return client, text, now


def test_a_peer_that_closes_while_our_consumer_is_full_loses_us_nothing() -> None:
    """The exit ends the session once its FIN is acked, which can be while the client's
    consumer (a slow stdout) still has decoded-on-demand bytes to take: the client must hand
    every one on, then the end, then report the close (a CI run lost a 170 KB tail here,
    exit code 0)."""
    client, text, now = held_close()
    got, events = b"", []
    client.pause_receiving(False)
    for _ in range(1000):
        if client.state is SessionState.CLOSED:
            break
        assert client.transmit(now) == {}
        chunk, new_events = received(client)
        got += chunk
        events += new_events
        now += 0.001
    assert got == text
    ended = events.index(StreamEnded())
    closed = [i for i, e in enumerate(events) if isinstance(e, SessionClosed)]
    assert closed and closed[0] > ended
    assert events[closed[0]] == SessionClosed(wire.CloseCode.NORMAL, "session ended", True)


def test_a_held_close_ends_when_our_consumer_takes_nothing_for_the_grace_period() -> None:
    """Review G1: a consumer that never drains (a stopped reader, a target that reads no more)
    held the peer's CLOSE forever, with no timer: relayd kept the session's tables, its slot
    and the target's socket after the client had gone. It ends after `grace_period` with
    TIMEOUT (not NORMAL: the stream was cut), reported once."""
    client, _, now = held_close()
    grace = client.config.grace_period
    deadline = client.get_timer()  # the grace period from the CLOSE (it came before `now`)
    assert deadline is not None and now - 1 < deadline - grace <= now
    client.handle_timer(deadline - 1)
    assert client.state is not SessionState.CLOSED
    client.handle_timer(deadline)
    assert client.state is SessionState.CLOSED
    client.transmit(deadline)
    client.handle_timer(deadline + grace)
    _, events = received(client)
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert [(e.code, e.by_peer) for e in closed] == [(wire.CloseCode.TIMEOUT, False)]
    assert not any(isinstance(e, StreamEnded) for e in events)


@settings(deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=8), st.integers(1, 1500))
def test_need_says_exactly_when_a_record_can_be_decoded(writes: list[bytes], step: int) -> None:
    """The receiver decodes only once `backlog` reaches `need` (not once per frame): below it,
    `next_chunk` must have nothing to give, or a record would wait for the next frame."""
    encoder, decoder = StreamCompressor(Compress.AUTO), StreamDecompressor()
    stream = b"".join(encoder.encode(w) for w in writes)
    out = []
    for start in range(0, len(stream), step):
        decoder.feed(stream[start : start + step])
        while decoder.backlog >= decoder.need and (chunk := decoder.next_chunk()) is not None:
            out.append(chunk)
        assert decoder.backlog < decoder.need
        assert decoder.next_chunk() is None
    assert b"".join(out) == b"".join(writes)
    assert decoder.backlog == 0
