"""`relayd serve` (the exit), `relayd relay` (a forwarder), `relayd status`.

Logs go to stderr; SIGTERM/SIGINT shut down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dupsession import control
from dupsession.aio.loop import run
from dupsession.cli import add_version_option, run_quietly, version
from dupsession.core.session import SessionConfig
from dupsession.keyfile import KeyFileError, load
from dupsession.pathspec import PathSpecError, parse_hostport
from relayd.config import ConfigError, add_serve_flags, load_settings
from relayd.metrics import MetricsServer, SessionCollector
from relayd.relay import Forward, Relay
from relayd.server import ExitConfig, ExitServer

log = logging.getLogger("relayd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relayd", description="dupsession exit daemon")
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the exit: terminate sessions, connect targets",
        epilog="example:\n  relayd serve --listen 0.0.0.0:7300 --key /etc/dupsession/key "
        "--allow localhost:22",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="settings file (flags win over it); re-read on SIGHUP",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="UDP and TCP address to listen on (same port for both)",
    )
    serve.add_argument(
        "--key",
        action="append",
        type=Path,
        metavar="FILE",
        help="pre-shared key file (dupsession keygen FILE); repeat to accept several keys "
        "while rotating",
    )
    serve.add_argument(
        "--allow",
        action="append",
        metavar="HOST:PORT",
        help="target sessions may reach (repeatable; HOST:* for any port); default: none",
    )
    serve.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="keep sessions this long with every path down "
        f"(default {SessionConfig().grace_period:.0f})",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        metavar="N",
        help="refuse new sessions beyond this many (default: 1024)",
    )
    serve.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep replay memory here across restarts (default: $STATE_DIRECTORY if set)",
    )
    add_serve_flags(serve)
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="least important log lines to print on stderr (default: info)",
    )
    serve.add_argument(
        "--control",
        type=Path,
        metavar="SOCKET",
        help="control socket for `relayd status` (default: relayd-PORT.sock in the per-user "
        "runtime directory); 'none' disables it",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default; "
        "use 127.0.0.1 unless the scraper is elsewhere)",
    )
    relay = sub.add_parser(
        "relay",
        help="forward frames of authenticated sessions to configured exits (never an open proxy)",
        epilog="example:\n  relayd relay --listen 0.0.0.0:7400 --exit 198.18.0.1:7300 "
        "--key /etc/dupsession/key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    relay.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="LISTEN=EXIT",
        help="listen on HOST:PORT (UDP and TCP), forward to the exit at HOST:PORT (repeatable)",
    )
    relay.add_argument("--listen", metavar="HOST:PORT", help="shorthand: with --exit, one forward")
    relay.add_argument("--exit", metavar="HOST:PORT", help="the exit for --listen")
    relay.add_argument("--key", required=True, type=Path, metavar="FILE", help="pre-shared key")
    relay.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least important log lines to print on stderr (default: info)",
    )
    status = sub.add_parser(
        "status",
        help="live view of this machine's relayd: its listen addresses, allow-list, sessions",
        epilog="examples:\n  relayd status\n  relayd status --json | jq '.[].daemon'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument("--json", action="store_true", help="one snapshot as JSON")
    status.add_argument(
        "--control",
        type=Path,
        metavar="SOCKET",
        help="read this relayd's control socket (the one given to relayd serve --control, or "
        "another user's); default: every relayd in this user's runtime directory",
    )
    return parser


def _reload(server: ExitServer, reload: Callable[[], ExitConfig]) -> None:
    """SIGHUP: re-read the file and the keys; on any mistake keep running as before."""
    try:
        config = reload()
        if config.listen != server.config.listen or config.state_dir != server.config.state_dir:
            log.warning("reload: listen and state_dir changes need a restart; ignored")
            config = replace(config, listen=server.config.listen, state_dir=server.config.state_dir)
        server.reconfigure(config)
    except (ConfigError, ValueError) as exc:
        log.warning("reload failed, configuration unchanged: %s", exc)


async def serve(
    config: ExitConfig,
    control_path: Path | None,
    metrics: tuple[str, int] | None,
    reload: Callable[[], ExitConfig] | None = None,
) -> int:
    server = ExitServer(config)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", *config.listen, exc.strerror or exc)
        return 1
    assert server.address is not None
    closers = []
    try:
        if control_path != Path("none"):
            path = control_path or control.socket_path("relayd", str(server.address[1]))
            control_server = control.ControlServer(
                path, "relayd", server.snapshot, daemon_facts(server, time.monotonic())
            )
            await control_server.start()
            closers.append(control_server.close)
            log.info("control socket %s", path)
        if metrics is not None:
            collector = SessionCollector(server.reports, lambda: server.rejected_frames)
            metrics_server = MetricsServer(*metrics, collector)
            await metrics_server.start()
            closers.append(metrics_server.close)
    except (OSError, control.ControlError) as exc:
        log.error("cannot start control or metrics endpoint: %s", exc)
        await server.close()
        return 1
    if not config.allow.entries:
        log.warning("the allow-list is empty: every session will be refused (use --allow)")
    if config.state_dir is None:
        log.warning("no --state-dir: replay memory is lost on restart (see docs/SECURITY.md)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(server, reload))
    await stop.wait()
    remote = len(server.workers.sessions) if server.workers is not None else 0
    log.info("shutting down: closing %d session(s)", len(server.sessions) + remote)
    for close in closers:
        close()
    await server.close()
    await asyncio.sleep(0.05)  # let the CLOSE frames leave
    log.info("stopped")
    return 0


def daemon_facts(server: ExitServer, started: float) -> Callable[[], dict[str, Any]]:
    """relayd's own lines in `relayd status`: read live, so a reloaded allow-list shows."""

    def facts() -> dict[str, Any]:
        assert server.address is not None
        host, port = server.address[:2]
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        facts = {
            "version": version(),
            "listen": [f"udp+tcp {listen}"],
            "allow": sorted(
                f"{h}:{'*' if p is None else p}" for h, p in server.config.allow.entries
            ),
            "max_sessions": server.limits.max_sessions,
            "uptime": time.monotonic() - started,
        }
        if server.workers is not None:
            facts["session_processes"] = server.workers.facts()
        return facts

    return facts


