"""Replay memory that survives a restart: the nonces of accepted HELLOs still valid, on disk.

Why: a HELLO is valid while within `MAX_CLOCK_SKEW` (120 s) of the exit's clock; the exit
remembers the nonce of each HELLO it accepted for that long (`replay_expiry`: 120 s past the
later of the HELLO's own time and its acceptance, so a client clock ahead is covered). Kept
in RAM only, a restart would forget them and a captured HELLO replayed within the window
would open a session again (a target connection, a session lingering for its grace period).
So each accepted nonce is appended here and synced before the WELCOME goes out, and a
starting exit loads the unexpired ones.

Records are fixed-size: nonce (16) | session id (8) | expiry (f64, Unix seconds). The file is
rewritten with only the live records at start and whenever it grows past `COMPACT_AT` records.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

log = logging.getLogger("relayd")

RECORD = struct.Struct("!16s8sd")
FILE_NAME = "replay-nonces"
COMPACT_AT = 65536


class ReplayJournal:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._fd: int | None = None
        self._records = 0

    def load(self, now: float) -> list[tuple[bytes, float, bytes]]:
        """Unexpired (nonce, expiry, session id) records; opens the journal for appending."""
        live: list[tuple[bytes, float, bytes]] = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        usable = len(data) - len(data) % RECORD.size  # a torn last record is dropped
        for offset in range(0, usable, RECORD.size):
            nonce, sid, expiry = RECORD.unpack_from(data, offset)
            if expiry > now:
                live.append((nonce, expiry, sid))
        self._rewrite(live)
        return live

    def append(self, nonce: bytes, expiry: float, session_id: bytes, now: float) -> None:
        """Record an accepted nonce durably (fsync) before the session is answered."""
        if self._fd is None:
            return
        if self._records >= COMPACT_AT:
            self.load(now)
        os.write(self._fd, RECORD.pack(nonce, session_id, expiry))
        os.fsync(self._fd)
        self._records += 1

    def _rewrite(self, live: list[tuple[bytes, float, bytes]]) -> None:
        self.close()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(RECORD.pack(n, s, e) for n, e, s in live))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._records = len(live)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
