"""Client settings: TOML config (found with platformdirs) merged with command-line flags.

Paths are uplinks x (relays + direct), each bound to its uplink. The config file (default
`<user config dir>/dupsession/config.toml`; documented example: contrib/config.example.toml):

    key = "~/.config/dupsession/key"
    uplinks = ["wlan0", "usb0"]          # interface names or source addresses
    exit = "home"                        # the default exit

    [exits.home]
    address = "198.18.0.1:7300"          # the exit's UDP+TCP port
    transports = ["udp", "tcp"]          # direct paths, per uplink

    [relays.vps1]
    url = "udp://198.18.1.1:7400"        # a `relayd relay` forwarding to this exit
    exit = "home"

    [relays.jump]
    url = "ssh://me@198.18.2.1"          # any SSH server; reaches the exit's TCP port
    exit = "home"
    exit_address = "10.0.0.5:7300"       # optional: the exit as the SSH server sees it

    [hosts."build-box"]                  # per-target choices, matched on the HOST argument
    exit = "lab"
    uplinks = ["wlan0"]

`paths = [URL, ...]` adds explicit paths. Every problem is a `SettingsError` whose message
names the file and the key at fault.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from dupsession.core.negotiate import Compress
from dupsession.core.policy import (
    DEFAULT_BEST_K,
    DEFAULT_POLICY,
    MAX_BEST_K,
    Policy,
    Schedule,
    Tier,
)
from dupsession.core.session import SessionConfig
from dupsession.pathspec import PathSpec, PathSpecError, parse_hostport, parse_path, parse_tier

APP = "dupsession"
DEFAULT_CONNECT_TIMEOUT = 10.0
DIRECT_TRANSPORTS = ("udp", "tcp")


class SettingsError(ValueError):
    """Configuration that cannot be used; the message says where and why."""


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def default_key_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "key"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    key_path: Path = field(default_factory=default_key_path)
    paths: tuple[PathSpec, ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    session: SessionConfig = field(default_factory=SessionConfig)
    config_path: Path | None = None  #: the file these came from, watched for changes
    host: str | None = None  #: the HOST whose [hosts.HOST] choices apply
    exit_name: str | None = None  #: the [exits.NAME] the paths lead to, if the config chose one
    #: Encrypt DATA payloads (core/seal.py); None: the command's default (`forward`: on,
    #: ProxyCommand: off, as ssh encrypts its own stream).
    encrypt: bool | None = None
    #: Scheduling policy and best-k's k (core/policy.py); each path's tier is in its spec.
    #: `auto`: every keystroke on every path while they have room, a transfer striped over
    #: them (issue 10's targets, docs/BENCHMARKS.md). The wire default stays `redundant` (no
    #: SCHEDULE option), so the client always names it.
    policy: Policy = DEFAULT_POLICY
    best_k: int = DEFAULT_BEST_K

    def schedule(self) -> Schedule:
        """What the HELLO's SCHEDULE option asks for; paths are numbered from 1, in order."""
        tiers = tuple(
            (i, spec.tier) for i, spec in enumerate(self.paths, 1) if spec.tier is not Tier.PRIMARY
        )
        return Schedule(self.policy, self.best_k, tiers)

    #: zstd over the stream (core/compress.py): `auto` compresses while the data compresses.
    compress: Compress = Compress.AUTO


