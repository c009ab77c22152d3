"""What the two ends agree on in the handshake: payload encryption, stream compression,
scheduling and jumbo stream frames.

The client offers in HELLO options, the exit answers in WELCOME options (layouts in
docs/PROTOCOL.md, "Handshake options"). Both frames are authenticated under the handshake key
and the WELCOME is bound to its HELLO, so nobody without the key can strip an offer or an
answer. The rules that make a downgrade impossible sit in `settle`:
- a client that asked for encryption refuses a WELCOME that does not agree to it;
- an answer to something the client never offered is a protocol error, not a surprise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dupsession.core import wire
from dupsession.core.policy import Schedule

#: CIPHER option value: ChaCha20 over each direction's byte stream, BLAKE3 tags over the
#: ciphertext (core/seal.py). Value 1 was ChaCha20 per DATA payload under a per-frame nonce;
#: an end that knows only one of the two refuses the other's offer, it never misreads it.
CIPHER_CHACHA20 = 2
#: COMPRESS option's first byte: the algorithm.
COMPRESS_ZSTD = 1
#: JUMBO option value: DATA payloads up to `wire.MAX_JUMBO_PAYLOAD` on stream-only sessions.
JUMBO_STREAM = b"\x01"
#: ECHO_RECV option value: both ends' ACKs carry `echo recv` (`wire.Ack.echo_recv`).
ECHO_RECV_ON = b"\x01"


class Compress(StrEnum):
    OFF = "off"
    ON = "on"  #: every write is compressed
    AUTO = "auto"  #: compressed while the stream compresses, raw while it does not


_MODE_BYTE = {Compress.ON: 1, Compress.AUTO: 2}
_BYTE_MODE = {v: k for k, v in _MODE_BYTE.items()}


class NegotiationError(ValueError):
    """The peers cannot agree (or the exit's answer does not fit the offer)."""


@dataclass(frozen=True, slots=True)
class Features:
    """What one session does on top of the base protocol; both ends hold the same value."""

    encrypt: bool = False
    compress: Compress = Compress.OFF
    #: Scheduling policy and path tiers (core/policy.py): the client's choice, both ends follow.
    schedule: Schedule = field(default_factory=Schedule)
    #: Both ends take (and so may cut) DATA payloads up to `wire.MAX_JUMBO_PAYLOAD` while the
    #: session has no datagram path, instead of `wire.MAX_STREAM_PAYLOAD`: a quarter of the
    #: frames per MB, so a quarter of the per-frame work (docs/BENCHMARKS.md, "jumbo").
    jumbo: bool = False
    #: Both ends' ACKs carry `echo recv`, so each end's congestion controller knows its loss
    #: exactly rather than a lower bound (`wire.Ack.echo_recv`). On unless the peer is too old.
    echo_recv: bool = True


def offer(wanted: Features) -> wire.Options:
    """The client's HELLO options for `wanted`."""
    options: list[tuple[int, bytes]] = []
    if wanted.encrypt:
        options.append((wire.OptionType.CIPHER, bytes([CIPHER_CHACHA20])))
    if wanted.compress is not Compress.OFF:
        options.append(
            (wire.OptionType.COMPRESS, bytes([COMPRESS_ZSTD, _MODE_BYTE[wanted.compress]]))
        )
    if wanted.schedule != Schedule():
        options.append((wire.OptionType.SCHEDULE, wanted.schedule.encode()))
    if wanted.jumbo:
        options.append((wire.OptionType.JUMBO, JUMBO_STREAM))
    if wanted.echo_recv:
        options.append((wire.OptionType.ECHO_RECV, ECHO_RECV_ON))
    return tuple(options)


def answer(offered: wire.Options) -> tuple[wire.Options, Features]:
    """The exit's WELCOME options and the features it will run, for a HELLO's `offered`.

    The exit takes whatever it implements and echoes exactly that; anything else it leaves
    out of the answer, and the client decides whether it can live without it.
    """
    found = dict(offered)
    options: list[tuple[int, bytes]] = []
    encrypt = found.get(wire.OptionType.CIPHER) == bytes([CIPHER_CHACHA20])
    if encrypt:
        options.append((wire.OptionType.CIPHER, bytes([CIPHER_CHACHA20])))
    compress = Compress.OFF
    value = found.get(wire.OptionType.COMPRESS, b"")
    if len(value) == 2 and value[0] == COMPRESS_ZSTD and value[1] in _BYTE_MODE:
        compress = _BYTE_MODE[value[1]]
        options.append((wire.OptionType.COMPRESS, value))
    schedule = Schedule()
    value = found.get(wire.OptionType.SCHEDULE, b"")
    if value:
        try:
            schedule = Schedule.decode(value)
        except ValueError:
            pass  # not an answer: the client sees no SCHEDULE and knows we schedule redundantly
        else:
            options.append((wire.OptionType.SCHEDULE, value))
    jumbo = found.get(wire.OptionType.JUMBO) == JUMBO_STREAM
    if jumbo:
        options.append((wire.OptionType.JUMBO, JUMBO_STREAM))
    echo_recv = found.get(wire.OptionType.ECHO_RECV) == ECHO_RECV_ON
    if echo_recv:
        options.append((wire.OptionType.ECHO_RECV, ECHO_RECV_ON))
    return tuple(options), Features(encrypt, compress, schedule, jumbo, echo_recv)


def settle(wanted: Features, answered: wire.Options) -> Features:
    """The features the session runs, from the exit's answer; NegotiationError if unusable."""
    found = dict(answered)
    expected = dict(offer(wanted))
    for otype in (
        wire.OptionType.CIPHER,
        wire.OptionType.COMPRESS,
        wire.OptionType.SCHEDULE,
        wire.OptionType.JUMBO,
        wire.OptionType.ECHO_RECV,
    ):
        if otype in found and found[otype] != expected.get(otype):
            raise NegotiationError(f"the exit answered option {otype.name} that was not offered")
    encrypt = wire.OptionType.CIPHER in found
    if wanted.encrypt and not encrypt:
        # Refuse rather than fall back: the answer is authenticated, so this is the exit's own
        # choice (an old relayd), never an attacker's; plaintext the user did not choose is not
        # an option.
        raise NegotiationError(
            "the exit does not support payload encryption (relayd too old?); "
            "use --no-encrypt to go without"
        )
    compress = wanted.compress if wire.OptionType.COMPRESS in found else Compress.OFF
    # Our own direction follows our choice whatever the exit answered: an exit too old to take
    # SCHEDULE sends its direction redundantly, which costs bytes but never correctness.
    # JUMBO binds both directions (each end takes what the other may cut): answered or not.
    # So does ECHO_RECV (an end that does not know it drops the longer ACKs as broken).
    jumbo, echo_recv = wire.OptionType.JUMBO in found, wire.OptionType.ECHO_RECV in found
    return Features(encrypt, compress, wanted.schedule, jumbo, echo_recv)
