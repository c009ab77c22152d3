"""Missing prerequisites: skip on a developer's box, fail under CI=true.

Why fail under CI: a CI run that silently skipped every end-to-end test would look green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Stop the test for want of `reason`: a failure under CI=true, a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def lab_problem() -> str | None:
    """Why this machine cannot build a network lab (namespaces, TUN), or None if it can."""
    if os.uname().sysname != "Linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        return "needs iproute2 (`ip`)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if res.returncode != 0:
        return f"`ip netns list` failed: {res.stderr.strip()}"
    return None
