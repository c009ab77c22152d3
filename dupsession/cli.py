"""`dupsession`: ProxyCommand mode (`dupsession [OPTIONS] [--] HOST PORT`) and the commands.

A first word that names a command runs it; anything else is proxy mode. `--` ends the
options, so `dupsession -- %h %p` (the documented ProxyCommand) reaches a host literally
named `status` or `init`: after `--` nothing is a command.

Adding a command: one `Command` entry in COMMANDS (its options in `configure`, its work in
`run`); the man page and shell completion follow from the parser (build_parser).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from dupsession import keyfile, logsetup, settings
from dupsession.aio.loop import run
from dupsession.client import ExitCode
from dupsession.core.negotiate import Compress
from dupsession.core.policy import Policy
from dupsession.core.session import SessionConfig

#: 128 + SIGINT, what a shell reports for a Ctrl-C'd command.
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: 128 + SIGPIPE, what `yes | head` reports: the reader went away.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

#: Defaults as help shows them: the same text for every user, so the man page is reproducible.
CONFIG_SHOWN = "~/.config/dupsession/config.toml, or under $XDG_CONFIG_HOME"
KEY_SHOWN = "~/.config/dupsession/key, or under $XDG_CONFIG_HOME"

PROXY_USAGE = "dupsession [OPTIONS] [--] HOST PORT\n       dupsession COMMAND [ARGS]"
PROXY_EPILOG = """\
examples:
  dupsession init 198.18.0.1          # config, key, and the lines for the exit and ssh
  dupsession config myserver          # what a session to myserver would use (like ssh -G)

  In ~/.ssh/config (`dupsession init` prints this block for your exit):
    Host myserver
        HostName localhost
        HostKeyAlias myserver
        ProxyCommand dupsession -- %h %p

  One-off, without a config file:
    ssh -o ProxyCommand='dupsession --key ~/.config/dupsession/key \\
        --path udp://198.18.0.1:7300 --path tcp://198.18.0.1:7300 -- %h %p' myserver

  Like nc, from a terminal:
    dupsession -- localhost 22

