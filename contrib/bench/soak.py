#!/usr/bin/env python3
"""Soak benchmark: many concurrent sessions typing and transferring through one relayd, on the
netlab, with random path faults. Reports bytes lost (must be 0), relayd's and the clients' peak
RSS, and the typing echo p99.

    python3 contrib/bench/soak.py                          # 100 sessions, 600 s (the target)
    python3 contrib/bench/soak.py --sessions 20 --duration 60   # a short run

Needs root and the netlab (contrib/netlab, scenario `two-uplinks-two-relays`: two uplinks,
55-120 ms asymmetric RTTs, 5 % loss per route and direction). The exit (`relayd serve`) and a
TCP echo target run in the `server` namespace; every session is one `dupsession` process in
the `client` namespace with two UDP paths, one per uplink, straight to the exit. Each session
types one byte every `--type-interval` seconds and times its echo, and every
`--transfer-interval` seconds one session in five (`--transfer-share`) sends a
`--transfer-size` random block; everything echoed is
compared with what was sent, byte for byte. Faults: every `--fault-every` seconds one uplink is
blackholed (both directions) for `--fault-length` seconds, or gets 20 % extra loss, at random
(seeded). Exit code 0 either way: a benchmark, not a test; the verdict line says PASS or FAIL
for "0 bytes lost". The figures are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from contrib.netlab.lab import Lab  # noqa: E402

ECHO_SERVER = """
import asyncio, sys
async def serve(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]), backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

EXIT_PORT = 7300
ECHO_PORT = 9000


@dataclass
class SessionStats:
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    typed: dict[int, float] = field(default_factory=dict)  #: offset of a keystroke -> time
    latencies: list[float] = field(default_factory=list)
    exit_code: int | None = None
    transfers: bool = True  #: this session also sends blocks (else it only types)
    started: bool = True  #: False: it never echoed its first byte within 120 s


def peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def run_session(
    argv: list[str],
    stats: SessionStats,
    args: argparse.Namespace,
    rng: random.Random,
    stop: asyncio.Event,
    pids: list[int],
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        limit=1 << 20,
    )
    pids.append(proc.pid)
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def reader() -> None:
        while chunk := await stdout.read(65536):
            now = time.monotonic()
            start = len(stats.received)
            stats.received += chunk
            for offset in range(start, len(stats.received)):
                typed = stats.typed.pop(offset, None)
                if typed is not None:
                    stats.latencies.append(now - typed)

    # Wait for the session to be up (process start, handshake): typing starts after that.
    stats.sent += b"w"
    proc.stdin.write(b"w")
    await proc.stdin.drain()
    try:
        warm = await asyncio.wait_for(stdout.readexactly(1), 120)
    except (TimeoutError, asyncio.IncompleteReadError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        stats.exit_code = await proc.wait()
        stats.started = False
        return
    stats.received += warm
    reading = asyncio.create_task(reader())
    next_transfer = time.monotonic() + rng.uniform(0, args.transfer_interval)
    while not stop.is_set():
        now = time.monotonic()
        if stats.transfers and now >= next_transfer:
            block = rng.randbytes(args.transfer_size)
            stats.sent += block
            proc.stdin.write(block)
            next_transfer = now + args.transfer_interval
        else:
            stats.typed[len(stats.sent)] = now
            stats.sent += b"k"
            proc.stdin.write(b"k")
        await proc.stdin.drain()
        await asyncio.sleep(args.type_interval)
    deadline = time.monotonic() + args.drain
    while len(stats.received) < len(stats.sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    proc.stdin.close()
    try:
        stats.exit_code = await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        stats.exit_code = await proc.wait()
    reading.cancel()


async def faults(
    lab: Lab, args: argparse.Namespace, rng: random.Random, stop: asyncio.Event
) -> list[str]:
    done: list[str] = []
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), args.fault_every)
            break
        except TimeoutError:
            pass
        uplink = rng.choice(["up1", "up2"])
        if rng.random() < 0.5:
            lab.set_link(uplink, down=True)
            done.append(f"{uplink} down {args.fault_length:.0f} s")
            await asyncio.sleep(args.fault_length)
            lab.set_link(uplink, down=False)
        else:
            lab.set_link(f"{uplink}-*", loss=0.25)
            done.append(f"{uplink} 25 % loss {args.fault_length:.0f} s")
            await asyncio.sleep(args.fault_length)
            lab.set_link(f"{uplink}-*", loss=0.05)
    return done


