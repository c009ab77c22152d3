"""Keystroke echo measurement shared by `dupsession demo` and `dupsession probe`."""

from __future__ import annotations

import asyncio
import struct
import time

from dupsession.client import Client
from dupsession.settings import ClientSettings

#: One keystroke: a counter and padding, like a small SSH packet.
RECORD = struct.Struct("!I12x")
KEYSTROKE_INTERVAL = 0.05
#: After the last keystroke, wait this long (s) for the last echoes to come home.
SETTLE = 1.0


class EchoMeter:
    """The local side of a session: types keystrokes, times each echo."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self._buffer = bytearray()
        self.ended = asyncio.Event()

    # ByteStream interface used by Client
    def write(self, data: bytes) -> None:
        self._buffer += data
        now = time.monotonic()
        while len(self._buffer) >= RECORD.size:
            (counter,) = RECORD.unpack_from(self._buffer)
            del self._buffer[: RECORD.size]
            self.rtts.append(now - self.sent.pop(counter))

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.write(part)

    def write_eof(self) -> None:
        self.ended.set()

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_congested(self) -> bool:
        return False


async def type_keystrokes(
    client: Client,
    meter: EchoMeter,
    seconds: float,
    interval: float = KEYSTROKE_INTERVAL,
    start: float | None = None,
) -> None:
    """Type one keystroke every `interval` for `seconds`, then let the echoes settle. With a
    `start`, keystroke k goes at `start + k * interval`: a fixed phase, so sessions typing at
    once a fraction of `interval` apart never take the same loop turn, nor do their echoes."""
    if start is not None:
        for counter in range(int(seconds / interval)):
            await asyncio.sleep(max(0.0, start + counter * interval - time.monotonic()))
            meter.sent[counter] = time.monotonic()
            client.local_data(RECORD.pack(counter))
        await asyncio.sleep(SETTLE)
        return
    counter = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        meter.sent[counter] = time.monotonic()
        client.local_data(RECORD.pack(counter))
        counter += 1
        await asyncio.sleep(interval)
    await asyncio.sleep(SETTLE)


async def open_echo_session(
    settings: ClientSettings, target: str, psk: bytes
) -> tuple[Client, EchoMeter]:
    """A client session whose local side is an `EchoMeter` (the target must echo)."""
    client = Client(settings, target, psk)
    meter = EchoMeter()
    client.stream = meter
    await client.connect()
    return client, meter


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
