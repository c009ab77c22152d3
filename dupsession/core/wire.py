"""Frame codec: byte layouts of every frame type and their keyed BLAKE3 tags.

House rules:
- Every frame starts with the same 12-byte prefix (version, type, flags, path id, session id)
  so a listener can route a datagram to its session before touching the body.
- Every frame ends with a 16-byte keyed BLAKE3 tag over everything before it. A frame whose tag
  fails is a `FrameError`; callers drop and count it, they never answer it.
- DATA frames carry no per-path or per-time field: every copy of frame *n* is byte-identical,
  so whichever copy arrives first can be verified and delivered.
- Decoding never trusts a length: truncated, oversized or trailing bytes are rejected.

Layouts are documented in docs/PROTOCOL.md; keep the two in step.
"""

from __future__ import annotations

import hmac
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import blake3

VERSION = 1
TAG_SIZE = 16
SESSION_ID_SIZE = 8

PREFIX = struct.Struct("!BBBB8s")  # version, type, flags, path_id, session_id
DATA_HEADER = struct.Struct("!BBBB8sQ")  # prefix + frame number
ACK_FIXED = struct.Struct("!BBBB8sIQQIIIQQB")
RANGE = struct.Struct("!II")  # start offset above cumulative ack, length
CLOSE_FIXED = struct.Struct("!BBBB8sBB")
HELLO_FIXED = struct.Struct("!BBBB8s16sQ32sB")
WELCOME_FIXED = struct.Struct("!BBBB8sB16s32sB")

#: Largest frame on a datagram path: a 1280-byte IPv6 minimum MTU less 40 (IPv6) and 8 (UDP).
MAX_DATAGRAM_FRAME = 1232
#: DATA payload that fits one datagram frame.
MAX_DATAGRAM_PAYLOAD = MAX_DATAGRAM_FRAME - DATA_HEADER.size - TAG_SIZE
#: Largest frame on a stream path (TCP, SSH channel): the u16 length prefix's limit.
MAX_STREAM_FRAME = 65535
#: DATA payload when every live path is a stream path: bigger frames, fewer per-frame costs.
MAX_STREAM_PAYLOAD = 16384
#: ...and when both ends agreed to the JUMBO option: the largest the length prefix carries.
MAX_JUMBO_PAYLOAD = MAX_STREAM_FRAME - DATA_HEADER.size - TAG_SIZE
#: HELLO is padded to this size so that no answer is ever larger than the request.
HELLO_SIZE = 1200
MAX_ACK_RANGES = 32
#: HELLO target of a probe session: the exit echoes the stream itself and connects nowhere,
#: so no allow-list entry is needed (`dupsession probe` measures routes with it).
PROBE_TARGET = "probe:0"
MAX_REASON = 200
#: Bytes of options a WELCOME may carry: with the largest reason it stays far below HELLO_SIZE.
MAX_WELCOME_OPTIONS = 512
#: Option types at or above this are critical: a receiver that does not know one must refuse.
CRITICAL_OPTION = 0x80


class FrameType(IntEnum):
    HELLO = 1
    WELCOME = 2
    DATA = 3
    ACK = 4
    CLOSE = 5
    RESET = 6  #: stateless reset: the exit does not know the session (see `encode_reset`)


class DataFlags:
    FIN = 0x01


class AckFlags:
    #: Path validation: the ACK's `ts` is a random challenge; answer on this path at once
    #: (the answer echoes it, proving the sender receives at the address it sends from).
    CHALLENGE = 0x01
    #: The ACK ends with `echo recv` (4 bytes after `loss`): sent only to a peer that agreed
    #: to the ECHO_RECV option, since an older decoder takes the longer ACK for a broken one.
    ECHO_RECV = 0x02


_DATA = int(FrameType.DATA)


class FrameError(ValueError):
    """A frame from the network that is malformed or fails its tag: drop it, count it."""


def tag(key: bytes, body: bytes | memoryview) -> bytes:
    """Keyed BLAKE3 over `body`, truncated to 128 bits (ample for a per-frame MAC)."""
    return blake3.blake3(body, key=key).digest(TAG_SIZE)


