#!/usr/bin/env python3
"""Lab benchmark: bandwidth aggregation by policy, with plain ssh and MPTCP in the same run.

    python3 contrib/bench/aggregation.py              # 40 MB, 0 % and 5 % loss (~10 min)
    python3 contrib/bench/aggregation.py --mb 8 --loss 0   # smoke run
    python3 contrib/bench/aggregation.py --loss 0 --parts stripe auto busy   # one slice

A slice (`--parts`, any of the policies, `busy` (auto typing idle and beside an auto download),
`backup`, `peers` (plain ssh and MPTCP)) keeps each run short on a shared machine; the
verdict prints the targets whose figures the slice measured.

Needs root, the netlab and Debian's `openssh-server openssh-client mptcpd` (`mptcpize`). One
lab per loss rate: the client's two uplinks reach the server directly over two rate-limited
routes of different capacity and delay (ROUTES: 8 + 4 Mbit/s down, 10 and 25 ms one way,
routers queueing at most 60 ms), with `--loss` random loss per route and direction. The
deployment is tests/lab/world.py's (exit, relays, sshd on the server's loopback); this adds an
sshd on the server's lab address started under `mptcpize`, for plain ssh and MPTCP ssh.

Per loss rate, one after the other (so they do not share the routes):
- for each policy (`dupsession --policy P`, both routes as UDP paths): `ssh cat FILE` of
  `--mb` MB: throughput from first to last byte against the summed capacity, completion
  time against the ideal (size / summed capacity), bytes on the wire (both directions, all
  routes) per payload byte; then 10 s of typing (a line every 50 ms, `cat` echoing it): wire
  bytes per byte dupsession carried for ssh;
- `auto` typing alone (idle p99), then typing while another `auto` session downloads (p99
  during, and the download's throughput);
- a backup path: up1 primary, up2 `?tier=backup`, an `auto` download: the backup route's bytes
  against the primary's;
- plain ssh over the better uplink (up1) and MPTCP ssh (`mptcpize run ssh`, a subflow per
  uplink) downloading the same file.
Targets (issue 10) are printed PASS/MISS with the figure reached. Also printed: the machine's
CPU use during each run (this is Python on shared cores: a busy machine lowers the figures).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.lab_latency import cpu_times
from contrib.netlab import Lab
from dupsession import control
from tests.lab.world import (
    EchoSession,
    World,
    rate_limited,
)

#: route -> (one-way delay ms, upload kbit/s, download kbit/s)
ROUTES: dict[str, tuple[float, float, float]] = {
    "up1-server": (10, 4000, 8000),
    "up2-server": (25, 2000, 4000),
}
QUEUE_MS = 60
SUM_DOWN_BPS = sum(r[2] for r in ROUTES.values()) * 1000
POLICIES = ("redundant", "best-k", "stripe", "auto")
PLAIN_PORT = 2222
TYPING_SECONDS = 10.0


class Bench:
    def __init__(self, world: World, size: int, source: Path, digest: str) -> None:
        self.world, self.lab = world, world.lab
        self.size, self.source, self.digest = size, source, digest
        self.results: dict[str, Any] = {}

    # -- set-up -----------------------------------------------------------------------------

    def start_plain_sshd(self) -> None:
        """An sshd on the server's lab address under mptcpize: plain TCP and MPTCP clients."""
        self.world.start_plain_sshd(PLAIN_PORT)

    def config(self, policy: str, tiers: dict[str, str] | None = None) -> Path:
        name = f"{policy}-{len(tiers or {})}.toml"
        return self.world.write_paths_config(name, policy, ROUTES, tiers)

    def exit_cpu(self) -> float:
        """CPU seconds the exit (`relayd serve`, the sender of a download) has used."""
        fields = Path(f"/proc/{self.world.exit.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- one download -----------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[bytes], what: str) -> dict[str, float]:
        assert proc.stdout is not None
        digest, received, first = hashlib.sha256(), 0, None
        start = time.monotonic()
        cpu0, exit0 = cpu_times(), self.exit_cpu()
        while chunk := proc.stdout.read1(1 << 20):
            if first is None:
                first = time.monotonic()
            digest.update(chunk)
            received += len(chunk)
        last = time.monotonic()
        cpu1, exit1 = cpu_times(), self.exit_cpu()
        code = proc.wait(60)
        if code != 0 or received != self.size or digest.hexdigest() != self.digest:
            raise RuntimeError(f"{what}: exit {code}, {received} bytes, digest mismatch?")
        assert first is not None
        seconds = last - first
        return {
            "seconds": seconds,
            "from_start": last - start,
            "mbit": self.size * 8 / seconds / 1e6,
            "share": self.size * 8 / seconds / SUM_DOWN_BPS,
            "ideal_ratio": seconds / (self.size * 8 / SUM_DOWN_BPS),
            "cpu": (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1e-9),
            "exit_cpu": (exit1 - exit0) / (last - start),
        }

    def dupsession_download(self, config: Path, name: str) -> dict[str, float]:
        proxy = self.world.proxy(config, name)
        self.lab.reset_counters()
        proc = self.world.ssh_popen(
            proxy, f"cat {self.source}", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        figures = self._read(proc, name)
        proxy.wait(30)
        stages = self.lab.stats()["stages"]
        wire = {
            r: stages[r]["out"]["counters"]["bytes"] + stages[r]["back"]["counters"]["bytes"]
            for r in ROUTES
        }
        figures["wire_per_byte"] = sum(wire.values()) / self.size
        figures.update({f"wire {r}": b for r, b in wire.items()})
        return figures

    def plain_download(self, mptcp: bool) -> dict[str, float]:
        lab = self.lab
        argv = self.world.plain_ssh_argv(f"cat {self.source}", "up1", mptcp)
        proc = lab.popen(
            "client",
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            return self._read(proc, "mptcp" if mptcp else "ssh")
        finally:
            if proc.poll() is None:
                proc.kill()

    # -- typing -------------------------------------------------------------------------------

    def typing(self, config: Path, name: str, seconds: float, during: Any = None) -> dict[str, Any]:
        """Type for `seconds` (after `during()`, if given, starts in the background)."""
        world = self.world
        echo = EchoSession(world, world.proxy(config, name)).start()
        time.sleep(1.0)
        self.lab.reset_counters()
        carried0 = self._carried()
        since = time.monotonic()
        result: dict[str, Any] = {}
        worker = None
        if during is not None:
            worker = threading.Thread(target=lambda: result.update(download=during()), daemon=True)
            worker.start()
            time.sleep(1.0)  # let the transfer fill the routes first
            since = time.monotonic()
            worker.join()
            until = time.monotonic()
        else:
            time.sleep(seconds)
            until = time.monotonic()
        stages = self.lab.stats()["stages"]
        carried = self._carried() - carried0
        echo.finish()
        echo.check_stream()
        ms = sorted(echo.latencies(since=since, until=until - 0.5))
        wire = sum(
            stages[r]["out"]["counters"]["bytes"] + stages[r]["back"]["counters"]["bytes"]
            for r in ROUTES
        )
        for route in ROUTES:
            back = stages[route]["back"]["counters"]
            passed = max(back["passed"], 1)
            # the download direction's shaper: share of packets that queued longer than each
            result[f"queued {route}"] = " ".join(
                f">{key[7:]} {back.get(key, 0) / passed:.1%}"
                for key in ("waited_5ms", "waited_10ms", "waited_20ms", "waited_40ms")
            )
        result.update(
            echoes=len(ms),
            p50=statistics.median(ms) if ms else float("nan"),
            p99=ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan"),
            wire_per_byte=wire / carried if carried and during is None else float("nan"),
        )
        return result

    def _carried(self) -> int:
        """Stream bytes the live client session carried both ways (from its control socket)."""
        docs = control.discover("client", self.world.run_dir)
        return sum(s["bytes_in"] + s["bytes_out"] for d in docs for s in d["sessions"])


PARTS = (*POLICIES, "busy", "backup", "peers")


def run_loss(
    loss: float,
    size: int,
    source: Path,
    digest: str,
    tmp: Path,
    parts: tuple[str, ...] = PARTS,
    typing: float = TYPING_SECONDS,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Lab(rate_limited(ROUTES, loss, seed=11, queue_ms=QUEUE_MS)) as lab:
        world = World(lab, tmp)
        try:
            world.start()
            bench = Bench(world, size, source, digest)
            if "peers" in parts:
                bench.start_plain_sshd()
            for policy in (p for p in POLICIES if p in parts):
                out[f"{policy} download"] = bench.dupsession_download(bench.config(policy), policy)
                print(f"  {policy} download: {_fmt(out[f'{policy} download'])}", flush=True)
                out[f"{policy} typing"] = bench.typing(
                    bench.config(policy), f"{policy}-typing", typing
                )
                print(f"  {policy} typing: {_fmt(out[f'{policy} typing'])}", flush=True)
            auto = bench.config("auto")
            if "busy" in parts:
                out["auto idle typing"] = bench.typing(auto, "idle", typing)
                print(f"  auto idle typing: {_fmt(out['auto idle typing'])}", flush=True)
                out["auto typing during download"] = bench.typing(
                    auto, "busy", 0, during=lambda: bench.dupsession_download(auto, "auto-bg")
                )
                print(
                    f"  auto typing during download: {_fmt(out['auto typing during download'])}",
                    flush=True,
                )
            if "backup" in parts:
                backup = bench.dupsession_download(
                    bench.config("auto", {"up2-server": "backup"}), "backup"
                )
                out["backup download"] = backup
                print(f"  backup download: {_fmt(backup)}", flush=True)
            if "peers" in parts:
                out["plain ssh (up1)"] = bench.plain_download(mptcp=False)
                print(f"  plain ssh (up1): {_fmt(out['plain ssh (up1)'])}", flush=True)
                out["MPTCP ssh"] = bench.plain_download(mptcp=True)
                print(f"  MPTCP ssh: {_fmt(out['MPTCP ssh'])}", flush=True)
        finally:
            world.close()
    return out


def _fmt(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            parts.append(f"[{key}: {_fmt(value)}]")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def verdict(loss: float, r: dict[str, Any]) -> list[str]:
    lines = []

    def check(name: str, ok: bool, figure: str) -> None:
        lines.append(f"{'PASS' if ok else 'MISS'} {name} at {loss:.0%} loss: {figure}")

    if "stripe download" in r:
        stripe = r["stripe download"]
        check(
            "stripe >= 90 % of summed capacity",
            stripe["share"] >= 0.9,
            f"{stripe['share']:.0%} ({stripe['mbit']:.1f} Mbit/s)",
        )
        check(
            "stripe completion <= 1.1x ideal",
            stripe["ideal_ratio"] <= 1.1,
            f"{stripe['ideal_ratio']:.2f}x",
        )
    if "auto typing during download" in r:
        busy = r["auto typing during download"]
        idle = r["auto idle typing"]
        auto_share = busy["download"]["share"]
        check(
            "auto download >= 85 % of the sum while typing",
            auto_share >= 0.85,
            f"{auto_share:.0%} ({busy['download']['mbit']:.1f} Mbit/s; machine CPU "
            f"{busy['download']['cpu']:.0%}, exit {busy['download']['exit_cpu']:.0%} of a core)",
        )
        check(
            "typing p99 during the auto download <= idle p99 + 20 ms",
            busy["p99"] <= idle["p99"] + 20,
            f"{busy['p99']:.0f} ms vs idle {idle['p99']:.0f} ms",
        )
    if "backup download" in r:
        b = r["backup download"]
        ratio = b["wire up2-server"] / max(b["wire up1-server"], 1)
        check(
            "backup bytes < 5 % of the primary's",
            ratio < 0.05,
            f"{ratio:.2%} ({b['wire up2-server']} B)",
        )
    for name in ("plain ssh (up1)", "MPTCP ssh"):
        if name in r:
            lines.append(
                f"     {name}: {r[name]['mbit']:.1f} Mbit/s ({r[name]['share']:.0%} of the sum); "
                f"machine CPU {r[name]['cpu']:.0%}"
            )
    for policy in POLICIES:
        if f"{policy} download" not in r:
            continue
        d, t = r[f"{policy} download"], r[f"{policy} typing"]
        lines.append(
            f"     {policy}: download {d['mbit']:.1f} Mbit/s ({d['share']:.0%}), "
            f"{d['ideal_ratio']:.2f}x ideal, wire/payload {d['wire_per_byte']:.2f}; typing p99 "
            f"{t['p99']:.0f} ms, wire/payload {t['wire_per_byte']:.2f}; machine CPU "
            f"{d['cpu']:.0%}, exit process {d['exit_cpu']:.0%} of a core"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=40, help="download size (MB)")
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 5.0], help="percent")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (default all)"
    )
    parser.add_argument("--typing", type=float, default=TYPING_SECONDS, help="seconds per policy")
    args = parser.parse_args()
    # a time limit's SIGTERM unwinds: the lab, its namespaces and every process go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="aggbench-"))
    try:
        source = tmp / "payload.bin"
        data = os.urandom(args.mb * 1_000_000)
        source.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        del data
        report = []
        for loss in args.loss:
            print(f"loss {loss:g} % per route and direction:", flush=True)
            work = tmp / f"loss{loss:g}"
            work.mkdir()
            results = run_loss(
                loss / 100,
                args.mb * 1_000_000,
                source,
                digest,
                work,
                tuple(args.parts),
                args.typing,
            )
            report += verdict(loss / 100, results)
        print(f"\n{args.mb} MB downloads; routes {ROUTES} (delay ms, up/down kbit/s)")
        print("\n".join(report))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
