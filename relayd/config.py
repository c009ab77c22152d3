"""`relayd serve` configuration: a TOML file (`--config`) and flags, flags winning.

Read at start and again on SIGHUP (allow-list, keys, limits, grace; the listening address and
the state directory need a restart). Every mistake is one clear `ConfigError` line.

    listen = "0.0.0.0:7000"
    keys = ["/etc/relayd/exit.key", "/etc/relayd/next.key"]   # several: key rotation
    allow = ["127.0.0.1:22", "vnc.lan:*"]
    grace = 600
    state_dir = "/var/lib/relayd"          # replay memory that survives restarts
    [limits]
    max_sessions_per_source = 64           # every field of relayd.limits.Limits
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dupsession.core.session import SessionConfig
from dupsession.keyfile import KeyFileError, load
from dupsession.pathspec import PathSpecError, parse_hostport
from relayd.acl import AclError, AllowList
from relayd.limits import Limits
from relayd.server import ExitConfig


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used."""


_TOP = {"listen", "keys", "allow", "grace", "state_dir", "log_level", "control", "metrics"}
_LIMITS = {f.name: f.type for f in dataclasses.fields(Limits)}


@dataclass(frozen=True, slots=True)
class ServeSettings:
    exit: ExitConfig
    control: Path | None
    metrics: tuple[str, int] | None
    log_level: str


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """The flags every limit can be set by (each default lives in `Limits`)."""
    for name in _LIMITS:
        flag = "--" + name.replace("_", "-")
        if flag == "--max-sessions":
            continue  # defined with the other serve flags
        numeric = float if _LIMITS[name] in (float, "float") else int
        serve.add_argument(
            flag,
            type=numeric,
            default=None,
            metavar="N",
            help=_HELP.get(name, "limit") + f" (default {_default(name)})",
        )


_HELP = {
    "session_processes": "serve each new session in a worker process of its own, at most N "
    "at once (beyond: in this process); 0: every session in this process",
}


def _default(name: str) -> object:
    return getattr(Limits(), name)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unknown = set(document) - _TOP - {"limits"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {sorted(unknown)[0]!r}")
    limits = document.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"config file {path}: [limits] must be a table")
    unknown = set(limits) - set(_LIMITS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown limit {sorted(unknown)[0]!r}")
    return document


def _limits(document: dict[str, Any], args: argparse.Namespace) -> Limits:
    values: dict[str, Any] = {}
    for name in _LIMITS:
        value = getattr(args, name, None)
        if value is None:
            value = document.get("limits", {}).get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"limit {name}: expected a number, got {value!r}")
        values[name] = value
    limits = replace(Limits(), **values)
    try:
        limits.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return limits


def _strings(document: dict[str, Any], name: str) -> list[str]:
    value = document.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"setting {name}: expected a list of strings")
    return value


def load_settings(args: argparse.Namespace) -> ServeSettings:
    """Merge the config file (if any) and the flags; read the key files. Raises ConfigError."""
    document = _read_file(args.config) if args.config else {}
    listen_text = args.listen or document.get("listen")
    if not isinstance(listen_text, str):
        raise ConfigError("give --listen HOST:PORT (or listen = ... in the config file)")
    key_paths = [Path(p) for p in (args.key or _strings(document, "keys"))]
    if not key_paths:
        raise ConfigError("give --key FILE (or keys = [...] in the config file)")
    try:
        listen = parse_hostport(listen_text, "--listen", listen=True)
        allow = AllowList.parse(args.allow or _strings(document, "allow"))
        keys = [load(p) for p in key_paths]
        metrics_text = args.metrics or document.get("metrics")
        metrics = parse_hostport(metrics_text, "--metrics", listen=True) if metrics_text else None
    except (PathSpecError, AclError, KeyFileError) as exc:
        raise ConfigError(str(exc)) from exc
    grace = args.grace if args.grace is not None else document.get("grace")
    session = SessionConfig()
    if grace is not None:
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace <= 0:
            raise ConfigError(f"grace: expected seconds above 0, got {grace!r}")
        session = replace(session, grace_period=float(grace))
    state = args.state_dir or document.get("state_dir") or os.environ.get("STATE_DIRECTORY")
    state_dir = Path(str(state).split(":")[0]) if state else None
    if state_dir is not None and not state_dir.is_dir():
        raise ConfigError(f"state directory {state_dir} does not exist")
    control = args.control or (Path(document["control"]) if "control" in document else None)
    limits = _limits(document, args)
    exit_config = ExitConfig(
        listen,
        keys[0],
        allow,
        args.max_sessions,
        session,
        extra_keys=tuple(keys[1:]),
        limits=limits,
        state_dir=state_dir,
    )
    log_level = args.log_level or document.get("log_level") or "info"
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level {log_level!r}: expected debug, info, warning or error")
    return ServeSettings(exit_config, control, metrics, log_level)
