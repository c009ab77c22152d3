"""Scenarios: which uplinks and relays exist, their address plan, and every impairment setting.

Why a separate model: the CLI, the Python API and the emulator all need the same answer to
"which link is 198.19.2.0/24 and what loss does up1-relay2 have outbound", and a TOML typo must
fail before any namespace exists. See README.md beside this file for the format.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrib.netlab.emulator import DIRECTIONS, normalize_params, route_name

__all__ = ["SCENARIO_DIR", "Link", "Scenario", "ScenarioError", "load_scenario"]

SCENARIO_DIR = Path(__file__).parent / "scenarios"

# Link names are interface names (<= 15 chars) and must not contain '-' (it joins route names).
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
_RESERVED = {"client", "wan", "server", "lo", "tun0", "eth0"}
_TOP_KEYS = {"name", "description", "uplinks", "relays", "seed", "links", "routes"}


class ScenarioError(ValueError):
    """A scenario that cannot be built; the message names the offending key."""


@dataclass(frozen=True)
class Link:
    """One veth between the wan router and a node, with its own /24 in 198.18.0.0/15."""

    name: str  # link name = interface name on the wan side
    kind: str  # "uplink", "relay" or "server"
    node: str  # node at the far end: "client" for uplinks
    ifname: str  # interface name inside that node
    subnet: str
    node_addr: str
    wan_addr: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "node": self.node,
            "ifname": self.ifname,
            "subnet": self.subnet,
            "node_addr": self.node_addr,
            "wan_addr": self.wan_addr,
        }


@dataclass
class Scenario:
    """A parsed, validated scenario. `raw` is the TOML document, kept to rebuild from state."""

    name: str
    uplinks: tuple[str, ...]
    relays: tuple[str, ...]
    links: tuple[Link, ...]
    stages: dict[str, dict[str, dict[str, Any]]]
    seed: int | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Namespace roles, in creation order."""
        return ("client", "wan", *self.relays, "server")

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(f"no link {name!r}; links: {[x.name for x in self.links]}")

    def routes(self) -> list[str]:
        """Every route name (pair of links, client side first)."""
        return [route_name(a.name, b.name) for a, b in itertools.combinations(self.links, 2)]

    def emulator_config(self, t0: float | None = None) -> dict[str, Any]:
        """What emulator.py is started with (JSON): links in order, stage settings, seed."""
        return {
            "name": self.name,
            "seed": self.seed,
            "t0": t0,
            "links": [{"name": x.name, "kind": x.kind, "subnet": x.subnet} for x in self.links],
            "stages": self.stages,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, default_name: str = "scenario") -> Scenario:
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise ScenarioError(f"unknown top-level keys {sorted(unknown)}; known: {_TOP_KEYS}")
        uplinks = _names(doc.get("uplinks", 2), "up", "uplinks")
        relays = _names(doc.get("relays", 0), "relay", "relays")
        if not uplinks:
            raise ScenarioError("a scenario needs at least one uplink")
        if len(uplinks) > 99 or len(relays) > 199:
            raise ScenarioError("at most 99 uplinks and 199 relays fit the address plan")
        seen: set[str] = set()
        for n in (*uplinks, *relays):
            if n in seen or n in _RESERVED:
                raise ScenarioError(f"link name {n!r} is duplicated or reserved ({_RESERVED})")
            seen.add(n)
        links = [
            _link(n, "uplink", "client", n, f"198.18.{i}.0/24") for i, n in enumerate(uplinks, 1)
        ]
        links += [_link(n, "relay", n, "eth0", f"198.19.{j}.0/24") for j, n in enumerate(relays, 1)]
        links.append(_link("server", "server", "server", "eth0", "198.19.200.0/24"))
        link_names = [x.name for x in links]
        route_names = [route_name(a, b) for a, b in itertools.combinations(link_names, 2)]
        stages: dict[str, dict[str, dict[str, Any]]] = {}
        _apply(stages, doc.get("links", {}), link_names, "links")
        _apply(stages, doc.get("routes", {}), route_names, "routes")
        seed = doc.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ScenarioError(f"seed must be an integer, not {seed!r}")
        return cls(
            name=str(doc.get("name", default_name)),
            uplinks=tuple(uplinks),
            relays=tuple(relays),
            links=tuple(links),
            stages=stages,
            seed=seed,
            description=str(doc.get("description", "")),
            raw=doc,
        )


def _names(value: Any, prefix: str, key: str) -> list[str]:
    """`uplinks = 2` means ["up1", "up2"]; a list gives the names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [f"{prefix}{i}" for i in range(1, value + 1)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for v in value:
            if not _NAME.match(v):
                raise ScenarioError(
                    f"{key}: {v!r} is not a valid link name (lowercase letters, digits, '_', "
                    "starting with a letter, at most 15 characters, no '-')"
                )
        return list(value)
    raise ScenarioError(f"{key} must be a count or a list of names, not {value!r}")


def _link(name: str, kind: str, node: str, ifname: str, subnet: str) -> Link:
    base = subnet.rsplit(".", 1)[0]
    return Link(name, kind, node, ifname, subnet, node_addr=f"{base}.2", wan_addr=f"{base}.1")


def _apply(
    stages: dict[str, dict[str, dict[str, Any]]],
    section: Any,
    names: list[str],
    where: str,
) -> None:
    """Merge `[links.PATTERN]` / `[routes.PATTERN]` tables, in file order, into `stages`.

    Plain keys apply to both directions, then `both`, then `out` / `back`: later and more
    specific settings win key by key, so `[routes."*"]` can set a default that
    `[routes.up1-relay1]` refines.
    """
    if not isinstance(section, dict):
        raise ScenarioError(f"[{where}] must be a table")
    for pattern, entry in section.items():
        if not isinstance(entry, dict):
            raise ScenarioError(f"[{where}.{pattern}] must be a table")
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ScenarioError(f"[{where}.{pattern}] matches none of {names}")
        common = {k: v for k, v in entry.items() if k not in ("out", "back", "both")}
        common.update(entry.get("both", {}))
        for d in DIRECTIONS:
            sub = entry.get(d, {})
            if not isinstance(sub, dict):
                raise ScenarioError(f"[{where}.{pattern}.{d}] must be a table")
            try:
                params = normalize_params({**common, **sub})
            except ValueError as exc:
                raise ScenarioError(f"[{where}.{pattern}]: {exc}") from None
            for n in matched:
                stages.setdefault(n, {}).setdefault(d, {}).update(params)


def load_scenario(source: Scenario | dict[str, Any] | str | Path) -> Scenario:
    """A Scenario from an object, a dict, a TOML file path, a bundled name, or TOML text.

    Bundled names are files in scenarios/ without `.toml` (e.g. "two-uplinks-two-relays").
    """
    if isinstance(source, Scenario):
        return source
    if isinstance(source, dict):
        return Scenario.from_dict(source)
    text: str | None = None
    name = "scenario"
    if isinstance(source, Path) or ("\n" not in source and "=" not in source):
        path = Path(source)
        if not path.exists() and not path.suffix:
            path = SCENARIO_DIR / f"{source}.toml"
        if not path.exists():
            bundled = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
            raise ScenarioError(f"no scenario file {str(source)!r}; bundled: {bundled}")
        text = path.read_text(encoding="utf-8")
        name = path.stem
    else:
        text = source
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{name}: {exc}") from None
    return Scenario.from_dict(doc, default_name=name)
