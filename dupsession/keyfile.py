"""Pre-shared key files: one line of 64 hex digits, readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dupsession.core.handshake import PSK_SIZE


class KeyFileError(ValueError):
    """A key file that is missing, malformed, or readable by others."""


def new_key_text() -> str:
    """A fresh random key as its file holds it: 64 hex digits and a newline."""
    return os.urandom(PSK_SIZE).hex() + "\n"


def generate(path: Path, force: bool = False) -> None:
    """Write a fresh random key with mode 0600; never overwrite unless `force`.

    Missing parent directories are made with mode 0700 (a fresh HOME has no
    ~/.config/dupsession yet), the way ssh-keygen makes ~/.ssh.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists (use --force to replace it)") from exc
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(new_key_text())


def load(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by others; run: chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(f"key file {path} is not hex (make one with dupsession keygen)") from exc
    if len(key) != PSK_SIZE:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes, expected {PSK_SIZE}")
    return key