Exit codes: 0 clean end; 2 bad usage or config; 3 no path answered (exit down, wrong key,
every path blocked); 4 target refused by the exit's allow-list; 5 exit cannot reach the
target; 6 session lost (grace period over, exit shut down); 130 interrupted (Ctrl-C).
More: dupsession COMMAND --help, man dupsession."""


def version() -> str:
    try:
        return package_version("dupsession")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"%(prog)s {version()}",
        help="print the version",
    )


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that opens a session (proxy mode, probe, config)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML config (default: {CONFIG_SHOWN})",
    )
    parser.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"pre-shared key file (default: {KEY_SHOWN}); e.g. --key /etc/dupsession/key",
    )
    parser.add_argument(
        "--exit",
        metavar="NAME",
        help="use the config's [exits.NAME] instead of its `exit =`; e.g. --exit home",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="URL",
        help="a path to the exit, replacing the config's (repeatable): udp://HOST:PORT, "
        "tcp://HOST:PORT or ssh://USER@JUMPHOST?exit=HOST:PORT, optional ?bind=IFACE_OR_ADDR; "
        "e.g. --path udp://198.18.0.1:7300?bind=wlan0",
    )
    parser.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="keep the session this long with every path down (default: 600); e.g. --grace 3600",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="give up when no path answers within this time (default: 10); "
        "e.g. --connect-timeout 5",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: session and path events; -vv: dupsession debug; -vvv: libraries too "
        "(or set DUPSESSION_LOG=info|debug|trace)",
    )
    parser.add_argument(
        "--encrypt",
        action=argparse.BooleanOptionalAction,
        help="encrypt the stream's bytes end to end (ChaCha20); default: on for `forward`, "
        "off for the ProxyCommand form, whose ssh stream is already encrypted",
    )
    parser.add_argument(
        "--policy",
        choices=[p.value for p in Policy],
        help="how frames use the paths: auto (the default: copies while paths have room, "
        "stripes the rest, so typing gets every path and a transfer their summed bandwidth), "
        "redundant (every frame on every path), best-k (on the k best paths), stripe (each "
        "frame once, on the path that delivers it first, a keystroke twice on a lossy "
        "datagram path); e.g. --policy redundant",
    )
    parser.add_argument(
        "--best-k",
        type=int,
        metavar="N",
        help="paths best-k puts each frame on (default: 2); e.g. --best-k 3",
    )
    parser.add_argument(
        "--compress",
        choices=[str(c) for c in Compress],
        help="zstd over the stream: auto (default) compresses while the data compresses "
        "and stops for data that does not (an ssh stream)",
    )


def _load_settings(
    args: argparse.Namespace, host: str | None, need_paths: bool = True
) -> settings.ClientSettings | int:
    """Config file, then flags; an exit code (with one line on stderr) when unusable."""
    logsetup.configure(args.verbose)
    try:
        loaded = settings.load(args.config, host, args.exit, need_paths=not args.path)
        loaded = settings.with_overrides(
            loaded,
            args.key,
            args.path,
            args.grace,
            args.encrypt,
            args.policy,
            args.best_k,
            compress=args.compress,
        )
    except settings.SettingsError as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.connect_timeout is not None:
        if args.connect_timeout <= 0:
            print("dupsession: --connect-timeout must be positive", file=sys.stderr)
            return ExitCode.USAGE
        loaded = replace(loaded, connect_timeout=args.connect_timeout)
    if need_paths and not loaded.paths:
        config = args.config or settings.default_config_path()
        print(
            f"dupsession: no paths configured: no config file {config} "
            "(run: dupsession init EXIT_HOST) and no --path udp://HOST:PORT",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    return loaded


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    help: str  #: one line, shown in `dupsession --help`
    examples: str  #: copyable examples, shown at the end of `dupsession NAME --help`
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _keygen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"where to write the key; - prints it (default: {KEY_SHOWN})",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def _keygen(args: argparse.Namespace) -> int:
    if args.file == "-":  # like `wg genkey`: the key on stdout, for pipes
        sys.stdout.write(keyfile.new_key_text())
        return ExitCode.OK
    path = Path(args.file).expanduser() if args.file else settings.default_key_path()
    try:
        keyfile.generate(path, force=args.force)
    except (keyfile.KeyFileError, OSError) as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(
        f"wrote {path} (mode 0600); the exit needs the same file: relayd serve --key FILE",
        file=sys.stderr,
    )
    return ExitCode.OK


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long each session types (default: 10)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the simulated loss (default: 1)"
    )


def _demo(args: argparse.Namespace) -> int:
    # The demo runs an exit in-process, so it lives with the daemon (relayd.demo): this
    # package never imports relayd (tests/test_import_graph.py). Same interpreter, same install.
    argv = [sys.executable, "-m", "relayd.demo", "--seconds", str(args.seconds)]
    os.execv(sys.executable, [*argv, "--seed", str(args.seed)])


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="one snapshot as JSON, for scripts")


def _status(args: argparse.Namespace) -> int:
    from dupsession import status

    return status.run("client", args.once, args.json)


def _probe_options(parser: argparse.ArgumentParser) -> None:
    _add_session_options(parser)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="how long to measure (default: 5)"
    )
    parser.add_argument("--json", action="store_true", help="results as JSON, for scripts")
    parser.add_argument("host", metavar="HOST", help="host whose configured paths to probe")


def _probe(args: argparse.Namespace) -> int:
    from dupsession import probe

    loaded = _load_settings(args, args.host)
    if isinstance(loaded, int):
        return loaded
    return run(probe.run(loaded, args.seconds, args.json))


def _init_options(parser: argparse.ArgumentParser) -> None:
    from dupsession import firstrun

    parser.add_argument(
        "exit",
        metavar="EXIT_HOST[:PORT]",
        help=f"where relayd serve will listen, as this machine reaches it "
        f"(default port {firstrun.DEFAULT_EXIT_PORT}); e.g. 198.18.0.1 or exit.example.org:7300",
    )
    parser.add_argument(
        "--name", default="home", help="the exit's name in the config (default: home)"
    )
    parser.add_argument(
        "--target",
        default=firstrun.DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"the ssh server as the exit reaches it (default: {firstrun.DEFAULT_TARGET}); "
        "becomes HostName and relayd's --allow",
    )
    parser.add_argument(
        "--host",
        metavar="ALIAS",
        help="the name you will type: ssh ALIAS (default: myserver)",
    )
    parser.add_argument(
        "--uplink",
        action="append",
        metavar="IFACE_OR_ADDR",
        help="a way out of this machine (repeatable; default: interfaces with an address and "
        "a default route); e.g. --uplink wlan0 --uplink usb0",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help=f"config to write (default: {CONFIG_SHOWN})"
    )
    parser.add_argument(
        "--key", type=Path, metavar="FILE", help=f"key to make or keep (default: {KEY_SHOWN})"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")


def _init(args: argparse.Namespace) -> int:
    from dupsession import firstrun

    try:
        plan = firstrun.make_plan(
            (args.config or settings.default_config_path()).expanduser().absolute(),
            (args.key or settings.default_key_path()).expanduser().absolute(),
            args.exit,
            args.name,
            args.target,
            args.host,
            args.uplink,
            SessionConfig().grace_period,
        )
        created = firstrun.init(plan, args.force)
    except firstrun.InitError as exc:
        print(f"dupsession init: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    sys.stdout.write(firstrun.instructions(plan, created))
    return ExitCode.OK


def _config_options(parser: argparse.ArgumentParser) -> None:
    _add_session_options(parser)
    parser.add_argument("host", metavar="HOST", help="the host as ssh passes it (%%h: HostName)")
    parser.add_argument(
        "port", metavar="PORT", type=int, nargs="?", default=22, help="(default: 22)"
    )


def _config(args: argparse.Namespace) -> int:
    from dupsession import firstrun

    loaded = _load_settings(args, args.host)
    if isinstance(loaded, int):
        return loaded
    sys.stdout.write(firstrun.describe(loaded, args.host, args.port))
    return ExitCode.OK


def _forward_options(parser: argparse.ArgumentParser) -> None:
    _add_session_options(parser)
    parser.add_argument(
        "listen",
        nargs="?",
        metavar="[BIND:]LPORT",
        help=f"local port to listen on (BIND default: {settings.DEFAULT_FORWARD_BIND}); "
        "without arguments, every [[forward]] in the config",
    )
    parser.add_argument(
        "host", nargs="?", metavar="HOST", help="target host, as the exit reaches it"
    )
    parser.add_argument("port", nargs="?", metavar="PORT", help="target port")


def _forward(args: argparse.Namespace) -> int:
    from dupsession import forward

    logsetup.configure(args.verbose)
    try:
        if args.listen is None:
            specs = settings.load_forwards(args.config)
            if not specs:
                config = args.config or settings.default_config_path()
                raise settings.SettingsError(
                    f"nothing to forward: give [BIND:]LPORT HOST PORT, or add [[forward]] "
                    f"entries to {config}"
                )
        elif args.host is None or args.port is None:
            raise settings.SettingsError("forward needs [BIND:]LPORT HOST PORT")
        else:
            specs = [settings.parse_forward(args.listen, args.host, args.port)]
    except settings.SettingsError as exc:
        print(f"dupsession: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    pairs = []
    for spec in specs:
        loaded = _load_settings(args, spec.host)
        if isinstance(loaded, int):
            return loaded
        pairs.append((spec, loaded))
    return run(forward.run(pairs))


COMMANDS: dict[str, Command] = {
    "init": Command(
        "first run: make the key and config, print the exit's and ssh's lines",
        "examples:\n  dupsession init 198.18.0.1\n"
        "  dupsession init exit.example.org:7300 --host myserver --target localhost:22",
        _init_options,
        _init,
    ),
    "config": Command(
        "print what a session to HOST would use (like ssh -G); sends nothing",
        "example:\n  dupsession config localhost 22",
        _config_options,
        _config,
    ),
    "forward": Command(
        "forward a local TCP port through the exit, like ssh -L (VNC): one session per "
        "connection, encrypted",
        "examples:\n  dupsession forward 5901 desktop 5900      # then: vncviewer localhost:5901\n"
        "  dupsession forward 0.0.0.0:8080 intranet 80 --no-encrypt\n"
        "  dupsession forward                        # every [[forward]] in the config",
        _forward_options,
        _forward,
    ),
    "keygen": Command(
        "write a new pre-shared key (mode 0600), or print one with -",
        "examples:\n  dupsession keygen\n  dupsession keygen -  > key   # like wg genkey",
        _keygen_options,
        _keygen,
    ),
    "demo": Command(
        "a self-contained local demo: no servers, no config",
        "example:\n  dupsession demo --seconds 5",
        _demo_options,
        _demo,
    ),
    "status": Command(
        "live view of every dupsession session and path on this machine",
        "examples:\n  dupsession status\n  dupsession status --json | jq '.[].sessions'",
        _status_options,
        _status,
    ),
    "probe": Command(
        "measure every uplink x relay route to the exit and print the route matrix",
        "example:\n  dupsession probe myserver --seconds 10",
        _probe_options,
        _probe,
    ),
}


# -- parsers ----------------------------------------------------------------------------------


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dupsession",
        usage=PROXY_USAGE,
        description="Carry one TCP stream (ssh's ProxyCommand stdin/stdout) to HOST:PORT\n"
        "through the exit, over every path at once.",
        epilog=PROXY_EPILOG,
        formatter_class=_formatter,
    )
    add_version_option(parser)
    _add_session_options(parser)
    parser.add_argument("host", metavar="HOST", help="target host, as the exit reaches it (%%h)")
    parser.add_argument("port", metavar="PORT", type=int, help="target port (%%p)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI as one parser: `dupsession --help`, the man page and shell completion.

    Proxy mode's HOST PORT are not in it (argparse cannot mix them with commands); they are
    in its usage line and parsed by _proxy_parser, which shares the session options.
    """
    import shtab

    parser = argparse.ArgumentParser(
        prog="dupsession",
        usage=PROXY_USAGE,
        description="SSH and VNC sessions that neither stall nor die: every byte over every\n"
        "path at once. Without a COMMAND, carries ssh's ProxyCommand stream to HOST:PORT.",
        epilog=PROXY_EPILOG,
        formatter_class=_formatter,
    )
    add_version_option(parser)
    # shtab: completion scripts generated from this very parser (bash, zsh, tcsh), so they
    # never drift from the options; `dupsession --print-completion bash`.
    shtab.add_argument_to(parser, ["--print-completion"], help="print a shell completion script")
    _add_session_options(parser)
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name,
            prog=f"dupsession {name}",
            help=command.help,
            description=command.help,
            epilog=command.examples,
            formatter_class=_formatter,
        )
        command.configure(sub)
    return parser


def _proxy(argv: list[str]) -> int:
    from dupsession import proxy

    args = _proxy_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"dupsession: port {args.port} out of range", file=sys.stderr)
        return ExitCode.USAGE
    loaded = _load_settings(args, args.host)
    if isinstance(loaded, int):
        return loaded
    return run(proxy.run(loaded, args.host, args.port), service=True)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args)
    if not argv or argv[0] in ("-h", "--help", "--print-completion"):
        parser = build_parser()
        args = parser.parse_args(argv)  # prints help or completion and exits
        parser.print_usage(sys.stderr)
        print("dupsession: give HOST PORT, or a COMMAND (dupsession --help)", file=sys.stderr)
        return ExitCode.USAGE
    return _proxy(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: quiet on Ctrl-C (exit 130) and when stdout's reader goes away."""
    args = sys.argv[1:] if argv is None else argv
    return run_quietly(lambda: _dispatch(args))


def run_quietly(command: Callable[[], int]) -> int:
    """Run a command's body: quiet on Ctrl-C (exit 130) and when stdout's reader goes away."""
    try:
        return command()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `dupsession probe --json | head`: the reader left. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again, and exit like `yes | head`.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
