"""`dupsession init` and `dupsession config HOST`: from nothing to a working ssh_config.

`init` writes what a new user would otherwise assemble from three documents (a key, a
config.toml with the uplinks this machine has, and the matching lines for the exit and for
~/.ssh/config) and prints those lines, so the exit's allow-list, ssh's HostName and the
ProxyCommand cannot disagree.

The allow-list name trap, and how it is avoided: the exit is asked for the HOST that ssh
passes as %h, and `relayd serve --allow` compares that name literally. ssh expands %h to
the block's HostName, so the generated block says `HostName localhost` (the target as the
exit reaches it: the same words as `--allow localhost:22`) and `HostKeyAlias myserver`
(so the host key is stored under the alias, not under a `localhost` that several servers
would share).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

from dupsession import keyfile
from dupsession.pathspec import PathSpecError, parse_hostport
from dupsession.settings import ClientSettings

DEFAULT_EXIT_PORT = 7300
DEFAULT_TARGET = "localhost:22"
#: ssh's keepalive period in the generated block (s); the count is derived from the grace.
SERVER_ALIVE_INTERVAL = 30
#: Virtual interfaces that have addresses and routes but are not ways out of this machine.
_NOT_UPLINKS = ("lo", "docker", "br-", "veth", "virbr", "tun", "tap", "wg", "ifb")


class InitError(ValueError):
    """`init` cannot go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Uplink:
    name: str
    addresses: tuple[str, ...]


