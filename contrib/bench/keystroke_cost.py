#!/usr/bin/env python3
"""CPU per keystroke of an interactive session, at both ends, trees side by side.

A typing session on loopback (one byte every `--interval` s, echoed by a `cat` behind socat)
through relayd, 2 UDP + 2 TCP paths: relayd's and the client's CPU (utime + stime from
/proc) per keystroke, for each tree given, the trees alternating round by round so each sees
the same machine (this VM has slow phases). Idle CPU (no keystrokes) counts in: it is what a
session costs while nobody types, and the cost of a keystroke is what typing adds to it.

    python3 contrib/bench/keystroke_cost.py --trees /tmp/new /tmp/base --rounds 3

`--sim`: the same typing (4 paths, 0.2 ms each way) in the simulator (tests/sim/echo.py), and
the CPU (this thread's) each session spends in `Session.transmit` and `get_timer` per
keystroke: the core's share alone, free of the kernel, the event loop and other processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from overhead import cpu_seconds  # the script's directory is on sys.path

PATHS = ("udp", "udp", "tcp", "tcp")


def one(tree: str, port: int, count: int, interval: float) -> tuple[float, float, int]:
    """(relayd ms, client ms) of CPU per keystroke, and the echoes seen."""
    env = dict(os.environ, PYTHONPATH=tree)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "key")
        subprocess.run([py, "-m", "dupsession.cli", "keygen", key], env=env, check=True,
                       capture_output=True)  # fmt: skip
        target = port + 1
        socat = subprocess.Popen(["socat", f"TCP-LISTEN:{target},reuseaddr,fork", "EXEC:cat"])
        relayd = subprocess.Popen(
            [py, "-c", "from relayd.cli import main; main()", "serve", "--listen",
             f"127.0.0.1:{port}", "--key", key, "--allow", f"127.0.0.1:{target}",
             "--control", "none", "--log-level", "warning"],
            env=env,
        )  # fmt: skip
        client = None
        try:
            time.sleep(1.5)
            argv = [py, "-c", "from dupsession.cli import main; main()", "--key", key]
            for kind in PATHS:
                argv += ["--path", f"{kind}://127.0.0.1:{port}"]
            client = subprocess.Popen(
                [*argv, "127.0.0.1", str(target)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                bufsize=0,
            )
            echoes = [0]

            def read() -> None:
                assert client is not None and client.stdout is not None
                while client.stdout.read(1):
                    echoes[0] += 1

            threading.Thread(target=read, daemon=True).start()
            time.sleep(2)
            r0, c0 = cpu_seconds(relayd.pid), cpu_seconds(client.pid)
            start = time.monotonic()
            assert client.stdin is not None
            for i in range(count):
                client.stdin.write(b"k")
                delay = start + (i + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            relay_ms = (cpu_seconds(relayd.pid) - r0) / count * 1e3
            client_ms = (cpu_seconds(client.pid) - c0) / count * 1e3
            return relay_ms, client_ms, echoes[0]
        finally:
            for proc in (client, relayd, socat):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


#: `--sim`'s run, in a child process per tree (argv: tree, keystrokes, interval).
SIM = """
import sys, time
sys.path.insert(0, sys.argv[1])
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule
from dupsession.core.session import Session
from tests.sim.echo import EchoSimulation
from tests.sim.network import LinkSpec, PathSpec
count, interval = int(sys.argv[2]), float(sys.argv[3])
spent = {"exit": 0.0, "client": 0.0}
def timed(f):
    def call(session, *args):
        t = time.thread_time()
        try:
            return f(session, *args)
        finally:
            spent[str(session.role)] += time.thread_time() - t
    return call
Session.transmit = timed(Session.transmit)
Session.get_timer = timed(Session.get_timer)
paths = [PathSpec(LinkSpec(delay=0.0002, datagram=d), LinkSpec(delay=0.0002, datagram=d))
         for d in (True, True, False, False)]
sim = EchoSimulation(paths, 1, count, interval, start=0.2,
                     features=Features(schedule=Schedule(Policy.AUTO)))
sim.run(0.5 + count * interval)
assert len(sim.rtts) == count
print(spent["exit"] / count * 1e3, spent["client"] / count * 1e3, count)
"""


def one_sim(tree: str, count: int, interval: float) -> tuple[float, float, int]:
    """(the exit's, the client's ms in transmit + get_timer per keystroke, echoes): simulated."""
    out = subprocess.run(
        [sys.executable, "-c", SIM, tree, str(count), str(interval)],
        env=dict(os.environ, PYTHONPATH=tree),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", nargs="+", default=[os.getcwd()])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200, help="keystrokes per run")
    parser.add_argument("--interval", type=float, default=0.05, help="s between keystrokes")
    parser.add_argument("--port", type=int, default=17300, help="relayd's; the target's +1")
    parser.add_argument("--sim", action="store_true", help="in the simulator: the core only")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {tree: [] for tree in args.trees}
    for rnd in range(args.rounds):
        for tree in args.trees:
            if args.sim:
                relay, client, echoes = one_sim(tree, args.count, args.interval)
            else:
                relay, client, echoes = one(tree, args.port, args.count, args.interval)
            runs[tree].append((relay, client))
            print(f"round {rnd} {tree}: relayd {relay:.2f} ms/keystroke, client {client:.2f}"
                  f" ({echoes} echoes)", flush=True)  # fmt: skip
    ends = "exit core" if args.sim else "relayd"
    print(f"{'tree':40} {ends} ms/keystroke (median, runs)   client ms/keystroke")
    for tree, got in runs.items():
        relay = [r for r, _ in got]
        client = [c for _, c in got]
        print(
            f"{tree:40} {statistics.median(relay):5.2f} ({' '.join(f'{r:.2f}' for r in relay)})"
            f"   {statistics.median(client):5.2f} ({' '.join(f'{c:.2f}' for c in client)})"
        )


if __name__ == "__main__":
    main()