def seal(key: bytes, body: bytes) -> bytes:
    return body + tag(key, body)


def verify(key: bytes, frame: bytes | memoryview) -> memoryview:
    """Return the body of `frame` if its tag is valid under `key`, else raise FrameError."""
    view = memoryview(frame)
    if len(view) < PREFIX.size + TAG_SIZE:
        raise FrameError("frame too short")
    body = view[:-TAG_SIZE]
    if not hmac.compare_digest(tag(key, body), view[-TAG_SIZE:]):
        raise FrameError("bad tag")
    return body


@dataclass(frozen=True, slots=True)
class Prefix:
    version: int
    type: int
    flags: int
    path_id: int
    session_id: bytes


def peek_prefix(frame: bytes | memoryview) -> Prefix:
    """Read the unauthenticated routing prefix; callers must still verify the tag."""
    if len(frame) < PREFIX.size + TAG_SIZE:
        raise FrameError("frame too short")
    version, ftype, flags, path_id, sid = PREFIX.unpack_from(frame)
    if version != VERSION:
        raise FrameError(f"unsupported version {version}")
    return Prefix(version, ftype, flags, path_id, sid)


# --- DATA -----------------------------------------------------------------------------------


def encode_data(
    key: bytes, session_id: bytes, seq: int, payload: bytes | memoryview, fin: bool
) -> bytes:
    """A sealed DATA frame. `payload` may be a view into the sender's buffer: it is copied
    once, into the frame."""
    return data_sealer(key, session_id)(seq, payload, fin)


def data_sealer(key: bytes, session_id: bytes) -> Callable[[int, bytes | memoryview, bool], bytes]:
    """`encode_data` for one session's key: (frame number, payload, FIN) -> sealed frame.

    The hot path (a sender makes 840 DATA frames per MB): one hasher, keyed once and reset
    per frame (`reset` keeps the key; 0.06 us, against 0.45 us to copy a keyed one and 0.9 us
    to key a new one), everything else bound in advance. The sealer is not reentrant: it
    holds no state between calls, and nothing it calls calls back.
    """
    mac, pack, fin_flag = blake3.blake3(key=key), _DATA_PACK, int(DataFlags.FIN)
    reset, update, digest = mac.reset, mac.update, mac.digest

    def seal_data(seq: int, payload: bytes | memoryview, fin: bool) -> bytes:
        body = pack(VERSION, _DATA, fin_flag if fin else 0, 0, session_id, seq) + payload
        reset()
        update(body)
        return body + digest(TAG_SIZE)

    return seal_data


def data_seq(frame: bytes | memoryview) -> int:
    """Frame number of an (unverified) DATA frame: lets duplicates be dropped before hashing."""
    if len(frame) < _DATA_MIN:
        raise FrameError("data frame too short")
    seq: int = _SEQ.unpack_from(frame, 12)[0]
    return seq


_SEQ = struct.Struct("!Q")
_DATA_MIN = DATA_HEADER.size + TAG_SIZE
_DATA_HEADER_SIZE = DATA_HEADER.size
_DATA_PACK = DATA_HEADER.pack
_same = hmac.compare_digest


def open_data(key: bytes, frame: bytes) -> tuple[bool, memoryview]:
    """(fin, payload) of a DATA frame whose tag verifies under `key`, else FrameError.

    `verify` and `decode_data` in one pass, for the hot path: one hash, and the payload is a
    view into `frame`, not a copy (the receiver copies it once, when it delivers it). So
    `frame` must be immutable `bytes`, never a receive buffer the glue reuses: a view held
    out of order would change under it after its tag verified (review E6).
    """
    return data_opener(key)(frame)


