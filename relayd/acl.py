"""The exit's allow-list: which targets sessions may reach. Empty means nothing at all."""

from __future__ import annotations

from dataclasses import dataclass

from dupsession.pathspec import PathSpecError, parse_hostport


class AclError(ValueError):
    """An allow-list entry that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Entries are `HOST:PORT` or `HOST:*`; hosts compare case-insensitively, as written.

    Matching is on the name the client asked for, before resolution: an entry for
    `localhost:22` does not open `127.0.0.1:22`, so what is written is exactly what is allowed.
    """

    entries: frozenset[tuple[str, int | None]]

    @classmethod
    def parse(cls, items: list[str]) -> AllowList:
        entries: set[tuple[str, int | None]] = set()
        for item in items:
            if item.endswith(":*"):
                host = item[:-2].strip("[]")
                if not host:
                    raise AclError(f"allow entry {item!r}: expected HOST:PORT or HOST:*")
                entries.add((host.lower(), None))
                continue
            try:
                host, port = parse_hostport(item, "allow entry")
            except PathSpecError as exc:
                raise AclError(f"{exc} (or HOST:*)") from exc
            entries.add((host.lower(), port))
        return cls(frozenset(entries))

    def permits(self, host: str, port: int) -> bool:
        host = host.lower()
        return (host, port) in self.entries or (host, None) in self.entries
