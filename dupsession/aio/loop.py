"""Event loop choice: uvloop where installed (it halves the per-datagram cost), else asyncio."""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: glibc's `mallopt` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Free heap a service keeps instead of returning it to the kernel, and the block size below
#: which malloc serves from the heap (glibc's defaults: 128 KiB each, raised only as large
#: mapped blocks are freed).
HEAP_KEEP = 8 * 1024 * 1024
HEAP_BLOCK_MAX = 1024 * 1024


def keep_heap() -> bool:
    """Keep freed heap for reuse (glibc): a bulk transfer's 64 KiB frames and 32-256 KiB read
    and record buffers grew and trimmed relayd's heap over and over, and every regrown page
    was a page fault, a zeroed page and its release (140 minor faults per MB in relayd during
    a 1 TCP upload; docs/BENCHMARKS.md, tcp300). False where there is no `mallopt`."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_MAX) and mallopt(M_TRIM_THRESHOLD, HEAP_KEEP))


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
    every keystroke queued behind it (docs/BENCHMARKS.md, "CPU per frame on the netlab"),
    and keeps its freed heap (`keep_heap`)."""
    if service:
        gc.freeze()
        keep_heap()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
