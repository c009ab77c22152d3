"""Command line: bring a scenario up, change links live, run commands in nodes, tear down.

python3 -m contrib.netlab up SCENARIO [--state FILE] [--id HEX]
python3 -m contrib.netlab set STATE TARGET [--dir out|back|both] [--loss X] [--delay MS]
                              [--jitter MS] [--rate KBIT] [--down|--up] [--param K=V ...]
python3 -m contrib.netlab exec STATE NODE -- CMD...
python3 -m contrib.netlab stats STATE [TARGET]
python3 -m contrib.netlab down STATE
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from contrib.netlab.lab import Lab, LabError
from contrib.netlab.scenario import ScenarioError


def _fraction(text: str) -> float:
    """`0.05` or `5%`."""
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction 0..1 or a percentage")
    return value


def _param(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE parsed as JSON when it can be (numbers, true, [[1,2]])."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m contrib.netlab",
        description="Network lab: namespaces plus a TUN link emulator (see README.md).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="build a scenario and start its emulator")
    p.add_argument("scenario", help="TOML file or bundled scenario name")
    p.add_argument("--state", help="where to write the state JSON (default: in its workdir)")
    p.add_argument("--id", help="run id, 6-12 hex digits (default: random)")
    p = sub.add_parser("set", help="change a link or route live")
    p.add_argument("state")
    p.add_argument("target", help="link (up1, relay1, server), route (up1-relay1) or a glob")
    p.add_argument("--dir", default="both", choices=("out", "back", "both"))
    p.add_argument("--loss", type=_fraction, help="independent loss, 0.05 or 5%%")
    p.add_argument("--delay", type=float, metavar="MS", help="one-way delay in ms")
    p.add_argument("--jitter", type=float, metavar="MS", help="uniform +- jitter in ms")
    p.add_argument("--rate", type=float, metavar="KBIT", help="rate limit in kbit/s (0 = off)")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--down", action="store_true", help="blackhole")
    state.add_argument("--up", action="store_true", help="end a blackhole")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("exec", help="run a command inside a node's namespace")
    p.add_argument("state")
    p.add_argument("node", help="client, wan, a relay name or server")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS... (default: sh)")
    p = sub.add_parser("stats", help="emulator counters and settings as JSON")
    p.add_argument("state")
    p.add_argument("target", nargs="?", default="*", help="glob over link and route names")
    p = sub.add_parser("down", help="stop everything the lab started and delete its namespaces")
    p.add_argument("state")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (LabError, ScenarioError, KeyError, OSError) as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "up":
        lab = Lab(args.scenario, run_id=args.id, state_path=args.state).up()
        state = lab.state()
        print(f"state: {lab.state_path}")
        print(f"emulator pid {lab.emulator_pid}, control {state['emulator']['control']}")
        for node, ns in lab.namespaces.items():
            addrs = ", ".join(f"{i}={a}" for i, a in state["addresses"].get(node, {}).items())
            print(f"  {node:<10} {ns:<24} {addrs}")
        return 0
    lab = Lab.attach(args.state)
    if args.cmd == "set":
        params: dict[str, Any] = dict(args.param)
        if args.down or args.up:
            params["down"] = bool(args.down)
        named = {
            "loss": args.loss,
            "delay_ms": args.delay,
            "jitter_ms": args.jitter,
            "rate_kbit": args.rate,
        }
        params.update({k: v for k, v in named.items() if v is not None})
        if not params:
            print("netlab: nothing to set (give --loss, --delay, --down, ...)", file=sys.stderr)
            return 2
        changed = lab.set_link(args.target, args.dir, **params)
        print(f"set {args.dir} on {', '.join(changed)}: {json.dumps(params)}")
        return 0
    if args.cmd == "exec":
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        argv = lab.argv(args.node, command or ["sh"])
        os.execvp(argv[0], argv)
    if args.cmd == "stats":
        stats = lab.stats()
        stats["stages"] = {
            k: v for k, v in stats["stages"].items() if fnmatch.fnmatchcase(k, args.target)
        }
        print(json.dumps(stats, indent=2))
        return 0
    if args.cmd == "down":
        lab.down()
        print(f"down: deleted {', '.join(lab.namespaces.values())}")
        return 0
    raise AssertionError(args.cmd)
