"""Event loop choice: uvloop where installed (it halves the per-datagram cost), else asyncio."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], service: bool = False) -> T:
    """Run `main` on uvloop. A `service` (the client's session, relayd) first moves what the
    imports made (~32,000 objects: modules, classes, functions) out of the garbage
    collector's reach (`gc.freeze`): they live as long as the process, and a full collection
    traversed them all, 13 ms of CPU here and 30-36 ms of wall time on the busy netlab, where
    every keystroke queued behind it (docs/BENCHMARKS.md, "CPU per frame on the netlab")."""
    if service:
        gc.freeze()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
