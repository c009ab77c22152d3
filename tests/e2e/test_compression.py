"""Compression end to end: compressible (logs, a raw framebuffer) and incompressible data
arrive byte-exact with every --compress setting, and compressible data takes fewer bytes on
the wire (counted at userspace forwarders on the paths)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.support.proxycmd import run_dupsession
from tests.support.relay import Relay
from tests.support.shims import ShimThread
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(90)

LOG = b"2026-12-02 02:17:40 relayd INFO session 4cc331b: opened for target 127.0.0.1:5900\n"
#: A 640x400 32-bit framebuffer: a desktop-like gradient with a window drawn on it.
FRAMEBUFFER = b"".join(
    bytes((x // 8, y // 4, 0x40, 0) if not (100 < x < 300 and 80 < y < 200) else (250, 250, 250, 0))
    for y in range(400)
    for x in range(640)
)
DATA = {
    "logs": LOG * 12_000,  # ~1 MB
    "framebuffer": FRAMEBUFFER,  # 1 MB
    "random": os.urandom(1_000_000),
}


@pytest.mark.parametrize("kind", list(DATA))
@pytest.mark.parametrize("setting", ["auto", "on", "off"])
def test_byte_exact_with_every_setting(
    kind: str, setting: str, relays: Callable[..., Relay], shims: ShimThread
) -> None:
    data = DATA[kind]
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        udp = shims.udp(("127.0.0.1", relay.port))
        udp.capture = []
        args = ["--key", str(relay.key), "--compress", setting, "--encrypt"]
        args += ["--path", f"udp://127.0.0.1:{udp.port}", "127.0.0.1", str(target.port)]
        result, _ = run_dupsession(args, input=data)
        wire_bytes = shims.call(lambda: sum(map(len, udp.capture or ())))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == data
    compressible = kind != "random"
    if compressible and setting != "off":
        assert wire_bytes < len(data)  # both directions together, smaller than one way raw
    else:
        assert wire_bytes > 2 * len(data)
