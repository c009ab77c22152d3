"""Path URLs: `udp://HOST:PORT`, `tcp://HOST:PORT`, each with an optional `?bind=UPLINK`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

SCHEMES = ("udp", "tcp")


class PathSpecError(ValueError):
    """A path URL that cannot be used; the message says what is wrong and what is expected."""


@dataclass(frozen=True, slots=True)
class PathSpec:
    scheme: str
    host: str
    port: int
    uplink: str | None = None  #: interface name or source address

    @property
    def datagram(self) -> bool:
        return self.scheme == "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = f"?bind={self.uplink}" if self.uplink else ""
        return f"{self.scheme}://{host}:{self.port}{suffix}"


def parse_path(url: str) -> PathSpec:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise PathSpecError(
            f"path {url!r}: scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise PathSpecError(f"path {url!r}: bad port") from exc
    if not parts.hostname or port is None:
        raise PathSpecError(f"path {url!r}: expected {parts.scheme}://HOST:PORT")
    if parts.path not in ("", "/"):
        raise PathSpecError(f"path {url!r}: unexpected path component {parts.path!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"bind"}
    if unknown:
        raise PathSpecError(f"path {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    bind = query.get("bind", [None])[-1] or None
    return PathSpec(parts.scheme, parts.hostname, port, bind)


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port), with a clear error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PathSpecError(f"{what} {text!r}: expected HOST:PORT")
    return host, int(port)
