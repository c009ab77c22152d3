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


#: A key file is one line; anything much longer is not a key file.
MAX_KEY_FILE = 4096


def load(path: Path) -> bytes:
    """The key in `path`, or KeyFileError saying exactly what is wrong with the file.

    Opened non-blocking and checked to be a regular file first: a FIFO or a device given by
    mistake gets a clear error instead of a hang (or an endless read).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        raw = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by others; run: chmod 600 {path}")
    hint = "(make one with dupsession keygen)"
    if len(raw) > MAX_KEY_FILE:
        raise KeyFileError(f"key file {path} is too large to be a key file {hint}")
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except ValueError as exc:  # UnicodeDecodeError included: a raw binary key
        raise KeyFileError(f"key file {path} is not one line of hex digits {hint}") from exc
    if len(key) != PSK_SIZE:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes, expected {PSK_SIZE}")
    return key
