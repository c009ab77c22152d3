"""One vocabulary for what a link does to traffic, shared by the three network models.

The impairment shim (`shim.Impairment`, real sockets on loopback), the simulator's links
(`tests/sim/network.py`'s `LinkSpec`, virtual time) and the netlab's emulator (contrib/netlab:
scenario TOML, `Lab.set_link`) each grew their own names for the same settings. `LinkSettings`
names every setting once, in one unit, and each model takes it (`impairment()`,
`LinkSpec.from_settings`, `netlab_params()` / `Lab.set_link(settings=...)`); a setting a model
cannot do is a `ValueError` naming it, never silently dropped. Each model's own spelling:

| setting | unit | shim `Impairment` | simulator `LinkSpec` | netlab TOML and `set_link` |
|---|---|---|---|---|
| `delay` | s | `delay` | `delay` | `delay_ms` |
| `jitter` | s, uniform +/- | `jitter` | `delay - j`, `jitter` 2j (adds [0, jitter]) | `jitter_ms` |
| `loss` | probability | `loss` (UDP) | `loss` (datagram links) | `loss` |
| `burst` | Gilbert-Elliott | - | - | `p_enter_bad`, `p_leave_bad`, `loss_in_bad` |
| `rate` | bit/s | `rate_bps` | `Bottleneck(rate / 8)` (bytes/s) | `rate_kbit` |
| `queue` | s at the rate | `queue` | `Bottleneck.queue` | `queue_bytes` (= queue x rate / 8) |
| `outages` | [start, end) s | - (flip `blackhole` live) | `outages` | `outages` |
| `down` | bool | `blackhole` | an outage from 0 to inf | `down` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dupsession.testing.shim import UDP_MAX_QUEUE_DELAY, Impairment

__all__ = ["BurstLoss", "LinkSettings"]


@dataclass(frozen=True, slots=True)
class BurstLoss:
    """Gilbert-Elliott loss: a good and a bad state, switched per packet."""

    enter: float  #: probability per packet of going from good to bad
    leave: float = 0.25  #: probability per packet of going back (mean burst 1 / leave packets)
    loss: float = 1.0  #: loss probability while bad


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """One direction of one link. The defaults mean "no impairment"."""

    delay: float = 0.0  #: one-way delay (s)
    jitter: float = 0.0  #: uniform extra delay in [-jitter, +jitter] (s), never below 0
    loss: float = 0.0  #: independent loss probability (datagrams; a stream loses nothing)
    burst: BurstLoss | None = None  #: burst loss on top of `loss`
    rate: float | None = None  #: link rate (bit/s); None: unlimited
    queue: float | None = None  #: longest wait for the rate before tail drop (s); None: default
    outages: tuple[tuple[float, float], ...] = ()  #: dead intervals [start, end) (s from start)
    down: bool = False  #: dead now: datagrams dropped, streams stalled

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "loss"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.loss > 1:
            raise ValueError("loss is a probability in 0..1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (None: unlimited)")
        if self.queue is not None and self.queue <= 0:
            raise ValueError("queue must be positive (None: the model's default)")
        for start, end in self.outages:
            if not 0 <= start < end:
                raise ValueError(f"outage {(start, end)} must have 0 <= start < end")

    def impairment(self) -> Impairment:
        """For the shim: a new live `Impairment` (burst loss and scheduled outages are the
        netlab's and the simulator's; on the shim, flip `blackhole` when the time comes)."""
        if self.burst is not None:
            raise ValueError("the shim has no burst loss (the netlab has)")
        if self.outages:
            raise ValueError("the shim has no scheduled outages: set its blackhole live")
        return Impairment(
            delay=self.delay,
            jitter=self.jitter,
            loss=self.loss,
            blackhole=self.down,
            rate_bps=self.rate,
            queue=UDP_MAX_QUEUE_DELAY if self.queue is None else self.queue,
        )

    def netlab_params(self) -> dict[str, Any]:
        """For the netlab: its scenario keys (`[links.X]`/`[routes.X]` tables, `set_link`)."""
        params: dict[str, Any] = {
            "delay_ms": self.delay * 1e3,
            "jitter_ms": self.jitter * 1e3,
            "loss": self.loss,
            "rate_kbit": 0.0 if self.rate is None else self.rate / 1e3,
            "outages": [[start, end] for start, end in self.outages],
            "down": self.down,
        }
        if self.burst is not None:
            params.update(
                p_enter_bad=self.burst.enter,
                p_leave_bad=self.burst.leave,
                loss_in_bad=self.burst.loss,
            )
        if self.queue is not None:
            if self.rate is None:
                raise ValueError("the netlab's queue is in bytes: give a rate with a queue")
            params["queue_bytes"] = max(1, math.ceil(self.queue * self.rate / 8))
        return params
