"""How chatty dupsession is on stderr: `-v` flags and the DUPSESSION_LOG variable.

Levels, as in ssh's `-v`: 0 warnings only; 1 (`-v`) dupsession's own session and path
lifecycle (handshake, path up/lost, resume, close); 2 (`-vv`) dupsession's debug detail;
3 (`-vvv`) everything, libraries included (asyncssh). Libraries stay at WARNING below 3,
so `-v` shows what dupsession does, not what asyncssh does.

DUPSESSION_LOG (`info`, `debug`, `trace`, or 1-3) sets the level where no flag can be
given, e.g. in a ProxyCommand line: `DUPSESSION_LOG=info ssh myserver`. The larger of the
two wins.
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "DUPSESSION_LOG"
_NAMES = {"warning": 0, "info": 1, "debug": 2, "trace": 3}
#: Loggers that are "dupsession itself" (the relayd package logs for the exit daemon).
OWN = ("dupsession", "relayd")


class LogSettingError(ValueError):
    """A DUPSESSION_LOG value that is not a level."""


def env_level() -> int:
    """The level asked for by DUPSESSION_LOG (0 when unset)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if not raw:
        return 0
    if raw in _NAMES:
        return _NAMES[raw]
    if raw.isdigit():
        return min(int(raw), 3)
    raise LogSettingError(f"{ENV}={raw!r}: expected one of {', '.join(_NAMES)} or 0-3")


def configure(verbosity: int, program: str = "dupsession") -> None:
    """Send log records to stderr, one line each, at `verbosity` (0-3, see module doc)."""
    try:
        level = max(verbosity, env_level())
    except LogSettingError as exc:
        print(f"{program}: ignoring {exc}", file=sys.stderr)
        level = verbosity
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{program}: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level >= 3 else logging.WARNING)
    own = {0: logging.WARNING, 1: logging.INFO}.get(level, logging.DEBUG)
    for name in OWN:
        logging.getLogger(name).setLevel(own)