def data_tag_check(key: bytes) -> Callable[[bytes], bytes | None]:
    """The one check of a DATA frame's tag, for one session's key: `frame`'s tag if it is the
    keyed BLAKE3 of everything before it, else None (compared in constant time). Callers
    check the frame's length first; `data_opener` and the session's batch receive loop
    (`ReceiveData._receive_run`, which keeps the tag for the duplicate check) both verify
    with it. A receiver verifies 840 DATA frames per MB: the hasher is keyed once and reset
    per frame (see `data_sealer`), and the tagged part is hashed from a copy
    (`frame[:-TAG_SIZE]`: cheaper than a memoryview and its slice, 1.2 KB)."""
    mac = blake3.blake3(key=key)
    reset, update, digest = mac.reset, mac.update, mac.digest

    def verified_tag(frame: bytes) -> bytes | None:
        reset()
        update(frame[:-TAG_SIZE])
        tag = frame[-TAG_SIZE:]
        return tag if _same(digest(TAG_SIZE), tag) else None

    return verified_tag


def data_opener(key: bytes) -> Callable[[bytes], tuple[bool, memoryview]]:
    """`open_data` for one session's key: the tag checked by `data_tag_check`, and the
    payload view made only once it verified."""
    check, fin_flag, start = data_tag_check(key), int(DataFlags.FIN), _DATA_HEADER_SIZE

    def open_frame(frame: bytes) -> tuple[bool, memoryview]:
        if len(frame) < _DATA_MIN:
            raise FrameError("data frame too short")
        if check(frame) is None:
            raise FrameError("bad tag")
        return bool(frame[2] & fin_flag), memoryview(frame)[start:-TAG_SIZE]

    return open_frame


def decode_data(body: memoryview) -> tuple[int, bool, bytes]:
    """(seq, fin, payload) of a verified DATA body."""
    if len(body) < DATA_HEADER.size:
        raise FrameError("data frame too short")
    _, _, flags, _, _, seq = DATA_HEADER.unpack_from(body)
    return seq, bool(flags & DataFlags.FIN), bytes(body[DATA_HEADER.size :])


# --- ACK (per path: acks, RTT timestamps, per-path counters, flow-control window) ----------


@dataclass(frozen=True, slots=True)
class Ack:
    """Everything one side tells the other about one path, sent on that path.

    ACKs double as probes and keepalives: they flow on every path at least once per probe
    interval, so they carry the RTT timestamps and the per-path DATA counters too.
    """

    path_id: int
    pseq: int  #: per-path ACK counter, for control-frame loss
    ts_us: int  #: sender's clock when sent
    echo_ts_us: int  #: latest ts_us received on this path (0: none yet)
    echo_delay_us: int  #: how long the echoed ts was held before this ACK went out
    data_sent: int  #: DATA frames the sender has sent on this path (mod 2**32)
    data_recv: int  #: DATA frames the sender has received on this path (genuine copies, once each)
    cumulative: int  #: every frame number below this has been received
    window_end: int  #: the peer may send frame numbers below this
    ranges: tuple[tuple[int, int], ...] = ()  #: received runs above `cumulative`: (start, end)
    lag_us: int = 0  #: typical lag of this path's DATA copies behind the first copy
    first: int = 0  #: DATA frames this path delivered before any other path (mod 2**32)
    loss_bp: int = 0  #: DATA loss the ACK's sender measured on this path inbound, 1/10000ths
    challenge: bool = False  #: `ts_us` is a path-validation challenge: answer at once
    #: `data_recv` when the echoed ts arrived (mod 2**32; None: not sent, or the echo is a
    #: challenge's token). Paths are FIFO, so the peer's frames sent before that ts less this
    #: are exactly the ones lost; `data_recv` alone also counts frames sent after the ts, and
    #: a loss estimate from it runs short by them: a path whose window was one burst opened
    #: it only at each stale write-off (`ModelRate._echoed_loss`).
    echo_recv: int | None = None


ACK_TAIL = struct.Struct("!IIH")  # lag_us, first, loss_bp
ECHO_RECV = struct.Struct("!I")  # echo_recv, after the tail when the ECHO_RECV flag is set


