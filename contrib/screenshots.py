"""Render docs/img/status.png and docs/img/probe.png from a real, live session.

    python3 contrib/screenshots.py [--seconds 6] [--out docs/img] [--keep-svg]

Inside this process it starts an exit (relayd's server), an echo target and three loopback
UDP paths impaired by the shim, with the delays of tests/e2e/test_status.py:

    A  up 10 ms, down 30 ms     the fastest way out
    B  up 60 ms, down 10 ms     the fastest way back
    C  up 50 ms, down 50 ms, 10 % loss each way

It types a keystroke every 50 ms for --seconds, then renders what `dupsession status` shows
for that session (`dupsession.status.render` on the session's real snapshot) and, after a
probe session over the same paths, what `dupsession probe` prints (`dupsession.probe.report`).
rich records each as SVG; an SVG converter makes the PNG: `cairosvg` (pip install cairosvg)
when importable, else `rsvg-convert` (Debian: apt-get install librsvg2-bin). Neither is a
dependency of dupsession: this is a documentation tool.

Nothing leaves 127.0.0.1; control sockets go to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import CONSOLE_SVG_FORMAT, Console, RenderableType
from rich.terminal_theme import MONOKAI

if TYPE_CHECKING:
    from dupsession.status import Process

ROOT = Path(__file__).resolve().parent.parent
MIN_WIDTH, MAX_WIDTH = 60, 200  #: columns of a screenshot
#: DejaVu Sans Mono, which every Debian has and both converters find by name; no web fonts.
FONT = "DejaVu Sans Mono"
FONT_ASPECT = 0.602  #: its advance width / font size


@dataclass(frozen=True)
class Route:
    name: str
    up: float
    down: float
    loss: float = 0.0


ROUTES = (
    Route("A", 0.010, 0.030),
    Route("B", 0.060, 0.010),
    Route("C", 0.050, 0.050, 0.10),
)


def svg_format() -> str:
    """rich's SVG template without the web-font @font-face rules (never fetched offline),
    and with xml:space="preserve": rich writes spaces as &#160;, which rsvg-convert would
    otherwise strip at the start of a text run, shifting words left.
    """
    template = re.sub(r"@font-face \{\{.*?\}\}\s*", "", CONSOLE_SVG_FORMAT, flags=re.DOTALL)
    template = template.replace("Fira Code, monospace", f"{FONT}, monospace")
    return template.replace("<svg ", '<svg xml:space="preserve" ', 1)


def to_png(svg: str, png: Path) -> None:
    try:
        import cairosvg  # type: ignore[import-not-found]
    except ImportError:
        converter = shutil.which("rsvg-convert")
        if converter is None:
            sys.exit(
                "screenshots: no SVG converter: pip install cairosvg, "
                "or apt-get install librsvg2-bin (rsvg-convert)"
            )
        subprocess.run(
            [converter, "--format", "png", "--zoom", "1.5", "--output", str(png)],
            input=svg.encode(),
            check=True,
            timeout=60,
        )
    else:
        cairosvg.svg2png(bytestring=svg.encode(), write_to=str(png), scale=1.5)


def save(renderable: RenderableType, title: str, out: Path, keep_svg: bool) -> None:
    """Record `renderable` as wide as it wants to be (no column cut short), then PNG it."""
    probe = Console(width=MAX_WIDTH, file=open(os.devnull, "w"))  # noqa: SIM115
    width = min(MAX_WIDTH, max(MIN_WIDTH, probe.measure(renderable).maximum))
    probe.file.close()
    console = Console(
        record=True,
        width=width,
        force_terminal=True,
        color_system="truecolor",
        file=open(os.devnull, "w"),  # noqa: SIM115 - recorded, not shown
        legacy_windows=False,
    )
    console.print(renderable)
    svg = console.export_svg(
        title=title, theme=MONOKAI, code_format=svg_format(), font_aspect_ratio=FONT_ASPECT
    )
    console.file.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    if keep_svg:
        out.with_suffix(".svg").write_text(svg)
    to_png(svg, out)
    print(f"wrote {out}", file=sys.stderr)


class _Echo(asyncio.Protocol):
    """The target: sends every byte back, and ends its side after ours."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.write_eof()
        return True


async def capture(seconds: float) -> tuple[list[Process], RenderableType]:
    """A live session's status reports, and the probe report over the same paths."""
    from dupsession import probe, status
    from dupsession.core.session import SessionConfig
    from dupsession.echo import open_echo_session, type_keystrokes
    from dupsession.pathspec import PathSpec
    from dupsession.settings import ClientSettings
    from dupsession.testing.shim import Impairment, UdpShim
    from relayd.acl import AllowList
    from relayd.server import ExitConfig, ExitServer

    psk = os.urandom(32)
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(_Echo, "127.0.0.1", 0)
    target = f"127.0.0.1:{echo.sockets[0].getsockname()[1]}"
    exit_server = ExitServer(
        ExitConfig(("127.0.0.1", 0), psk, AllowList.parse([target]), session=SessionConfig())
    )
    await exit_server.start()
    assert exit_server.address is not None
    shims = [
        UdpShim(
            exit_server.address,
            up=Impairment(delay=r.up, loss=r.loss),
            down=Impairment(delay=r.down, loss=r.loss),
            seed=index,
        )
        for index, r in enumerate(ROUTES)
    ]
    try:
        for shim in shims:
            await shim.start()
        settings = ClientSettings(
            key_path=Path("unused"),
            paths=tuple(
                PathSpec("udp", "127.0.0.1", shim.port, via=r.name)  # shown as default/A/udp
                for shim, r in zip(shims, ROUTES, strict=True)
            ),
            connect_timeout=5.0,
        )
        client, meter = await open_echo_session(settings, target, psk)
        try:
            # type_keystrokes waits a second after the last keystroke: snapshot mid-typing.
            typing = asyncio.ensure_future(type_keystrokes(client, meter, seconds + 2))
            await asyncio.sleep(seconds)
            documents = [status.Process("client", os.getpid(), None, (client.report(),))]
            typing.cancel()
            await probe.finish(client)
        finally:
            client.close()
        results, rtts = await probe.measure(settings, min(seconds, 4.0), psk)
        return documents, probe.report(results, rtts)
    finally:
        await exit_server.close()
        for shim in shims:
            await shim.close()
        echo.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="typing before the snapshot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--keep-svg", action="store_true", help="also keep the .svg files")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dupsession import status
    from dupsession.aio.loop import run

    with tempfile.TemporaryDirectory(prefix="dupsession-shots-") as run_dir:
        os.environ["DUPSESSION_RUNTIME_DIR"] = run_dir  # our sessions' control sockets
        documents, probe_report = run(capture(args.seconds))
    screen = status.with_help(status.render(documents))
    save(screen, "dupsession status", args.out / "status.png", args.keep_svg)
    save(probe_report, "dupsession probe", args.out / "probe.png", args.keep_svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
