#!/usr/bin/env python3
"""VNC interaction benchmark on the netlab: pointer event -> changed framebuffer, three ways.

    python3 contrib/bench/vnc.py             # 150 interactions per method
    python3 contrib/bench/vnc.py --quick     # 40

Needs root, the netlab (contrib/netlab) and Debian's `xvfb x11vnc openssh-server
openssh-client socat`, and vncdotool (pip). One netlab `two-uplinks-two-relays` lab: 2 uplinks
x (2 relays + direct), route RTTs of 75-120 ms through to the server, asymmetric, 5 %
independent loss per route and direction. The server runs Xvfb + x11vnc (a desktop-like
picture painted into the screen; the pointer is drawn into the framebuffer), sshd, and the
exit (`relayd serve`); each relay runs `relayd relay` and a `socat` TCP forward to x11vnc.

Methods, one after the other (so they never share the links' capacity):
- `plain TCP (up1-relay1)`: the VNC client straight to x11vnc over the best single route
  (up1 -> relay1 -> server, 75 ms RTT), through the relay's socat;
- `dupsession forward`: `dupsession forward` in the client namespace over all 6 paths (config
  like `dupsession init` writes: both uplinks x (both relays + direct)), encrypted and
  compressed (the defaults);
- `ssh -L + ProxyCommand`: `ssh -N -L` to the server's sshd with `ProxyCommand dupsession`
  (the same 6 paths), the VNC client through the ssh tunnel.

Each interaction (tests/support/vncgrab.py `interact`, vncdotool): move the pointer, then request
framebuffer updates until one shows the changed pixels; the time from the pointer event to that
update. p50 / p90 / p99 / max per method, and the ratio to plain TCP. The machine is shared:
the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contrib.bench.lab_latency import stop_tree, which  # noqa: E402
from tests.support.sshd import sshd_config_text  # noqa: E402
from tests.support.vnc import desktop_picture  # noqa: E402

SCENARIO = "two-uplinks-two-relays"
VNC_PORT = 5900
SSH_PORT = 2222
EXIT_PORT = 7300
RELAY_PORT = 7400
FORWARD_PORT = 7900  # socat on each relay -> x11vnc
LOCAL_FORWARD = 5901  # dupsession forward, in the client namespace
LOCAL_SSH_L = 5902  # ssh -L, in the client namespace
HOST_KEY_ALIAS = "vnc-bench"
WIDTH, HEIGHT = 640, 400


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from contrib.netlab import Lab

        self.args = args
        self.bins = {
            n: which(n)
            for n in ("Xvfb", "x11vnc", "sshd", "ssh", "ssh-keygen", "socat", "dupsession")
        }
        self.bins["relayd"] = which("relayd")
        self.tmp = Path(tempfile.mkdtemp(prefix="dupsession-vncbench-"))
        self.tmp.chmod(0o755)
        self.env = dict(
            os.environ,
            XDG_CONFIG_HOME=str(self.tmp / "config"),
            DUPSESSION_RUNTIME_DIR=str(self.tmp / "control"),
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        self.lab = Lab(SCENARIO)
        self.procs: list[subprocess.Popen[bytes]] = []

    def _serve(self, node: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            proc = self.lab.popen(
                node, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        self.procs.append(proc)
        return proc

    def _wait_listening(self, node: str, port: int, udp: bool = False) -> None:
        flag = "-Hlun" if udp else "-Hltn"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = self.lab.run(node, ["ss", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {node}:{port}; logs in {self.tmp}")

    def start(self) -> None:
        lab = self.lab
        lab.up()
        server = lab.addr("server")
        for name in ("host_ed25519", "user_ed25519"):
            keygen = [self.bins["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f"]
            subprocess.run([*keygen, str(self.tmp / name)], check=True, stdin=subprocess.DEVNULL)
        shutil.copyfile(self.tmp / "user_ed25519.pub", self.tmp / "authorized_keys")
        host_key = " ".join((self.tmp / "host_ed25519.pub").read_text().split()[:2])
        (self.tmp / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {host_key}\n")
        self.key = self.tmp / "key"
        subprocess.run([self.bins["dupsession"], "keygen", str(self.key)], check=True,
                       env=self.env, stderr=subprocess.DEVNULL)  # fmt: skip
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd_config = self.tmp / "sshd.conf"
        sshd_config.write_text(sshd_config_text(self.tmp, SSH_PORT))
        self._serve("server", "sshd", [self.bins["sshd"], "-D", "-e", "-f", str(sshd_config)])
        fbdir = self.tmp / "fb"
        fbdir.mkdir()
        self._serve("server", "xvfb", [self.bins["Xvfb"], ":90", "-screen", "0",
                                        f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp",
                                        "-fbdir", str(fbdir)])  # fmt: skip
        deadline = time.monotonic() + 10
        while not (fbdir / "Xvfb_screen0").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._paint(fbdir / "Xvfb_screen0")
        self._serve("server", "x11vnc", [self.bins["x11vnc"], "-display", ":90", "-rfbport",
                                          str(VNC_PORT), "-nopw", "-forever", "-shared",
                                          "-nocursorshape", "-cursor", "arrow", "-noipv6",
                                          "-quiet"])  # fmt: skip
        self._serve("server", "relayd-serve", [
            self.bins["relayd"], "serve", "--listen", f"0.0.0.0:{EXIT_PORT}", "--key",
            str(self.key), "--allow", f"127.0.0.1:{VNC_PORT}", "--allow",
            f"127.0.0.1:{SSH_PORT}", "--log-level", "warning",
        ])  # fmt: skip
        for relay in lab.scenario.relays:
            self._serve(relay, f"relay-{relay}", [
                self.bins["relayd"], "relay", "--listen", f"0.0.0.0:{RELAY_PORT}", "--exit",
                f"{server}:{EXIT_PORT}", "--key", str(self.key), "--log-level", "warning",
            ])  # fmt: skip
            self._serve(relay, f"socat-{relay}", [
                self.bins["socat"], f"TCP-LISTEN:{FORWARD_PORT},fork,reuseaddr,nodelay",
                f"TCP:{server}:{VNC_PORT},nodelay",
            ])  # fmt: skip
        for port in (SSH_PORT, VNC_PORT, EXIT_PORT):
            self._wait_listening("server", port)
        for relay in lab.scenario.relays:
            self._wait_listening(relay, FORWARD_PORT)
            self._wait_listening(relay, RELAY_PORT, udp=True)
        uplinks = ", ".join(f'"{lab.addr("client", u)}"' for u in lab.scenario.uplinks)
        lines = [f'key = "{self.key}"', f"uplinks = [{uplinks}]", 'exit = "lab"', "",
                 "[exits.lab]", f'address = "{server}:{EXIT_PORT}"',
                 'transports = ["udp", "tcp"]']  # fmt: skip
        for relay in lab.scenario.relays:
            lines += ["", f"[relays.{relay}]", f'url = "udp://{lab.addr(relay)}:{RELAY_PORT}"']
        self.config = self.tmp / "dupsession.toml"
        self.config.write_text("\n".join(lines) + "\n")

    def _paint(self, fb_file: Path) -> None:
        import mmap
        import struct

        rows = desktop_picture(WIDTH, HEIGHT, seed=5)
        with fb_file.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as memory:
            fields = struct.unpack_from(">25I", memory, 0)
            offset = fields[0] + fields[19] * 12
            for y in range(HEIGHT):
                start = offset + y * fields[12]
                memory[start : start + WIDTH * 4] = rows[y * WIDTH * 4 : (y + 1) * WIDTH * 4]

    def interact(self, host: str, port: int) -> list[float]:
        argv = [sys.executable, "-m", "tests.support.vncgrab", "interact", str(port),
                str(self.args.rounds), "--host", host]  # fmt: skip
        result = self.lab.run("client", argv, check=False, env=self.env, cwd=str(ROOT), timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"vnc client failed: {result.stderr}")
        return list(json.loads(result.stdout.strip().splitlines()[-1]))

    def wait_local(self, port: int) -> None:
        self._wait_listening("client", port)

    def run_methods(self) -> dict[str, list[float]]:
        results: dict[str, list[float]] = {}
        relay1 = self.lab.addr("relay1")
        results["plain TCP (up1-relay1)"] = self.interact(relay1, FORWARD_PORT)
        forward = self._serve("client", "forward", [
            self.bins["dupsession"], "forward", "--config", str(self.config),
            f"127.0.0.1:{LOCAL_FORWARD}", "127.0.0.1", str(VNC_PORT),
        ])  # fmt: skip
        self.wait_local(LOCAL_FORWARD)
        results["dupsession forward"] = self.interact("127.0.0.1", LOCAL_FORWARD)
        stop_tree(forward.pid)
        proxy = f"{self.bins['dupsession']} --config {self.config} -- %h %p"
        ssh = self._serve("client", "ssh-L", [
            self.bins["ssh"], "-F", "/dev/null", "-i", str(self.tmp / "user_ed25519"),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={self.tmp / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={HOST_KEY_ALIAS}", "-o", "BatchMode=yes",
            "-o", f"ProxyCommand={proxy}", "-o", "ExitOnForwardFailure=yes", "-N",
            "-L", f"{LOCAL_SSH_L}:127.0.0.1:{VNC_PORT}", "-p", str(SSH_PORT), "root@127.0.0.1",
        ])  # fmt: skip
        self.wait_local(LOCAL_SSH_L)
        results["ssh -L + ProxyCommand"] = self.interact("127.0.0.1", LOCAL_SSH_L)
        stop_tree(ssh.pid)
        return results

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                stop_tree(proc.pid)
            proc.wait()
        self.lab.down()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(results: dict[str, list[float]], load: tuple[float, float]) -> dict[str, Any]:
    print(f"\nVNC pointer event -> changed framebuffer (ms), {SCENARIO}; "
          f"load average {load[0]:.2f} before, {load[1]:.2f} after (2 cores, shared)")  # fmt: skip
    print(f"{'method':<26} {'n':>4} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'p99/plain':>10}")
    base = results.get("plain TCP (up1-relay1)")
    figures: dict[str, Any] = {}
    for name, samples in results.items():
        row = {p: pct(samples, p) * 1e3 for p in (50, 90, 99)}
        row["max"] = max(samples) * 1e3
        ratio = f"{row[99] / (pct(base, 99) * 1e3):.2f}" if base else ""
        print(f"{name:<26} {len(samples):>4} {row[50]:8.1f} {row[90]:8.1f} {row[99]:8.1f} "
              f"{row['max']:8.1f} {ratio:>10}")  # fmt: skip
        figures[name] = {**{str(k): v for k, v in row.items()}, "mean": statistics.mean(samples)}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 interactions per method")
    parser.add_argument("--rounds", type=int, help="interactions per method (default 150)")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    args.rounds = args.rounds or (40 if args.quick else 150)
    bench = Bench(args)
    load_before = os.getloadavg()[0]
    try:
        bench.start()
        results = bench.run_methods()
    finally:
        bench.stop()
    figures = report(results, (load_before, os.getloadavg()[0]))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "samples": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
