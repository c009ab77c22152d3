"""A service's imports are out of the garbage collector's reach before its loop runs.

A full collection traversed the ~32,000 objects the imports made, 13 ms of CPU and 30-36 ms
of wall time on the busy netlab, with every keystroke through that process waiting
(docs/BENCHMARKS.md, "CPU per frame on the netlab"). The client's session (`dupsession
HOST PORT`) and relayd's `serve` and `relay` run as services."""

from __future__ import annotations

import gc

from dupsession.aio.loop import run


async def frozen() -> int:
    return gc.get_freeze_count()


def test_a_service_runs_with_its_startup_objects_frozen() -> None:
    gc.unfreeze()
    try:
        assert run(frozen()) == 0  # a command's loop: nothing frozen
        assert run(frozen(), service=True) > 1000
    finally:
        gc.unfreeze()  # the test process's objects go back to the collector