def encode_ack(key: bytes, session_id: bytes, ack: Ack) -> bytes:
    ranges = ack.ranges[:MAX_ACK_RANGES]
    parts = [
        ACK_FIXED.pack(
            VERSION,
            FrameType.ACK,
            (AckFlags.CHALLENGE if ack.challenge else 0)
            | (AckFlags.ECHO_RECV if ack.echo_recv is not None else 0),
            ack.path_id,
            session_id,
            ack.pseq & 0xFFFFFFFF,
            ack.ts_us,
            ack.echo_ts_us,
            min(ack.echo_delay_us, 0xFFFFFFFF),
            ack.data_sent & 0xFFFFFFFF,
            ack.data_recv & 0xFFFFFFFF,
            ack.cumulative,
            ack.window_end,
            len(ranges),
        )
    ]
    flat: list[int] = []
    for start, end in ranges:
        flat += (start - ack.cumulative, end - start)
    parts.append(_RUNS[len(ranges)].pack(*flat))
    parts.append(
        ACK_TAIL.pack(min(ack.lag_us, 0xFFFFFFFF), ack.first & 0xFFFFFFFF, min(ack.loss_bp, 10000))
    )
    if ack.echo_recv is not None:
        parts.append(ECHO_RECV.pack(ack.echo_recv & 0xFFFFFFFF))
    return seal(key, b"".join(parts))


def decode_ack(body: memoryview) -> Ack:
    if len(body) < ACK_FIXED.size + ACK_TAIL.size:
        raise FrameError("ack frame too short")
    (_, _, flags, path_id, _, pseq, ts, echo, delay, sent, recv, cum, wend, n) = (
        ACK_FIXED.unpack_from(body)
    )
    extra = ECHO_RECV.size if flags & AckFlags.ECHO_RECV else 0
    offset = ACK_FIXED.size + n * RANGE.size
    if n > MAX_ACK_RANGES or len(body) != offset + ACK_TAIL.size + extra:
        raise FrameError("ack frame length mismatch")
    ranges = _decode_ranges(cum, bytes(body[ACK_FIXED.size : offset])) if n else ()
    lag, first, loss_bp = ACK_TAIL.unpack_from(body, offset)
    if loss_bp > 10000:
        raise FrameError("ack loss above 100 %")
    echo_recv = ECHO_RECV.unpack_from(body, offset + ACK_TAIL.size)[0] if extra else None
    return Ack(
        path_id,
        pseq,
        ts,
        echo,
        delay,
        sent,
        recv,
        cum,
        wend,
        ranges,
        lag,
        first,
        loss_bp,
        bool(flags & AckFlags.CHALLENGE),
        echo_recv,
    )


#: One struct per range count: an ACK's runs unpack in one call.
_RUNS = tuple(struct.Struct("!" + "II" * count) for count in range(MAX_ACK_RANGES + 1))


