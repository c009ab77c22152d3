"""A service's imports are out of the garbage collector's reach before its loop runs, and it
keeps its freed heap.

A full collection traversed the ~32,000 objects the imports made, 13 ms of CPU and 30-36 ms
of wall time on the busy netlab, with every keystroke through that process waiting
(docs/BENCHMARKS.md, "CPU per frame on the netlab"). The client's session (`dupsession
HOST PORT`) and relayd's `serve` and `relay` run as services."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys

from dupsession.aio.loop import run
from tests.prereq import missing


async def frozen() -> int:
    return gc.get_freeze_count()


def test_a_service_runs_with_its_startup_objects_frozen() -> None:
    gc.unfreeze()
    try:
        assert run(frozen()) == 0  # a command's loop: nothing frozen
        assert run(frozen(), service=True) > 1000
    finally:
        gc.unfreeze()  # the test process's objects go back to the collector


#: In a fresh interpreter: churn 64 KiB blocks as a bulk transfer's frames do, then count the
#: page faults of a second round (after `run(..., service=True)` when argv[1] says so).
_CHURN = """
import asyncio, resource, sys
from dupsession.aio.loop import run
from tests.prereq import missing

async def churn():
    for _ in range(200):
        blocks = [bytes(65536) for _ in range(8)]
        del blocks

if sys.argv[1] == "service":
    run(churn(), service=True)
else:
    asyncio.run(churn())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
asyncio.run(churn())
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_service_keeps_its_freed_heap() -> None:
    """Without it glibc trimmed the heap after each burst of frames and every regrown page was
    a fault (relayd uploading: 140 per MB); a service reuses its heap."""
    if platform.libc_ver()[0] != "glibc":
        missing("needs glibc (mallopt)")
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", _CHURN, mode], check=True, capture_output=True, text=True
            ).stdout
        )
        for mode in ("command", "service")
    }
    assert faults["command"] > 1000  # the pattern trims glibc's default heap
    assert faults["service"] < faults["command"] / 10
