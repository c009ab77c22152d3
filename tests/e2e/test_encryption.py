"""Payload encryption end to end: known plaintext never appears in any datagram or TCP chunk.

The paths run through userspace forwarders (dupsession.testing.shim) that keep a copy of every
datagram and chunk in both directions: what an observer on the wire sees. The target echoes,
so the secret crosses the wire once each way. The control run without encryption finds the
secret in the very same capture, so the search can fail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.proxycmd import run_dupsession
from tests.support.relay import Relay
from tests.support.shims import ShimThread
from tests.support.targets import TcpTarget

pytestmark = pytest.mark.timeout(60)

SECRET = b"RFB 003.008 known-plaintext password=hunter2 " * 2000  # ~90 kB, many frames


def _captured_run(
    relays: Callable[..., Relay], shims: ShimThread, flag: str
) -> tuple[bytes, bytes, int]:
    """(stdout, every byte the forwarders saw, exit code) of one echo run with `flag`."""
    with TcpTarget("echo") as target:
        relay = relays(allow=[f"127.0.0.1:{target.port}"])
        udp = shims.udp(("127.0.0.1", relay.port))
        tcp = shims.tcp(("127.0.0.1", relay.port))
        udp.capture, tcp.capture = [], []
        # compression off: the stream crosses the wire at full size, every byte of it exposed
        args = ["--key", str(relay.key), flag, "--compress", "off"]
        args += ["--path", f"udp://127.0.0.1:{udp.port}", "--path", f"tcp://127.0.0.1:{tcp.port}"]
        result, _ = run_dupsession([*args, "127.0.0.1", str(target.port)], input=SECRET)
        seen = shims.call(lambda: b"\n".join(udp.capture + tcp.capture))  # type: ignore[operator]
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout, seen, len(udp.capture or ())


def test_encrypted_stream_shows_no_plaintext(
    relays: Callable[..., Relay], shims: ShimThread
) -> None:
    echoed, seen, datagrams = _captured_run(relays, shims, "--encrypt")
    assert echoed == SECRET
    # both directions were captured (the TCP path carries all of it; the UDP path as much as
    # its congestion controller lets it, which on a loaded machine may be little)
    assert datagrams > 0 and len(seen) > 2 * len(SECRET)
    for needle in (b"hunter2", b"known-plaintext", b"RFB 003.008", SECRET[:12]):
        assert needle not in seen


def test_control_plaintext_is_visible_without_encryption(
    relays: Callable[..., Relay], shims: ShimThread
) -> None:
    echoed, seen, _ = _captured_run(relays, shims, "--no-encrypt")
    assert echoed == SECRET
    assert b"hunter2" in seen
