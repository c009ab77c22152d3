"""Impairment shims for e2e tests, run on an asyncio loop in a background thread.

The tests themselves block on subprocesses (ssh, dupsession), so the shims need a loop of
their own. `ShimThread` owns that loop; every shim it starts is closed, and the thread
joined, when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dupsession.aio.loop import loop_factory
from dupsession.testing.lifecycle import Running
from dupsession.testing.shim import Impairment, TcpShim, UdpShim

T = TypeVar("T")

CALL_TIMEOUT = 10.0  # seconds for one operation on the shim loop


class ShimThread(Running):
    """An event loop in a daemon thread that runs `UdpShim`s and `TcpShim`s."""

    def __init__(self) -> None:
        factory = loop_factory()
        self.loop = factory() if factory is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="shim-loop", daemon=True)
        self._shims: list[UdpShim | TcpShim] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the shim loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the shim loop (e.g. to change an Impairment) and return its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def udp(
        self,
        upstream: tuple[str, int],
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int = 0,
    ) -> UdpShim:
        shim = UdpShim(upstream, up=up, down=down, seed=seed)
        self.run(shim.start())
        self._shims.append(shim)
        return shim

    def tcp(
        self,
        upstream: tuple[str, int],
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int = 0,
    ) -> TcpShim:
        shim = TcpShim(upstream, up=up, down=down, seed=seed)
        self.run(shim.start())
        self._shims.append(shim)
        return shim

    def set(self, imp: Impairment, **changes: Any) -> None:
        """Change an impairment live, on the loop thread (the shims read it there)."""

        def apply() -> None:
            for name, value in changes.items():
                setattr(imp, name, value)

        self.call(apply)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            for shim in self._shims:
                self.run(shim.close())
        finally:
            self._shims.clear()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT)
            if not self._thread.is_alive():
                self.loop.close()
