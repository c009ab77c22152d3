"""A real VNC server for tests and benchmarks: Xvfb on a private display, x11vnc on loopback.

The picture: Xvfb keeps its framebuffer in a file (`-fbdir`), so `paint` writes a pattern
straight into the screen memory; x11vnc polls the screen and serves it. The pointer is drawn
into the framebuffer (`-nocursorshape -cursor arrow`), so a pointer event changes pixels: the
interaction that the benchmark times.

The VNC client is vncdotool, run in a subprocess per use (`python3 -m tests.support.vncgrab`):
its Twisted reactor cannot be restarted inside one process.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from dupsession.testing.lifecycle import Running
from tests.prereq import missing
from tests.support.processes import stop_pid
from tests.support.sshd import free_port, require_binary

START_TIMEOUT = 15.0
#: XWD header fields that locate the pixels in Xvfb's screen file (big-endian u32s).
_XWD = struct.Struct(">25I")
REPO = Path(__file__).resolve().parents[2]


def _free_display() -> int:
    for number in random.Random().sample(range(150, 600), 100):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return number
    raise RuntimeError("no free X display number")


class VncServer(Running):
    """Xvfb + x11vnc, started by `with`, stopped by PID."""

    def __init__(self, workdir: Path, width: int = 640, height: int = 400) -> None:
        self.xvfb = require_binary("Xvfb")
        self.x11vnc = require_binary("x11vnc")
        if importlib.util.find_spec("vncdotool") is None:
            missing("vncdotool is not installed (pip install -e '.[test]')")
        self.workdir = workdir
        self.width, self.height = width, height
        self.display = _free_display()
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log = (workdir / "vnc.log").open("ab")

    def start(self) -> None:
        fbdir = self.workdir / "fb"
        fbdir.mkdir(parents=True, exist_ok=True)
        log = self._log
        screen = f"{self.width}x{self.height}x24"
        self.procs.append(
            subprocess.Popen(
                [self.xvfb, f":{self.display}", "-screen", "0", screen, "-nolisten", "tcp",
                 "-fbdir", str(fbdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        )  # fmt: skip
        self.fb_file = fbdir / "Xvfb_screen0"
        self._wait(lambda: self.fb_file.exists() and self.fb_file.stat().st_size > 0, "Xvfb")
        self.procs.append(
            subprocess.Popen(
                [self.x11vnc, "-display", f":{self.display}", "-rfbport", str(self.port),
                 "-localhost", "-nopw", "-forever", "-shared", "-nocursorshape",
                 "-cursor", "arrow", "-quiet", "-noipv6"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        )  # fmt: skip
        self._wait(self._listening, "x11vnc")

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.05)
        self.stop()
        log = (self.workdir / "vnc.log").read_text(errors="replace")
        raise AssertionError(f"{what} did not start:\n{log}")

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                stop_pid(proc.pid)
            proc.wait(5)
        self.procs.clear()
        self._log.close()

    def paint(self, seed: int) -> None:
        """Write `desktop_picture` straight into the screen memory."""
        rows = desktop_picture(self.width, self.height, seed)
        with self.fb_file.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as memory:
            fields = _XWD.unpack_from(memory, 0)
            header, bytes_per_line, ncolors = fields[0], fields[12], fields[19]
            offset = header + ncolors * 12
            row_bytes = self.width * 4
            for y in range(self.height):
                start = offset + y * bytes_per_line
                memory[start : start + row_bytes] = rows[y * row_bytes : (y + 1) * row_bytes]


def desktop_picture(width: int, height: int, seed: int) -> bytes:
    """A desktop-like 32-bit picture (BGRX): gradient, windows, text-ish stripes.

    Compressible like a real desktop, different for each seed; also the "raw framebuffer"
    sample of contrib/bench/codec.py.
    """
    rng = random.Random(seed)
    rows = [
        bytearray(
            b"".join(bytes((x * 255 // width, y * 255 // height, 96, 0)) for x in range(width))
        )
        for y in range(height)
    ]
    for _ in range(6):
        x0, y0 = rng.randrange(width - 120), rng.randrange(height - 80)
        color = bytes((rng.randrange(256), rng.randrange(256), rng.randrange(256), 0))
        for y in range(y0, y0 + 80):
            rows[y][x0 * 4 : (x0 + 120) * 4] = color * 120
            if (y - y0) % 6 == 3:  # "text"
                for x in range(x0 + 4, x0 + 116, 3):
                    rows[y][x * 4 : x * 4 + 4] = bytes(4) if rng.random() < 0.6 else color
    return b"".join(rows)


def grab(port: int, out: Path, timeout: float = 60.0, settle: float = 0.0) -> bytes:
    """The framebuffer at 127.0.0.1:`port` as raw RGB bytes, fetched by vncdotool in a
    subprocess (also saved as PNG at `out`)."""
    cmd = [sys.executable, "-m", "tests.support.vncgrab", "grab", str(port), str(out)]
    if settle:
        cmd += ["--settle", str(settle)]
    result = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=REPO, env={**os.environ})
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return out.with_suffix(".rgb").read_bytes()