def _forwards(args: argparse.Namespace) -> list[Forward]:
    pairs = list(args.forward)
    if args.listen or args.exit:
        if not (args.listen and args.exit):
            raise PathSpecError("--listen and --exit go together")
        pairs.append(f"{args.listen}={args.exit}")
    if not pairs:
        raise PathSpecError("give --listen HOST:PORT --exit HOST:PORT or --forward LISTEN=EXIT")
    forwards = []
    for pair in pairs:
        listen, sep, exit_ = pair.partition("=")
        if not sep:
            raise PathSpecError(f"--forward {pair!r}: expected LISTEN_HOST:PORT=EXIT_HOST:PORT")
        forwards.append(Forward(parse_hostport(listen, "listen"), parse_hostport(exit_, "exit")))
    return forwards


async def relay(forwards: list[Forward], psk: bytes) -> int:
    server = Relay(forwards, psk)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror or exc)
        server.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.info("SIGHUP: a relay's forwards change only with a restart")
    )
    await stop.wait()
    server.close()
    log.info("relay stopped (%d frames dropped unanswered)", server.gate.dropped)
    return 0


def main(argv: list[str] | None = None) -> int:
    # Quiet on Ctrl-C (130) and on a closed pipe (`relayd status --json | head`).
    return run_quietly(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        from dupsession import status

        return status.run("relayd", args.once, args.json, socket=args.control)
    logging.basicConfig(
        level=(args.log_level or "info").upper(),
        stream=sys.stderr,
        format="%(asctime)s relayd %(levelname)s %(message)s",
    )
    if args.command == "relay":
        try:
            forwards = _forwards(args)
            psk = load(args.key)
        except (PathSpecError, KeyFileError) as exc:
            print(f"relayd: {exc}", file=sys.stderr)
            return 2
        return run(relay(forwards, psk), service=True)
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"relayd: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())

    def reload() -> ExitConfig:
        return load_settings(args).exit

    return run(serve(settings.exit, settings.control, settings.metrics, reload), service=True)


if __name__ == "__main__":
    sys.exit(main())
