"""Bulk payloads for transfer tests: random bytes with their digest, written once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Bytes moved each way by the bulk-transfer tests.
BULK_SIZE = 50_000_000


def write_random_file(path: Path, size: int = BULK_SIZE) -> str:
    """Write `size` random bytes to `path`; return their sha256 hex digest."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            digest.update(chunk)
            handle.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
