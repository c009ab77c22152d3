"""VNC end to end with real parts: Xvfb + x11vnc, and vncdotool as the viewer.

The framebuffer fetched through `dupsession forward` (encrypted, compressed) equals the one
fetched directly; so does the one fetched through `ssh -L` over the ProxyCommand, and the one
fetched through `dupsession forward` over impaired paths (userspace shims: loss, delay).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dupsession.testing.shim import Impairment
from tests.support.forward import Forward
from tests.support.proxycmd import ProxyProbe
from tests.support.relay import Relay
from tests.support.shims import ShimThread
from tests.support.sshd import PrivateSshd, free_port
from tests.support.vnc import VncServer, grab

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def vnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VncServer]:
    with VncServer(tmp_path_factory.mktemp("vnc")) as server:
        server.paint(seed=11)
        yield server


@pytest.fixture(scope="module")
def direct(vnc: VncServer, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The framebuffer fetched straight from x11vnc, once x11vnc has polled the painting."""
    out = tmp_path_factory.mktemp("direct")
    previous = b""
    for attempt in range(20):
        image = grab(vnc.port, out / f"direct{attempt}.png")
        if image == previous and any(image[:3000]):
            return image
        previous = image
        time.sleep(0.2)
    raise AssertionError("the painted framebuffer never settled")


def test_forward_fetches_the_same_framebuffer(
    vnc: VncServer, direct: bytes, relays: Callable[..., Relay], tmp_path: Path
) -> None:
    relay = relays(allow=[f"127.0.0.1:{vnc.port}"])
    paths = ["--path", relay.path("udp"), "--path", relay.path("tcp")]
    with Forward(
        ["--key", str(relay.key), *paths, "0", "127.0.0.1", str(vnc.port)], tmp_path
    ) as fwd:
        forwarded = grab(fwd.port, tmp_path / "forward.png")
    assert len(forwarded) == vnc.width * vnc.height * 3
    assert forwarded == direct


def test_ssh_dash_l_over_the_proxycommand_fetches_the_same_framebuffer(
    vnc: VncServer,
    direct: bytes,
    relays: Callable[..., Relay],
    probes: Callable[..., ProxyProbe],
    sshd: PrivateSshd,
    tmp_path: Path,
) -> None:
    relay = relays(allow=[f"{sshd.host}:{sshd.port}"])
    probe = probes(
        ["--key", str(relay.key), "--path", relay.path("udp"), "--path", relay.path("tcp"), "--"]
    )
    local = free_port()
    argv = sshd.ssh_command(
        proxy_command=probe.command,
        extra_opts=["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{vnc.port}"],
    )
    ssh = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", local)) == 0:
                    break
            assert ssh.poll() is None, ssh.stderr.read() if ssh.stderr else ""
            time.sleep(0.1)
        tunnelled = grab(local, tmp_path / "ssh-L.png")
    finally:
        ssh.terminate()
        ssh.wait(10)
        if ssh.stderr is not None:
            ssh.stderr.close()
    assert tunnelled == direct


def test_forward_over_impaired_paths_fetches_the_same_framebuffer(
    vnc: VncServer,
    direct: bytes,
    relays: Callable[..., Relay],
    shims: ShimThread,
    tmp_path: Path,
) -> None:
    relay = relays(allow=[f"127.0.0.1:{vnc.port}"])
    lossy = Impairment(delay=0.02, jitter=0.005, loss=0.1)
    slow = Impairment(delay=0.04)
    udp1 = shims.udp(("127.0.0.1", relay.port), up=lossy, down=lossy, seed=1)
    udp2 = shims.udp(("127.0.0.1", relay.port), up=lossy, down=lossy, seed=2)
    tcp = shims.tcp(("127.0.0.1", relay.port), up=slow, down=slow)
    paths = [
        "--path", f"udp://127.0.0.1:{udp1.port}",
        "--path", f"udp://127.0.0.1:{udp2.port}",
        "--path", f"tcp://127.0.0.1:{tcp.port}",
    ]  # fmt: skip
    args = ["--key", str(relay.key), *paths, "0", "127.0.0.1", str(vnc.port)]
    with Forward(args, tmp_path) as fwd:
        forwarded = grab(fwd.port, tmp_path / "impaired.png")
    assert forwarded == direct
    assert udp1.up_counters.dropped + udp2.down_counters.dropped > 0  # the loss was real