def find_uplinks() -> list[Uplink]:
    """Interfaces that are up, have a global address, and carry a default route.

    A default route (in any routing table: multi-uplink setups often keep one table per
    uplink) is what makes an interface a way out rather than a local network.
    """
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        links = json.loads(_run([ip, "-j", "addr", "show", "up"]))
        routes = json.loads(_run([ip, "-j", "route", "show", "table", "all", "default"]))
        routes += json.loads(_run([ip, "-j", "-6", "route", "show", "table", "all", "default"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        return []  # no iproute2 or odd output: the user names uplinks with --uplink
    routed = {route.get("dev") for route in routes if route.get("type", "unicast") == "unicast"}
    found = []
    for link in links:
        name = link.get("ifname", "")
        addresses = tuple(
            a["local"] for a in link.get("addr_info", []) if a.get("scope") == "global"
        )
        if name in routed and addresses and not name.startswith(_NOT_UPLINKS):
            found.append(Uplink(name, addresses))
    return found


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True).stdout


def choose_uplinks(found: list[Uplink], as_root: bool) -> tuple[list[str], str]:
    """What to write as `uplinks`, and a comment saying why.

    One uplink needs no binding (the routing table already picks it). Several are bound by
    name (SO_BINDTODEVICE) when running as root, else by their current address: binding to
    an interface name needs root or CAP_NET_RAW.
    """
    names = ", ".join(u.name for u in found) or "none"
    if len(found) < 2:
        return [], f"found: {names}; one way out needs no binding"
    if as_root:
        return [u.name for u in found], f"found: {names}"
    return (
        [u.addresses[0] for u in found],
        f"found: {names}; their addresses (names need root or CAP_NET_RAW): edit if they change",
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything `init` writes and prints."""

    config_path: Path
    key_path: Path
    exit_name: str
    exit_host: str
    exit_port: int
    target: tuple[str, int]
    alias: str
    uplinks: list[str]
    uplinks_note: str
    grace: float


def make_plan(
    config_path: Path,
    key_path: Path,
    exit_address: str,
    exit_name: str,
    target: str,
    alias: str | None,
    uplinks: list[str] | None,
    grace: float,
) -> Plan:
    try:
        if ":" in exit_address and not exit_address.startswith("["):
            host, port = parse_hostport(exit_address, "exit")
        else:
            host, port = exit_address.strip("[]"), DEFAULT_EXIT_PORT
        target_host, target_port = parse_hostport(target, "--target")
    except PathSpecError as exc:
        raise InitError(str(exc)) from exc
    if not exit_name.replace("-", "").replace("_", "").isalnum():
        raise InitError(f"--name {exit_name!r}: use letters, digits, - and _ only")
    if uplinks is None:
        chosen, note = choose_uplinks(find_uplinks(), os.geteuid() == 0)
    else:
        chosen, note = uplinks, "given with --uplink"
    return Plan(
        config_path,
        key_path,
        exit_name,
        host,
        port,
        (target_host, target_port),
        alias or "myserver",
        chosen,
        note,
        grace,
    )


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def config_text(plan: Plan) -> str:
    exit_host = f"[{plan.exit_host}]" if ":" in plan.exit_host else plan.exit_host
    uplinks = ", ".join(_toml_string(u) for u in plan.uplinks)
    return f"""\
# dupsession client config, written by `dupsession init`; edit freely.
# Every key is explained in contrib/config.example.toml; check with `dupsession config HOST`.

key = {_toml_string(str(plan.key_path))}
uplinks = [{uplinks}]   # {plan.uplinks_note}
exit = {_toml_string(plan.exit_name)}

[exits.{plan.exit_name}]
address = {_toml_string(f"{exit_host}:{plan.exit_port}")}   # where relayd serve listens
transports = ["udp", "tcp"]
"""


def server_alive_count(grace: float, interval: int = SERVER_ALIVE_INTERVAL) -> int:
    """ServerAliveCountMax so that interval x count outlives the grace period."""
    return math.ceil(grace / interval) + 1


def instructions(plan: Plan, key_created: bool) -> str:
    """What to run on the exit and put in ~/.ssh/config: the lines that work together."""
    host, port = plan.target
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    count = server_alive_count(plan.grace)
    alive = SERVER_ALIVE_INTERVAL * count
    port_line = f"    Port {port}\n" if port != 22 else ""
    return f"""\
Wrote {plan.config_path}
{"Made" if key_created else "Kept"} the key {plan.key_path} (mode 0600)

1. On the exit ({plan.exit_host}): install dupsession there too (sh contrib/install.sh),
   give it the same key, e.g. from here with
     ssh root@{plan.exit_host} 'install -D -m 600 /dev/stdin /etc/dupsession/key' < {plan.key_path}
   and run (UDP and TCP port {plan.exit_port} open in its firewall):

relayd serve --listen 0.0.0.0:{plan.exit_port} --key /etc/dupsession/key --allow {target}

2. In ~/.ssh/config, above any `Host *` section (ssh takes the first value it finds):

Host {plan.alias}
    HostName {host}
{port_line}    HostKeyAlias {plan.alias}
    ProxyCommand dupsession -- %h %p
    ServerAliveInterval {SERVER_ALIVE_INTERVAL}
    ServerAliveCountMax {count}

   HostName is the target as the exit reaches it: ssh passes it to dupsession as %h, and
   it is what the exit's --allow must list. HostKeyAlias files the host key under
   "{plan.alias}". `--` keeps a host named like a dupsession command (status, init) a host.
   ServerAlive: {SERVER_ALIVE_INTERVAL} s x {count} = {alive} s outlives dupsession's grace \
period ({plan.grace:g} s):
   ssh must not hang up on a session that dupsession is still resuming, as a shorter
   `Host *` value would. On the server, sshd's ClientAliveInterval x ClientAliveCountMax,
   if set, must be as long.

3. Check, then connect:
     dupsession config {host} {port}
     ssh {plan.alias}
"""


def init(plan: Plan, force: bool) -> bool:
    """Write the key (if missing) and the config; return whether a key was made."""
    if plan.config_path.exists() and not force:
        raise InitError(
            f"{plan.config_path} exists; edit it, or replace it with dupsession init --force"
        )
    key_created = not plan.key_path.exists()
    try:
        if key_created:
            keyfile.generate(plan.key_path)
        else:
            keyfile.load(plan.key_path)  # an unusable key is said now, not at first ssh
        plan.config_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        plan.config_path.write_text(config_text(plan))
    except keyfile.KeyFileError as exc:
        raise InitError(str(exc)) from exc
    except OSError as exc:
        raise InitError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    return key_created


def _on_off(flag: bool | None) -> str:
    return "default (on for forward, off for ssh)" if flag is None else ("on" if flag else "off")


def describe(settings: ClientSettings, host: str, port: int) -> str:
    """`dupsession config HOST`: what a session would use, one `name value` per line."""
    try:
        mode = f"mode {settings.key_path.stat().st_mode & 0o777:04o}"
    except OSError as exc:
        mode = f"unreadable: {exc.strerror}; make one with: dupsession keygen"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        f"config {settings.config_path or '(none: --path only)'}",
        f"key {settings.key_path} ({mode})",
        f"exit {settings.exit_name or '(none: explicit paths)'}",
        f"target {target}",
        f"connect_timeout {settings.connect_timeout:g}",
        f"policy {settings.policy.value}"
        + (f" (best_k {settings.best_k})" if settings.policy.value == "best-k" else ""),
        f"encrypt {_on_off(settings.encrypt)}",
    ]
    for field in fields(settings.session):
        lines.append(f"{field.name} {getattr(settings.session, field.name)}")
    for spec in settings.paths:
        lines.append(f"path {spec.label} {spec}")  # the URL says ?tier= unless primary
    return "\n".join(lines) + "\n"