async def soak(lab: Lab, args: argparse.Namespace, workdir: Path) -> int:
    python = sys.executable
    key = workdir / "soak.key"
    subprocess.run(
        [python, "-m", "dupsession.cli", "keygen", str(key)],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    server = lab.addr("server")
    echo = lab.popen(
        "server",
        [python, "-c", ECHO_SERVER, server, str(ECHO_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    relay_log = (workdir / "relayd.log").open("wb")
    relayd = lab.popen(
        "server",
        [
            python,
            "-m",
            "relayd.cli",
            "serve",
            "--listen",
            f"{server}:{EXIT_PORT}",
            "--key",
            str(key),
            "--allow",
            f"{server}:{ECHO_PORT}",
            "--control",
            "none",
            "--max-sessions-per-source",
            str(args.sessions + 10),
        ],
        stdout=relay_log,
        stderr=relay_log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    time.sleep(1.5)
    paths = [f"udp://{server}:{EXIT_PORT}?bind={u}" for u in ("up1", "up2")]
    base = [python, "-m", "dupsession.cli", "--key", str(key)]
    for path in paths:
        base += ["--path", path]
    base += [server, str(ECHO_PORT)]
    rng = random.Random(args.seed)
    stop = asyncio.Event()
    every = max(1, round(1 / args.transfer_share)) if args.transfer_share > 0 else 0
    stats = [SessionStats(transfers=bool(every) and i % every == 0) for i in range(args.sessions)]
    pids: list[int] = []
    os.environ["PYTHONPATH"] = str(REPO)
    started = time.monotonic()
    tasks = []
    for i in range(args.sessions):
        argv = lab.argv("client", base)
        tasks.append(
            asyncio.create_task(
                run_session(argv, stats[i], args, random.Random(rng.random()), stop, pids)
            )
        )
        await asyncio.sleep(args.ramp / args.sessions)
    fault_task = asyncio.create_task(faults(lab, args, rng, stop))
    client_peak = 0
    relay_peak = 0
    while time.monotonic() - started < args.duration:
        await asyncio.sleep(1)
        relay_peak = max(relay_peak, peak_rss(relayd.pid))
        client_peak = max([client_peak, *(peak_rss(p) for p in pids)])
    stop.set()
    fault_log = await fault_task
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    relay_peak = max(relay_peak, peak_rss(relayd.pid))
    relayd.terminate()
    relayd.wait(10)
    echo.terminate()
    lost = 0
    corrupt = 0
    failed = sum(not s.started for s in stats)
    codes_failed = sorted({s.exit_code for s in stats if not s.started}, key=str)
    stats = [s for s in stats if s.started]
    for s in stats:
        n = min(len(s.sent), len(s.received))
        lost += len(s.sent) - len(s.received)
        corrupt += sum(1 for a, b in zip(s.sent[:n], s.received[:n], strict=True) if a != b)
    lat = sorted(x for s in stats for x in s.latencies)
    typing_only = sorted(x for s in stats if not s.transfers for x in s.latencies)
    sent_total = sum(len(s.sent) for s in stats)
    codes = sorted({s.exit_code for s in stats}, key=str)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    print(
        f"soak: {args.sessions} sessions, {elapsed:.0f} s, {len(fault_log)} faults "
        f"({'; '.join(fault_log[:6])}{' ...' if len(fault_log) > 6 else ''})"
    )
    relay_log.close()
    refused = (workdir / "relayd.log").read_text(errors="replace").count("refused")
    print(
        f"  sessions that never came up (exited or silent 120 s): {failed}, exit codes "
        f"{codes_failed}; relayd log lines with 'refused': {refused}"
    )
    print(f"  bytes sent {sent_total}, lost {lost}, corrupted {corrupt}; client exit codes {codes}")
    print(
        f"  typing: {len(lat)} keystrokes, echo p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, "
        f"max {p(1.0):.1f} ms" + (f", mean {statistics.fmean(lat) * 1000:.1f} ms" if lat else "")
    )
    if typing_only:
        q = typing_only[min(len(typing_only) - 1, int(0.99 * len(typing_only)))] * 1000
        n = sum(not s.transfers for s in stats)
        print(f"  typing-only sessions ({n}): echo p99 {q:.1f} ms")
    print(
        f"  peak RSS: relayd {relay_peak / 2**20:.1f} MiB, largest client "
        f"{client_peak / 2**20:.1f} MiB"
    )
    print(f"  verdict: {'PASS' if lost == 0 and corrupt == 0 else 'FAIL'} (0 bytes lost)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds to start all sessions")
    parser.add_argument("--type-interval", type=float, default=0.2)
    parser.add_argument("--transfer-interval", type=float, default=20.0)
    parser.add_argument("--transfer-size", type=int, default=65536)
    parser.add_argument(
        "--transfer-share", type=float, default=0.2, help="share of sessions that also transfer"
    )
    parser.add_argument("--fault-every", type=float, default=15.0)
    parser.add_argument("--fault-length", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for echoes")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, Lab("two-uplinks-two-relays") as lab:
        os.chmod(tmp, 0o755)
        return asyncio.run(soak(lab, args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
