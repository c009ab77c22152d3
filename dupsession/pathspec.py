"""Path URLs, one per route to the exit:

    udp://HOST:PORT            the exit (direct) or a `relayd relay`, over UDP
    tcp://HOST:PORT            the same over TCP
    ssh://[USER@]HOST[:PORT]?exit=EXITHOST:EXITPORT
                               any stock SSH server: a direct-tcpip channel to the exit's TCP
                               port, with the user's own keys, agent and known_hosts

Options, after `?`: `bind=IFACE_OR_ADDR` pins the path to an uplink; `via=NAME` labels the
route in status views (default: `direct`, or the relay's host); `tier=primary|overflow|backup`
says when the path carries data (default primary; docs/ARCHITECTURE.md, tiers); for ssh,
`exit=` (required), `identity=FILE`, `known_hosts=FILE` and `pty=no` (skip the pty session
that makes sshd disable Nagle: only for measuring what it buys).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from dupsession.core.policy import Tier

SCHEMES = ("udp", "tcp", "ssh")
SSH_DEFAULT_PORT = 22
_OPTIONS = {
    "udp": {"bind", "via", "tier"},
    "tcp": {"bind", "via", "tier"},
    "ssh": {"bind", "via", "tier", "exit", "identity", "known_hosts", "pty"},
}


class PathSpecError(ValueError):
    """A path URL that cannot be used; the message says what is wrong and what is expected."""


@dataclass(frozen=True, slots=True)
class PathSpec:
    scheme: str
    host: str
    port: int
    uplink: str | None = None  #: interface name or source address
    via: str = "direct"  #: route label: "direct", or the relay's name
    user: str | None = None  #: ssh only
    exit: tuple[str, int] | None = None  #: ssh only: where the direct-tcpip channel goes
    identity: str | None = None  #: ssh only: private key file (default: agent and ~/.ssh)
    known_hosts: str | None = None  #: ssh only (default: ~/.ssh/known_hosts)
    pty: bool = True  #: ssh only: open the pty session that makes sshd set TCP_NODELAY
    tier: Tier = Tier.PRIMARY  #: when the path carries data (metered and backup links)

    @property
    def datagram(self) -> bool:
        return self.scheme == "udp"

    @property
    def label(self) -> str:
        """Short name for views and logs: UPLINK/VIA/TRANSPORT, e.g. `wlan0/vps1/udp`."""
        return f"{self.uplink or 'default'}/{self.via}/{self.scheme}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        options = []
        if self.exit is not None:
            options.append(f"exit={self.exit[0]}:{self.exit[1]}")
        if self.uplink:
            options.append(f"bind={self.uplink}")
        if self.tier is not Tier.PRIMARY:
            options.append(f"tier={self.tier}")
        suffix = "?" + "&".join(options) if options else ""
        return f"{self.scheme}://{user}{host}:{self.port}{suffix}"


def parse_path(url: str, via: str | None = None) -> PathSpec:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise PathSpecError(
            f"path {url!r}: scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise PathSpecError(f"path {url!r}: bad port") from exc
    if parts.scheme == "ssh" and port is None:
        port = SSH_DEFAULT_PORT
    if not parts.hostname or port is None:
        raise PathSpecError(f"path {url!r}: expected {parts.scheme}://HOST:PORT")
    if parts.path not in ("", "/"):
        raise PathSpecError(f"path {url!r}: unexpected path component {parts.path!r}")
    if parts.username and parts.scheme != "ssh":
        raise PathSpecError(f"path {url!r}: only ssh:// paths take a user name")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - _OPTIONS[parts.scheme]
    if unknown:
        raise PathSpecError(f"path {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    exit_address = None
    if parts.scheme == "ssh":
        if not query.get("exit"):
            raise PathSpecError(
                f"path {url!r}: ssh paths need ?exit=HOST:PORT, the exit's TCP address as "
                "the SSH server reaches it"
            )
        exit_address = parse_hostport(query["exit"], f"path {url!r}: exit")
    label = query.get("via") or via
    tier = parse_tier(query.get("tier", "primary"), f"path {url!r}")
    if label is None:
        label = parts.hostname if parts.scheme == "ssh" else "direct"
    return PathSpec(
        parts.scheme,
        parts.hostname,
        port,
        uplink=query.get("bind") or None,
        via=label,
        user=parts.username,
        exit=exit_address,
        identity=query.get("identity") or None,
        known_hosts=query.get("known_hosts") or None,
        pty=query.get("pty", "yes").lower() not in ("no", "0", "false"),
        tier=tier,
    )


def parse_tier(text: str, where: str) -> Tier:
    try:
        return Tier(text)
    except ValueError:
        raise PathSpecError(
            f"{where}: tier must be {', '.join(t.value for t in Tier)}, not {text!r}"
        ) from None


def short_labels(specs: Mapping[int, PathSpec]) -> dict[int, str]:
    """Each path's `label`, or its URL where two paths would share a label (two `--path`
    URLs to different ports of one host are both `default/direct/udp`)."""
    counts = Counter(spec.label for spec in specs.values())
    return {i: spec.label if counts[spec.label] == 1 else str(spec) for i, spec in specs.items()}


def with_uplink(spec: PathSpec, uplink: str | None) -> PathSpec:
    """The same route pinned to another uplink."""
    from dataclasses import replace

    return replace(spec, uplink=uplink)


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def parse_hostport(text: str, what: str = "address", listen: bool = False) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port), with a clear error. A listening address
    may use port 0 (any free port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    lowest = 0 if listen else 1
    # ASCII digits only: str.isdigit() also accepts other scripts' digits (and int() parses
    # some of them), which would let one port be spelled many ways past the allow-list.
    if not sep or not host or not _is_port(port) or not lowest <= int(port) < 65536:
        raise PathSpecError(f"{what} {text!r}: expected HOST:PORT")
    return host, int(port)
