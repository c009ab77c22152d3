"""Stream compression: zstd per direction over the in-order byte stream, in records.

Rules, each with its reason:
- Compression runs on the stream before it is cut into frames (and before encryption), so
  frames stay immutable and every copy of a frame stays byte-identical.
- Every write is flushed to a block boundary (`COMPRESSOBJ_FLUSH_BLOCK`): the peer can
  decompress all of it at once, so a keystroke is never held back waiting for more input. The
  zstd frame never ends, so later writes still use the history of earlier ones.
- Writes under `MIN_COMPRESS` bytes (keystrokes) go raw: nothing to gain.
- `auto` measures the stream itself: it compresses while the output is at most
  `AUTO_KEEP_RATIO` of the input over each `AUTO_SAMPLE` bytes, sends raw records otherwise
  (an ssh stream is already encrypted: compressing it only costs CPU) and tries again after
  `AUTO_RETRY` raw bytes. Raw records bypass the compressor at both ends, so its history
  stays the same on both sides.
- The receiver's memory is bounded: a record's body is at most 65 535 bytes, a compressed
  record may decompress to at most `RECORD_INPUT` bytes, and the zstd window is capped at
  `WINDOW_LOG`. A record that would produce more is a `CompressionError` (a protocol error
  that closes the session), found after at most `RECORD_INPUT` + 1 bytes of output, never an
  out-of-memory. The Session decompresses lazily, one record at a time, as its consumer takes
  the output (core/session.py), so compressed input never turns into unbounded output.

Record: kind (u8: 0 raw, 1 zstd), body length (u16, 1..65535), body. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import struct
from collections import deque

import zstandard

from dupsession.core.negotiate import Compress

RAW = 0
ZSTD = 1
RECORD_HEAD = struct.Struct("!BH")
#: Input bytes per record: a compressed record stays below the u16 body limit.
RECORD_INPUT = 32 * 1024
#: The zstd window (2**20 = 1 MiB): the most history either end keeps per direction.
WINDOW_LOG = 20
#: zstd level 1: on source text 8 ms/MB for a 0.32 ratio, against 20 ms/MB for 0.28 at level 3
#: (contrib/bench/codec.py); compression must not become the bottleneck of a bulk transfer.
LEVEL = 1
#: Writes shorter than this go raw in every mode: a keystroke has nothing to gain, and zstd's
#: block header alone would make it longer (and cost CPU on the interactive path).
MIN_COMPRESS = 64
#: `auto`: judge the stream over this many input bytes (an ssh login is past it quickly)...
AUTO_SAMPLE = 16 * 1024
#: ...keep compressing while output/input is at most this...
AUTO_KEEP_RATIO = 0.9
#: ...and after a sample that did not compress, send this many bytes raw before trying again.
AUTO_RETRY = 1024 * 1024


class CompressionError(ValueError):
    """The peer's compressed stream is malformed or expands beyond the limits: a protocol error."""


class StreamCompressor:
    """One direction's sending side: bytes in, records out."""

    def __init__(self, mode: Compress) -> None:
        if mode is Compress.OFF:
            raise ValueError("no compressor for mode off")
        self.mode = mode
        params = zstandard.ZstdCompressionParameters.from_level(LEVEL, window_log=WINDOW_LOG)
        self._zstd = zstandard.ZstdCompressor(compression_params=params).compressobj()
        self.bytes_in = 0  #: stream bytes given to `encode`
        self.bytes_out = 0  #: record bytes produced, headers included
        self.compressing = True
        self._sample_in = 0
        self._sample_out = 0
        self._raw_left = 0

    def encode(self, data: bytes) -> bytes:
        """Records carrying `data`, flushed: the peer can decode all of it from these alone."""
        return b"".join(self.encode_parts(data))

    def encode_parts(self, data: bytes) -> list[bytes | memoryview]:
        """`encode`'s records as pieces (heads, bodies, views into `data`), not joined: the
        sender holds the pieces and copies each byte once, into its frame, so a join here
        would be one more copy of every byte of a bulk transfer. The views pin `data` until
        their frames are cut (bounded by the sender's pending limit)."""
        parts: list[bytes | memoryview] = []
        view = memoryview(data)
        for start in range(0, len(view), RECORD_INPUT):
            piece = view[start : start + RECORD_INPUT]
            if self._use_zstd(len(piece)):
                body = self._zstd.compress(piece) + self._zstd.flush(
                    zstandard.COMPRESSOBJ_FLUSH_BLOCK
                )
                self._measure(len(piece), len(body))
                parts += (RECORD_HEAD.pack(ZSTD, len(body)), body)
            else:  # a view into the caller's buffer: copied once, by the sender
                parts += (RECORD_HEAD.pack(RAW, len(piece)), piece)
        self.bytes_in += len(data)
        self.bytes_out += sum(map(len, parts))
        return parts

    def _use_zstd(self, size: int) -> bool:
        if size < MIN_COMPRESS:
            return False
        if self.mode is Compress.ON or self.compressing:
            return True
        self._raw_left -= size
        if self._raw_left <= 0:
            self.compressing = True  # try the stream again: it may have changed
            self._raw_left = 0
        return False

    def _measure(self, size_in: int, size_out: int) -> None:
        if self.mode is not Compress.AUTO:
            return
        self._sample_in += size_in
        self._sample_out += size_out
        if self._sample_in >= AUTO_SAMPLE:
            if self._sample_out > AUTO_KEEP_RATIO * self._sample_in:
                self.compressing = False
                self._raw_left = AUTO_RETRY
            self._sample_in = self._sample_out = 0


