"""Keystrokes echoed by the exit, timed in the simulator: what `dupsession demo` measures.

The client types one 16-byte record (`dupsession.echo.RECORD`) every `interval`; the exit
writes back whatever it receives at once (an echo target behind the exit); the client times
each record's echo. All on virtual time, so tails are exact and reproduce from the seed.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dupsession.echo import RECORD
from tests.sim.network import START, PathSpec, Simulation, Wake


class EchoSimulation(Simulation):
    """A `Simulation` whose exit echoes every byte and whose client times each record."""

    def __init__(
        self,
        paths: Sequence[PathSpec],
        seed: int,
        count: int,
        interval: float = 0.05,
        start: float = 1.0,
        **kwargs: Any,
    ) -> None:
        keys = [(start + i * interval, RECORD.pack(i)) for i in range(count)]
        super().__init__(paths, seed, keys, [], half_close=False, **kwargs)
        self.typed_at = [START + at for at, _ in keys]
        self.rtts: list[float] = []
        self._echoed = bytearray()
        exit_side, client_side = self.exit, self.client
        exit_data, client_data = exit_side.on_data, client_side.on_data

        def echo(data: bytes) -> None:  # the target writes back what it got, at once
            exit_data(data)
            exit_side.writes.append((self.now, data))
            self._push(self.now, exit_side, Wake())

        def timed(data: bytes) -> None:
            client_data(data)
            self._echoed += data
            while len(self._echoed) >= RECORD.size:
                (counter,) = RECORD.unpack_from(self._echoed)
                del self._echoed[: RECORD.size]
                self.rtts.append(self.now - self.typed_at[counter])

        exit_side.on_data = echo  # type: ignore[method-assign]
        client_side.on_data = timed  # type: ignore[method-assign]


def typing_with_burst(
    specs: Sequence[PathSpec],
    seed: int,
    keystrokes: int,
    interval: float,
    burst: int,
    **kwargs: Any,
) -> EchoSimulation:
    """Typing from 0.2 s, with a `burst`-byte transfer 0.3 s in (0: none)."""
    sim = EchoSimulation(specs, seed, keystrokes, interval, start=0.2, **kwargs)
    if burst:
        at = START + 0.3
        sim.client.writes = deque(sorted([*sim.client.writes, (at, bytes(burst))]))
        sim._push(at, sim.client, Wake())
    return sim


@dataclass(frozen=True, slots=True)
class EchoTail:
    p50: float
    p99: float
    max: float
    count: int


def echo_tail(
    spec: PathSpec, seeds: Sequence[int], count: int, interval: float = 0.05, **kwargs: Any
) -> EchoTail:
    """Echo times of `count` keystrokes per seed over the paths `spec`, pooled (`kwargs` go
    to the `Simulation`: `features` for a policy)."""
    rtts: list[float] = []
    for seed in seeds:
        sim = EchoSimulation([spec], seed, count, interval, **kwargs)
        sim.run(until=1.0 + count * interval + 3.0)
        assert len(sim.rtts) == count, f"seed={seed}: {len(sim.rtts)} of {count} echoed"
        rtts += sim.rtts
    return EchoTail(
        p50=statistics.median(rtts),
        p99=statistics.quantiles(rtts, n=100)[98],
        max=max(rtts),
        count=len(rtts),
    )