@lru_cache(maxsize=16)
def _decode_ranges(cumulative: int, raw: bytes) -> tuple[tuple[int, int], ...]:
    """An ACK's runs above `cumulative` from their bytes. Cached: every path's copy of one
    ACK repeats them (32 runs at 5 % loss: 13 us to decode each copy), and the repeat gets
    the same tuple, which `Sender.on_ack` knows by one comparison. Pure, so one cache
    serves every session; a bad run raises, and an error is never cached."""
    flat = _RUNS[len(raw) // RANGE.size].unpack(raw)
    if 0 in flat:  # a run's start offset or length
        raise FrameError("empty or overlapping ack range")
    starts = [cumulative + start for start in flat[0::2]]
    return tuple(zip(starts, map(operator.add, starts, flat[1::2]), strict=True))


# --- CLOSE ----------------------------------------------------------------------------------


class CloseCode(IntEnum):
    NORMAL = 0
    TARGET_UNREACHABLE = 1
    TARGET_REFUSED = 2  #: the exit's allow-list does not permit the target
    PROTOCOL_ERROR = 3
    TIMEOUT = 4  #: the grace period ran out with no path alive
    SHUTDOWN = 5  #: the exit is shutting down
    #: Local only, never in a CLOSE frame: a valid RESET said the exit does not know the session.
    UNKNOWN_SESSION = 6


# --- RESET (stateless: the exit lost the session, e.g. it restarted) ------------------------

RESET_TOKEN_SIZE = 16
#: A RESET is the prefix and a token: 28 bytes, smaller than any frame that can trigger one.
RESET_SIZE = PREFIX.size + RESET_TOKEN_SIZE


def encode_reset(token: bytes, session_id: bytes, path_id: int) -> bytes:
    """RESET for a session the exit does not know. The token is derived from the PSK and the
    session id (`handshake.reset_token`), so the exit can make it with no session state and
    only a PSK holder can; it is answered only to frames larger than itself, rate-limited."""
    return PREFIX.pack(VERSION, FrameType.RESET, 0, path_id, session_id) + token


def reset_matches(frame: bytes, token: bytes) -> bool:
    """Whether `frame` is a RESET carrying `token` (compared in constant time)."""
    return (
        len(frame) == RESET_SIZE
        and frame[1] == FrameType.RESET
        and hmac.compare_digest(frame[PREFIX.size :], token)
    )


def encode_close(key: bytes, session_id: bytes, path_id: int, code: int, reason: str) -> bytes:
    text = reason.encode()[:MAX_REASON]
    head = CLOSE_FIXED.pack(VERSION, FrameType.CLOSE, 0, path_id, session_id, code, len(text))
    return seal(key, head + text)


def decode_close(body: memoryview) -> tuple[int, str]:
    if len(body) < CLOSE_FIXED.size:
        raise FrameError("close frame too short")
    *_, code, length = CLOSE_FIXED.unpack_from(body)
    if len(body) != CLOSE_FIXED.size + length:
        raise FrameError("close frame length mismatch")
    return code, bytes(body[CLOSE_FIXED.size :]).decode(errors="replace")


# --- handshake options: type-length-value, inside the authenticated HELLO and WELCOME -------

#: (type, value) pairs, each type at most once. Type 0 never appears: in a HELLO it starts the
#: zero padding. See docs/PROTOCOL.md, "Handshake options", for the rule on unknown types.
Options = tuple[tuple[int, bytes], ...]
_OPTION_HEAD = struct.Struct("!BB")


class OptionType(IntEnum):
    """Known option types (values below 0x80 may be ignored by a peer that does not know them)."""

    PAD = 0  #: in a HELLO: the options end, zero padding follows
    CIPHER = 1  #: payload encryption; see core/negotiate.py
    COMPRESS = 2  #: stream compression; see core/negotiate.py
    SCHEDULE = 3  #: scheduling policy, best-k's k, path tiers; see core/policy.py
    JUMBO = 4  #: stream-only sessions cut DATA payloads up to MAX_JUMBO_PAYLOAD; core/negotiate.py
    ECHO_RECV = 5  #: ACKs carry `echo recv` (AckFlags.ECHO_RECV); core/negotiate.py


def encode_options(options: Options) -> bytes:
    seen: set[int] = set()
    parts = []
    for otype, value in options:
        if not 0 < otype <= 0xFF or otype in seen or len(value) > 0xFF:
            raise ValueError(f"bad or repeated handshake option {otype}")
        seen.add(otype)
        parts.append(_OPTION_HEAD.pack(otype, len(value)) + value)
    return b"".join(parts)


def decode_options(data: bytes | memoryview, padded: bool) -> Options:
    """Options from `data`; with `padded` (a HELLO), a type-0 byte starts zero padding.

    A repeated type, a value running past the end, or non-zero padding is a FrameError: the
    tag verified, so the peer is buggy, not the network.
    """
    view = memoryview(data)
    out: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    offset = 0
    while offset < len(view):
        otype = view[offset]
        if otype == OptionType.PAD:
            if not padded or any(view[offset:]):
                raise FrameError("handshake options: unexpected padding")
            break
        if offset + 2 > len(view):
            raise FrameError("handshake option truncated")
        length = view[offset + 1]
        value = bytes(view[offset + 2 : offset + 2 + length])
        if len(value) != length:
            raise FrameError("handshake option truncated")
        if otype in seen:
            raise FrameError(f"handshake option {otype} repeated")
        seen.add(otype)
        out.append((otype, value))
        offset += 2 + length
    return tuple(out)


def unknown_critical(options: Options, known: set[int]) -> list[int]:
    """Critical option types in `options` that this end does not implement."""
    return [t for t, _ in options if t >= CRITICAL_OPTION and t not in known]


# --- HELLO / WELCOME (sealed with the handshake key derived from the pre-shared key) -------


@dataclass(frozen=True, slots=True)
class Hello:
    path_id: int
    session_id: bytes
    client_nonce: bytes
    unix_ms: int
    client_public: bytes
    target: str
    options: Options = ()


def encode_hello(auth_key: bytes, hello: Hello) -> bytes:
    target = hello.target.encode()
    if len(target) > 255:
        raise ValueError("target too long")
    options = encode_options(hello.options)
    head = HELLO_FIXED.pack(
        VERSION,
        FrameType.HELLO,
        0,
        hello.path_id,
        hello.session_id,
        hello.client_nonce,
        hello.unix_ms,
        hello.client_public,
        len(target),
    )
    body = head + target + options
    if len(body) > HELLO_SIZE - TAG_SIZE:
        raise ValueError("hello options too long")
    return seal(auth_key, body + bytes(HELLO_SIZE - TAG_SIZE - len(body)))


def decode_hello(body: memoryview) -> Hello:
    if len(body) != HELLO_SIZE - TAG_SIZE:
        raise FrameError("hello frame has the wrong size")
    _, _, _, path_id, sid, nonce, unix_ms, pub, tlen = HELLO_FIXED.unpack_from(body)
    target = bytes(body[HELLO_FIXED.size : HELLO_FIXED.size + tlen])
    options = decode_options(body[HELLO_FIXED.size + tlen :], padded=True)
    try:
        return Hello(path_id, sid, nonce, unix_ms, pub, target.decode(), options)
    except UnicodeDecodeError as exc:
        raise FrameError("target is not UTF-8") from exc


class WelcomeStatus(IntEnum):
    OK = 0
    REFUSED = 1  #: target not permitted by the exit's allow-list
    FULL = 2  #: the exit holds its maximum number of sessions
    UNSUPPORTED = 3  #: the HELLO carries a critical option the exit does not implement


@dataclass(frozen=True, slots=True)
class Welcome:
    path_id: int
    session_id: bytes
    status: int
    server_nonce: bytes
    server_public: bytes
    reason: str
    options: Options = ()


def encode_welcome(auth_key: bytes, hello_tag: bytes, welcome: Welcome) -> bytes:
    """WELCOME's tag also covers the HELLO's tag: an answer is bound to the request it answers."""
    reason = welcome.reason.encode()[:MAX_REASON]
    options = encode_options(welcome.options)
    if len(options) > MAX_WELCOME_OPTIONS:
        raise ValueError("welcome options too long")  # a WELCOME must stay below HELLO_SIZE
    body = (
        WELCOME_FIXED.pack(
            VERSION,
            FrameType.WELCOME,
            0,
            welcome.path_id,
            welcome.session_id,
            welcome.status,
            welcome.server_nonce,
            welcome.server_public,
            len(reason),
        )
        + reason
        + options
    )
    return body + tag(auth_key, hello_tag + body)


def verify_welcome(auth_key: bytes, hello_tag: bytes, frame: bytes) -> Welcome:
    if len(frame) < WELCOME_FIXED.size + TAG_SIZE:
        raise FrameError("welcome frame too short")
    body = frame[:-TAG_SIZE]
    if not hmac.compare_digest(tag(auth_key, hello_tag + body), frame[-TAG_SIZE:]):
        raise FrameError("bad tag")
    _, _, _, path_id, sid, status, nonce, pub, rlen = WELCOME_FIXED.unpack_from(body)
    if len(body) < WELCOME_FIXED.size + rlen:
        raise FrameError("welcome frame length mismatch")
    reason = body[WELCOME_FIXED.size : WELCOME_FIXED.size + rlen].decode(errors="replace")
    options_bytes = body[WELCOME_FIXED.size + rlen :]
    if len(options_bytes) > MAX_WELCOME_OPTIONS:
        raise FrameError("welcome options too long")
    options = decode_options(options_bytes, padded=False)
    return Welcome(path_id, sid, status, nonce, pub, reason, options)
