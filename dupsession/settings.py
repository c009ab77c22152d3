"""Client settings: TOML config (found with platformdirs) merged with command-line flags.

Config file (default `<user config dir>/dupsession/config.toml`):

    key = "~/.config/dupsession/key"
    paths = ["udp://198.18.0.1:7300", "tcp://198.18.0.1:7300?bind=wlan0"]
    connect_timeout = 10     # seconds to wait for the first WELCOME
    grace_period = 600       # seconds a session survives with every path down

    [hosts."build-box"]      # per-target choices, matched on the HOST argument
    paths = ["udp://198.18.0.9:7300"]

Every problem is a `SettingsError` whose message names the file and the key at fault.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from dupsession.core.session import SessionConfig
from dupsession.pathspec import PathSpec, PathSpecError, parse_path

APP = "dupsession"
DEFAULT_CONNECT_TIMEOUT = 10.0


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


_TOP_KEYS = {"key", "paths", "connect_timeout", "grace_period", "probe_interval", "hosts"}


def _apply(settings: ClientSettings, table: dict[str, Any], where: str) -> ClientSettings:
    unknown = set(table) - _TOP_KEYS
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "key" in table:
        if not isinstance(table["key"], str):
            raise SettingsError(f"{where}: 'key' must be a file path string")
        settings = replace(settings, key_path=Path(table["key"]).expanduser())
    if "paths" in table:
        raw = table["paths"]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise SettingsError(f"{where}: 'paths' must be a list of URL strings")
        try:
            settings = replace(settings, paths=tuple(parse_path(p) for p in raw))
        except PathSpecError as exc:
            raise SettingsError(f"{where}: {exc}") from exc
    for name in ("connect_timeout", "grace_period", "probe_interval"):
        if name in table:
            value = table[name]
            if not isinstance(value, int | float) or value <= 0:
                raise SettingsError(f"{where}: {name!r} must be a positive number of seconds")
            if name == "connect_timeout":
                settings = replace(settings, connect_timeout=float(value))
            else:
                settings = replace(
                    settings, session=replace(settings.session, **{name: float(value)})
                )
    return settings


def load(config: Path | None, host: str | None) -> ClientSettings:
    """Settings from `config` (or the default file, if it exists), with `host`'s overrides."""
    path = config if config is not None else default_config_path()
    settings = ClientSettings()
    if config is None and not path.exists():
        return settings
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config {path} is not valid TOML: {exc}") from exc
    settings = _apply(settings, {k: v for k, v in document.items() if k != "hosts"}, str(path))
    hosts = document.get("hosts", {})
    if not isinstance(hosts, dict):
        raise SettingsError(f"{path}: 'hosts' must be a table of tables")
    if host is not None and host in hosts:
        settings = _apply(settings, hosts[host], f"{path} [hosts.{host}]")
    return settings


def with_overrides(
    settings: ClientSettings,
    key: Path | None,
    paths: list[str],
    grace_period: float | None = None,
) -> ClientSettings:
    """Command-line flags win over the file: `--path` replaces the configured paths."""
    if key is not None:
        settings = replace(settings, key_path=key)
    if paths:
        try:
            settings = replace(settings, paths=tuple(parse_path(p) for p in paths))
        except PathSpecError as exc:
            raise SettingsError(str(exc)) from exc
    if grace_period is not None:
        settings = replace(settings, session=replace(settings.session, grace_period=grace_period))
    return settings
