#!/usr/bin/env python3
"""The netlab link emulator's Python cost per packet, no I/O: `Emulator.submit` and `pop_due`.

    python3 contrib/bench/emulator.py                    # this tree's emulator, best of 5
    python3 contrib/bench/emulator.py --ab /tmp/x/base   # NEW/BASE alternated, 3 rounds each
    python3 contrib/bench/emulator.py --log              # with the packet log (--breakdown's)

Why: in the lab the emulator (contrib/netlab/emulator.py) runs at RT priority on the same two
cores as the processes under test, so every microsecond it spends per packet is taken from
relayd, the clients and sshd. This isolates the part that is Python (classify, impair, queue,
release) from the TUN's syscalls and the kernel's forwarding, which the lab's figures add.

The stream is seed-like (tests/lab/world.py `seed_like`, 5 % loss): a download's packets,
server -> up1 and up2 in proportion to their downlinks (50 and 30 Mbit/s), 1,200-1,400 B; and
70 % as many the other way, the ACKs and keystrokes (60-400 B). 8,000 packets per virtual second
(what dupsession's download puts through the emulator) arrive in wake-ups of 1-8 packets, and
after each wake-up the due packets are taken, as `serve` does. The random stream is fixed
(seeded), so every run and every tree sees the same packets. CPU time of this thread only.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's scenario and world
    sys.path.insert(0, str(ROOT))

from contrib.netlab.scenario import load_scenario  # noqa: E402
from tests.lab.world import seed_like  # noqa: E402

RATE = 8000.0  #: packets per virtual second (dupsession's download through the lab)
UP = {"up1": "198.18.1.2", "up2": "198.18.2.2"}
SERVER = "198.19.200.2"
DOWN_SHARE = {"up1": 50 / 80, "up2": 30 / 80}  #: the download's split by downlink rate
BACK_SHARE = 0.4  #: share of packets going client -> server (ACKs, keystrokes)


def load(path: Path) -> ModuleType:
    """An emulator.py by path (it is stdlib only and runnable by path: any tree's copy)."""
    spec = importlib.util.spec_from_file_location("netlab_emulator_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def packet(src: str, dst: str, size: int, proto: int, rng: random.Random) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4sHH",
        0x45,
        0,
        size,
        rng.getrandbits(16),
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
        rng.randrange(1024, 65535),
        22 if proto == 6 else 4433,
    )
    if proto == 6:  # a TCP header: data offset 5 words
        header += bytes(8) + b"\x50" + bytes(7)
    else:
        header += struct.pack("!HH", size - 20, 0)
    return header + rng.randbytes(size - len(header))


def stream(count: int, seed: int = 1) -> list[tuple[float, list[bytes]]]:
    """(virtual time, packets read in that wake-up), fixed by the seed."""
    rng = random.Random(seed)
    wakes: list[tuple[float, list[bytes]]] = []
    now, made = 0.0, 0
    while made < count:
        batch = []
        for _ in range(min(rng.randint(1, 8), count - made)):
            proto = 6 if rng.random() < 0.5 else 17  # the TCP paths and the UDP paths
            uplink = "up1" if rng.random() < DOWN_SHARE["up1"] else "up2"
            if rng.random() < BACK_SHARE:
                batch.append(packet(UP[uplink], SERVER, rng.randint(60, 400), proto, rng))
            else:
                batch.append(packet(SERVER, UP[uplink], rng.randint(1200, 1400), proto, rng))
        made += len(batch)
        now += len(batch) / RATE
        wakes.append((now, batch))
    return wakes


def run_once(module: ModuleType, wakes: list[tuple[float, list[bytes]]], log: bool) -> float:
    """CPU microseconds per packet for one pass over the stream, a fresh emulator."""
    config = load_scenario(seed_like(0.05, seed=9)).emulator_config()
    emu = module.Emulator(config, t0=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        packets = module.PacketLog(tmp if log else None)
        submit, pop_due = packets.wrap(emu.submit), emu.pop_due
        n = 0
        start = time.thread_time()
        for now, batch in wakes:
            for p in batch:
                submit(p, now)
            n += len(pop_due(now))
        n += len(pop_due(1e9))
        used = time.thread_time() - start
    total = sum(len(b) for _, b in wakes)
    assert n == emu.counters["written"] and n + emu.counters["dropped"] == total, "lost packets"
    return used / total * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emulator", type=Path, default=ROOT / "contrib/netlab/emulator.py")
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="passes; the best is reported")
    parser.add_argument("--log", action="store_true", help="with the packet log (--breakdown)")
    parser.add_argument("--ab", type=Path, help="a base tree: NEW/BASE alternated, each a process")
    parser.add_argument("--rounds", type=int, default=3, help="--ab: rounds of NEW then BASE")
    args = parser.parse_args()
    if args.ab:
        return ab(args)
    module = load(args.emulator)
    wakes = stream(args.packets)
    runs = [run_once(module, wakes, args.log) for _ in range(args.repeat)]
    log = ", packet log" if args.log else ""
    print(
        f"{args.emulator}: {min(runs):.2f} us per packet (best of {args.repeat}; median "
        f"{statistics.median(runs):.2f}), {args.packets} packets{log}",
        flush=True,
    )
    return 0


def ab(args: argparse.Namespace) -> int:
    """Alternate this tree's emulator with the base tree's, each pass in its own process."""
    trees = {"NEW": ROOT, "BASE": args.ab.resolve()}
    best: dict[str, list[float]] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            emulator = tree / "contrib/netlab/emulator.py"
            argv = [sys.executable, __file__, "--emulator", str(emulator)]
            argv += ["--packets", str(args.packets), "--repeat", str(args.repeat)]
            argv += ["--log"] if args.log else []
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            best[name].append(float(out.split(": ", 1)[1].split()[0]))
            print(f"{name:4} {out.strip()}", flush=True)
    new, base = (statistics.median(best[k]) for k in trees)
    print(f"median of bests: NEW {new:.2f}, BASE {base:.2f} us per packet ({new / base - 1:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