_SCALARS = ("connect_timeout", "grace_period", "probe_interval")
_FLAGS = ("encrypt",)
_SCHEDULE_KEYS = ("policy", "best_k")
_CHOICES = {"compress": Compress}
_TOP_KEYS = {
    *_SCHEDULE_KEYS,
    "key",
    "paths",
    "uplinks",
    "exit",
    "exits",
    "relays",
    "hosts",
    "forward",
    *_SCALARS,
    *_FLAGS,
    *_CHOICES,
}
_HOST_KEYS = {"key", "paths", "uplinks", "exit", *_SCALARS, *_FLAGS, *_SCHEDULE_KEYS, *_CHOICES}
_EXIT_KEYS = {"address", "transports"}
_RELAY_KEYS = {"url", "exit", "exit_address", "tier"}
_UPLINK_KEYS = {"bind", "tier"}
_FORWARD_KEYS = {"listen", "target"}
#: `dupsession forward` listens here unless told otherwise: never on the network by accident.
DEFAULT_FORWARD_BIND = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ForwardSpec:
    """One local port forward: connections to bind:port become sessions to host:target_port."""

    bind: str
    port: int
    host: str
    target_port: int

    @property
    def target(self) -> str:
        """HOST:PORT as the HELLO carries it (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.target_port}"

    def __str__(self) -> str:
        bind = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{bind}:{self.port} -> {self.target}"


def parse_forward(listen: str, host: str, port: int | str) -> ForwardSpec:
    """`[BIND:]LPORT`, HOST, PORT -> ForwardSpec; BIND defaults to 127.0.0.1."""
    listen = str(listen)
    try:
        if ":" in listen:
            bind, lport = parse_hostport(listen, "listen address", listen=True)
        else:
            bind, lport = DEFAULT_FORWARD_BIND, int(listen)
        target_port = int(port)
    except (PathSpecError, ValueError) as exc:
        raise SettingsError(
            f"forward {listen} {host} {port}: expected [BIND:]LPORT HOST PORT ({exc})"
        ) from exc
    if not 0 <= lport < 65536 or not 0 < target_port < 65536 or not host:
        raise SettingsError(f"forward {listen} {host} {port}: port out of range or no host")
    return ForwardSpec(bind, lport, host.strip("[]"), target_port)


def _forwards(document: dict[str, Any], where: str) -> list[ForwardSpec]:
    entries = document.get("forward", [])
    if not isinstance(entries, list):
        raise SettingsError(f"{where}: 'forward' must be [[forward]] tables")
    out = []
    for index, raw in enumerate(entries, start=1):
        label = f"{where}: [[forward]] #{index}"
        entry = _table(raw, label)
        _check_keys(entry, _FORWARD_KEYS, label)
        listen, target = entry.get("listen"), entry.get("target")
        if not isinstance(listen, str | int) or isinstance(listen, bool):
            raise SettingsError(f'{label}: needs listen = "[BIND:]LPORT"')
        if not isinstance(target, str):
            raise SettingsError(f'{label}: needs target = "HOST:PORT" (as the exit reaches it)')
        try:
            host, port = parse_hostport(target, "target")
        except PathSpecError as exc:
            raise SettingsError(f"{label}: {exc}") from exc
        try:
            out.append(parse_forward(str(listen), host, port))
        except SettingsError as exc:
            raise SettingsError(f"{label}: {exc}") from exc
    return out


def load_forwards(config: Path | None) -> list[ForwardSpec]:
    """The config's [[forward]] entries (none without a config file)."""
    path = config if config is not None else default_config_path()
    if config is None and not path.exists():
        return []
    return _forwards(_read(path), str(path))