class _Bounded:
    """The decompressor's output sink: raises once a record yields more than allowed."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > RECORD_INPUT:
            raise CompressionError(f"a compressed record expands beyond {RECORD_INPUT} bytes")
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return out


class StreamDecompressor:
    """One direction's receiving side: delivered stream bytes in, the original bytes out.

    `feed` only stores; `next_chunk` decodes one record at a time, so the caller decides how
    much output exists at once.
    """

    def __init__(self) -> None:
        self._sink = _Bounded()
        # The writer hands output on only when its buffer fills or input remains, so its
        # buffer is one byte larger than a record may produce: a legal record's output always
        # comes out whole, and a record that would produce more fills it, which `_Bounded`
        # refuses. (python-zstandard's decompressobj has no output limit at all.)
        self._zstd = zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG).stream_writer(
            self._sink,  # type: ignore[arg-type]  # any object with write() will do
            write_size=RECORD_INPUT + 1,
            write_return_read=True,
            closefd=False,
        )
        self._input: deque[bytes | memoryview] = deque()
        self.backlog = 0  #: compressed bytes fed and not yet decoded
        #: `backlog` at which `next_chunk` can return something (a header, then its record's
        #: body): the receiver skips decoding until then, not once per delivered frame.
        self.need = RECORD_HEAD.size
        self._kind = RAW  #: the kind of the record whose header was read

    def feed(self, data: bytes | memoryview) -> None:
        """Queue `data` (held, not copied: a view must be of bytes that do not change)."""
        if data:
            self._input.append(data)
            self.backlog += len(data)

    def next_chunk(self) -> bytes | None:
        """The bytes of the next whole record, or None until more input arrives."""
        if self.backlog < self.need:
            return None
        if self.need == RECORD_HEAD.size:  # the next record's header is in: read it
            kind, length = RECORD_HEAD.unpack(self._take(RECORD_HEAD.size))
            if kind not in (RAW, ZSTD) or length == 0:
                raise CompressionError(f"bad compression record (kind {kind}, {length} B)")
            self._kind = kind
            self.need = RECORD_HEAD.size + length  # `backlog` still counts the header
            if self.backlog < self.need:
                return None
        body = self._take(self.need - RECORD_HEAD.size)
        self.backlog -= self.need
        self.need = RECORD_HEAD.size
        return body if self._kind == RAW else self._inflate(body)

    def _take(self, size: int) -> bytes:
        """The first `size` queued input bytes (they are there), joined with one copy. A
        longer piece stays queued as a view of its rest: a delivered batch of many records
        is not copied again per record taken from its head."""
        queue = self._input
        first = queue[0]
        if len(first) == size:
            return bytes(queue.popleft())
        if len(first) > size:
            view = first if isinstance(first, memoryview) else memoryview(first)
            queue[0] = view[size:]
            return bytes(view[:size])
        parts: list[bytes | memoryview] = []
        got = 0
        while got < size:
            piece = queue.popleft()
            if got + len(piece) > size:
                cut = size - got
                view = piece if isinstance(piece, memoryview) else memoryview(piece)
                queue.appendleft(view[cut:])
                piece = view[:cut]
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _inflate(self, body: bytes) -> bytes:
        try:
            self._zstd.write(body)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"bad compressed record: {exc}") from exc
        return self._sink.take()

    @property
    def mid_record(self) -> bool:
        """Whether undecoded bytes remain (at the end of the stream: a truncated record)."""
        return self.backlog > 0


#: Compressed bytes a receiver may hold undecoded before it stops opening the peer's window.
INFLOW_BACKLOG_LIMIT = 1024 * 1024
#: Decoded bytes handed out per `Inflow.drain`: bounds the output that exists at one time.
DRAIN_BUDGET = 256 * 1024


class Inflow:
    """A compressed direction's delivery: decode lazily, as the consumer takes the output.

    `drain` decodes whole records until `budget` bytes came out or the consumer is paused;
    `more` says whether it stopped with decodable input left (call again soon).
    """

    def __init__(self) -> None:
        self.decoder = StreamDecompressor()
        self.paused = False  #: the consumer is full
        self.more = False

    def feed(self, data: bytes) -> None:
        self.decoder.feed(data)

    @property
    def backlog(self) -> int:
        return self.decoder.backlog

    def drain(self, budget: int = DRAIN_BUDGET) -> list[bytes]:
        out: list[bytes] = []
        size = 0
        while not self.paused and size < budget:
            chunk = self.decoder.next_chunk()
            if chunk is None:
                self.more = False
                return out
            if chunk:
                out.append(chunk)
                size += len(chunk)
        self.more = self.decoder.backlog > 0
        return out
