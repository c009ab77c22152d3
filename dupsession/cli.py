"""`dupsession`: ProxyCommand mode (`dupsession HOST PORT`) and the subcommands.

dupsession [--config F] [--key F] [--path URL]... HOST PORT   # ssh ProxyCommand
dupsession keygen FILE                                        # new pre-shared key, 0600
dupsession demo                                               # self-contained local demo
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from dupsession import keyfile, settings
from dupsession.aio.loop import run
from dupsession.client import ExitCode

SUBCOMMANDS = ("keygen", "demo", "status", "probe")


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that opens a session (proxy mode, probe)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML config (default: {settings.default_config_path()})",
    )
    parser.add_argument("--key", type=Path, metavar="FILE", help="pre-shared key file")
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="URL",
        help="udp://HOST:PORT or tcp://HOST:PORT, optional ?bind=IFACE_OR_ADDR "
        "(repeatable; replaces the config's paths)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="keep the session this long with every path down",
    )
    parser.add_argument("--connect-timeout", type=float, metavar="SECONDS")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def _load_settings(args: argparse.Namespace) -> settings.ClientSettings | int:
    """Config file, then flags; an exit code (with one line on stderr) when unusable."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        stream=sys.stderr,
        format="dupsession %(levelname)s %(message)s",
    )
    try:
        loaded = settings.load(args.config, args.host)
        loaded = settings.with_overrides(loaded, args.key, args.path, args.grace)
    except settings.SettingsError as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.connect_timeout is not None:
        loaded = replace(loaded, connect_timeout=args.connect_timeout)
    return loaded


def _proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dupsession",
        description="Carry one TCP stream (ssh's ProxyCommand stdin/stdout) over every path "
        "at once. Subcommands: keygen FILE, demo, status, probe HOST.",
        epilog="example: ssh -o ProxyCommand='dupsession --key K --path udp://EXIT:7300 "
        "--path tcp://EXIT:7300 %%h %%p' HOST",
    )
    _add_session_options(parser)
    parser.add_argument("host", help="target host, as the exit should reach it")
    parser.add_argument("port", type=int, help="target port")
    return parser


def _keygen(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dupsession keygen", description="write a new pre-shared key (mode 0600)"
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        keyfile.generate(args.file, force=args.force)
    except (keyfile.KeyFileError, OSError) as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(
        f"wrote {args.file}; copy it to the exit (relayd serve --key {args.file.name})",
        file=sys.stderr,
    )
    return ExitCode.OK


def _demo(argv: list[str]) -> int:
    from dupsession import demo

    return demo.main(argv)


def _status(argv: list[str]) -> int:
    from dupsession import status

    parser = argparse.ArgumentParser(
        prog="dupsession status",
        description="live view of every dupsession session and path on this machine",
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="one snapshot as JSON, for scripts")
    args = parser.parse_args(argv)
    return status.run("client", args.once, args.json)


def _probe(argv: list[str]) -> int:
    from dupsession import probe

    parser = argparse.ArgumentParser(
        prog="dupsession probe",
        description="measure every uplink x relay route to the exit and print the route matrix",
    )
    _add_session_options(parser)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to measure")
    parser.add_argument("--json", action="store_true", help="results as JSON")
    parser.add_argument("host", help="host whose configured paths to probe ([hosts.HOST])")
    args = parser.parse_args(argv)
    loaded = _load_settings(args)
    if isinstance(loaded, int):
        return loaded
    return run(probe.run(loaded, args.seconds, args.json))


def _proxy(argv: list[str]) -> int:
    from dupsession import proxy

    args = _proxy_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"dupsession: port {args.port} out of range", file=sys.stderr)
        return ExitCode.USAGE
    loaded = _load_settings(args)
    if isinstance(loaded, int):
        return loaded
    return run(proxy.run(loaded, args.host, args.port))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] == "status":
        return _status(argv[1:])
    if argv and argv[0] == "probe":
        return _probe(argv[1:])
    return _proxy(argv)


if __name__ == "__main__":
    sys.exit(main())