def _check_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    """Reject keys we do not know: a typo (or `bind` in a relay) must not be silently ignored."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise SettingsError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known here: {', '.join(sorted(known))})"
        )


def _strings(value: Any, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where}: {name!r} must be a list of strings")
    return list(value)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a table")
    return value


def _scalars(settings: ClientSettings, table: dict[str, Any], where: str) -> ClientSettings:
    if "key" in table:
        if not isinstance(table["key"], str):
            raise SettingsError(f"{where}: 'key' must be a file path string")
        settings = replace(settings, key_path=Path(table["key"]).expanduser())
    settings = _choices(settings, table, where)
    if "policy" in table or "best_k" in table:
        policy, best_k = table.get("policy", settings.policy), table.get("best_k", settings.best_k)
        settings = replace(settings, **_schedule_choice(policy, best_k, where))
    return _seconds(settings, table, where)


def _choices(settings: ClientSettings, table: dict[str, Any], where: str) -> ClientSettings:
    """The keys with a fixed set of values (`_CHOICES`) and the true/false ones (`_FLAGS`)."""
    changes: dict[str, Any] = {}
    for name, choices in _CHOICES.items():
        if name in table:
            allowed = [str(c) for c in choices]
            if table[name] not in allowed:
                raise SettingsError(f"{where}: {name!r} must be one of {', '.join(allowed)}")
            changes[name] = choices(table[name])
    for name in _FLAGS:
        if name in table:
            if not isinstance(table[name], bool):
                raise SettingsError(f"{where}: {name!r} must be true or false")
            changes[name] = table[name]
    return replace(settings, **changes)


def _seconds(settings: ClientSettings, table: dict[str, Any], where: str) -> ClientSettings:
    """The durations (`_SCALARS`): positive numbers of seconds."""
    for name in _SCALARS:
        if name in table:
            value = table[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise SettingsError(f"{where}: {name!r} must be a positive number of seconds")
            if name == "connect_timeout":
                settings = replace(settings, connect_timeout=float(value))
            else:
                fields: dict[str, Any] = {name: float(value)}  # a float field, by _SCALARS
                settings = replace(settings, session=replace(settings.session, **fields))
    return settings


def _schedule_choice(policy: Any, best_k: Any, where: str) -> dict[str, Any]:
    """Validated `policy` and `best_k` (config keys or the --policy/--best-k flags)."""
    try:
        chosen = Policy(policy)
    except ValueError:
        raise SettingsError(
            f"{where}: policy must be one of {', '.join(p.value for p in Policy)}, not {policy!r}"
        ) from None
    if not isinstance(best_k, int) or isinstance(best_k, bool) or not 1 <= best_k <= MAX_BEST_K:
        raise SettingsError(f"{where}: best_k must be a whole number from 1 to {MAX_BEST_K}")
    return {"policy": chosen, "best_k": best_k}


def _uplinks(value: Any, where: str) -> list[tuple[str | None, Tier]]:
    """`uplinks = ["wlan0", {bind = "usb0", tier = "backup"}]`: names, or tables with a tier."""
    if not isinstance(value, list):
        raise SettingsError(f"{where}: 'uplinks' must be a list")
    out: list[tuple[str | None, Tier]] = []
    for entry in value:
        if isinstance(entry, str):
            out.append((entry, Tier.PRIMARY))
            continue
        label = f"{where}: uplink {entry!r}"
        table = _table(entry, label)
        _check_keys(table, _UPLINK_KEYS, label)
        if not isinstance(table.get("bind"), str):
            raise SettingsError(f'{label}: needs bind = "IFACE_OR_ADDR"')
        out.append((table["bind"], _tier(table, label)))
    return out


def _tier(table: dict[str, Any], where: str) -> Tier:
    try:
        return parse_tier(str(table.get("tier", "primary")), where)
    except PathSpecError as exc:
        raise SettingsError(str(exc)) from exc


#: The stricter of two tiers wins: a backup uplink keeps every route over it a backup.
_TIER_RANK = {Tier.PRIMARY: 0, Tier.OVERFLOW: 1, Tier.BACKUP: 2}


def _route_paths(
    document: dict[str, Any],
    exit_name: str,
    uplinks: list[tuple[str | None, Tier]],
    where: str,
) -> list[PathSpec]:
    """uplinks x (direct transports of the exit + the exit's relays)."""
    exits = _table(document.get("exits", {}), f"{where}: [exits]")
    if exit_name not in exits:
        raise SettingsError(f"{where}: exit {exit_name!r} is not defined under [exits]")
    exit_table = _table(exits[exit_name], f"{where}: [exits.{exit_name}]")
    try:
        host, port = parse_hostport(str(exit_table.get("address", "")), "address")
    except PathSpecError as exc:
        raise SettingsError(f"{where}: [exits.{exit_name}] {exc}") from exc
    transports = _strings(
        exit_table.get("transports", list(DIRECT_TRANSPORTS)), where, "transports"
    )
    bad = set(transports) - set(DIRECT_TRANSPORTS)
    if bad:
        raise SettingsError(f"{where}: [exits.{exit_name}] unknown transport(s) {sorted(bad)}")
    relays = _table(document.get("relays", {}), f"{where}: [relays]")
    routes: list[PathSpec] = [PathSpec(t, host, port, via="direct") for t in transports]
    for name, raw in relays.items():
        relay = _table(raw, f"{where}: [relays.{name}]")
        if relay.get("exit", exit_name) != exit_name:
            continue
        url = relay.get("url")
        if not isinstance(url, str):
            raise SettingsError(f'{where}: [relays.{name}] needs url = "udp|tcp|ssh://..."')
        if url.startswith("ssh://") and "exit=" not in url:
            forward = relay.get("exit_address", f"{host}:{port}")
            url += ("&" if "?" in url else "?") + f"exit={forward}"
        try:
            route = parse_path(url, via=name)
        except PathSpecError as exc:
            raise SettingsError(f"{where}: [relays.{name}] {exc}") from exc
        if "tier" in relay:
            route = replace(route, tier=_tier(relay, f"{where}: [relays.{name}]"))
        routes.append(route)
    return [
        replace(route, uplink=uplink, tier=max(route.tier, tier, key=_TIER_RANK.__getitem__))
        for uplink, tier in uplinks
        for route in routes
    ]


def _resolve(
    document: dict[str, Any],
    host: str | None,
    where: str,
    exit_override: str | None = None,
    need_paths: bool = True,
) -> ClientSettings:
    _check_keys(document, _TOP_KEYS, where)
    _forwards(document, where)  # checked wherever the file is read, like every other table
    tables: dict[str, dict[str, Any]] = {}
    for section, known in (("hosts", _HOST_KEYS), ("exits", _EXIT_KEYS), ("relays", _RELAY_KEYS)):
        tables[section] = _table(document.get(section, {}), f"{where}: [{section}]")
        for name, table in tables[section].items():  # all of them, not only those in use now
            label = f"{where}: [{section}.{name}]"
            _check_keys(_table(table, label), known, label)
    hosts, exits = tables["hosts"], tables["exits"]
    overrides: dict[str, Any] = {}
    if host is not None and host in hosts:
        overrides = hosts[host]
    merged = {**document, **overrides}
    if exit_override is not None:
        merged["exit"] = exit_override
    settings = _scalars(ClientSettings(), merged, where)
    uplinks = _uplinks(merged.get("uplinks", []), where)
    paths: list[PathSpec] = []
    exit_name = merged.get("exit")
    if exit_name is not None:
        if not isinstance(exit_name, str):
            raise SettingsError(f"{where}: 'exit' must be the name of an [exits] table")
        paths += _route_paths(document, exit_name, uplinks or [(None, Tier.PRIMARY)], where)
    try:
        paths += [parse_path(p) for p in _strings(merged.get("paths", []), where, "paths")]
    except PathSpecError as exc:
        raise SettingsError(f"{where}: {exc}") from exc
    if need_paths and not paths and exits and exit_name is None:
        # Exits are defined but none chosen: say exactly that, not "no paths configured".
        scope = f" or under [hosts.{host}]" if host else ""
        raise SettingsError(
            f'{where}: no exit chosen: add exit = "{next(iter(exits))}" at the top{scope}, '
            f"or pass --exit NAME (defined: {', '.join(exits)})"
        )
    return replace(settings, paths=tuple(paths), exit_name=exit_name)


def load(
    config: Path | None, host: str | None, exit_name: str | None = None, need_paths: bool = True
) -> ClientSettings:
    """Settings from `config` (or the default file, if it exists), with `host`'s choices;
    `exit_name` (the --exit flag) picks the exit instead of the file's `exit =`. With
    `need_paths` (no --path given), a config that yields no path says why."""
    path = config if config is not None else default_config_path()
    if config is None and not path.exists():
        if exit_name is not None:
            raise SettingsError(f"--exit {exit_name}: no config file {path} defines exits")
        return ClientSettings(host=host)
    document = _read(path)
    return replace(
        _resolve(document, host, str(path), exit_name, need_paths), config_path=path, host=host
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config {path} is not valid TOML: {exc}") from exc


def with_overrides(
    settings: ClientSettings,
    key: Path | None,
    paths: list[str],
    grace_period: float | None = None,
    encrypt: bool | None = None,
    policy: str | None = None,
    best_k: int | None = None,
    compress: str | None = None,
) -> ClientSettings:
    """Command-line flags win over the file: `--path` replaces the configured paths (and
    stops the config file from being watched for path changes)."""
    if key is not None:
        settings = replace(settings, key_path=key)
    if paths:
        try:
            specs = tuple(parse_path(p) for p in paths)
        except PathSpecError as exc:
            raise SettingsError(str(exc)) from exc
        settings = replace(settings, paths=specs, config_path=None)
    if grace_period is not None:
        if grace_period <= 0:
            raise SettingsError("--grace must be a positive number of seconds")
        settings = replace(settings, session=replace(settings.session, grace_period=grace_period))
    if encrypt is not None:
        settings = replace(settings, encrypt=encrypt)
    if policy is not None or best_k is not None:
        chosen = _schedule_choice(
            settings.policy if policy is None else policy,
            settings.best_k if best_k is None else best_k,
            "--policy/--best-k",
        )
        settings = replace(settings, **chosen)
    if compress is not None:
        settings = replace(settings, compress=Compress(compress))
    return settings
