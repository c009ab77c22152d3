"""Why paths failed, said once and short: `uplink wlan0: no such interface`.

Eight paths over a missing uplink fail for one reason; repeating it eight times (with each
path's URL) made a 900-character line nobody reads. Reasons are grouped: a reason shared by
every path of an uplink is said once for the uplink, other paths are named by their short
label (`wlan0/vps1/udp`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from dupsession.pathspec import PathSpec, short_labels

#: Plain words for the errors a path meets when it opens; the rest keep their strerror.
_ERRNO_WORDS = {
    errno.ENODEV: "no such interface",
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not on this machine",
    errno.ETIMEDOUT: "timed out",
}


def reason(exc: BaseException) -> str:
    """One short lower-case phrase for an exception raised while opening a path."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve: {exc.strerror or exc}".lower()
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _name(spec: PathSpec, label: str) -> str:
    """The label, unless it says nothing (`default/direct/udp` of a bare --path): the URL."""
    return label if spec.uplink or spec.via != "direct" else str(spec)


def grouped(specs: Mapping[int, PathSpec], errors: Mapping[int, str]) -> str:
    """`uplink wlan0: no such interface; default/direct/tcp: connection refused`."""
    labels = short_labels(specs)
    by_reason: dict[str, list[int]] = {}
    for path_id in sorted(errors):
        by_reason.setdefault(errors[path_id], []).append(path_id)
    parts = []
    for why, ids in by_reason.items():
        uplinks: list[str] = []
        rest = set(ids)
        for uplink in dict.fromkeys(specs[i].uplink for i in ids):
            of_uplink = {i for i, s in specs.items() if s.uplink == uplink}
            if uplink is not None and len(of_uplink) > 1 and of_uplink <= rest:
                uplinks.append(uplink)
                rest -= of_uplink
        names = [f"uplink{'s' if len(uplinks) > 1 else ''} {', '.join(uplinks)}"] if uplinks else []
        names += [_name(specs[i], labels[i]) for i in ids if i in rest]
        parts.append(f"{', '.join(names)}: {why}")
    return "; ".join(parts)
