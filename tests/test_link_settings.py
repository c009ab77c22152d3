"""The testing vocabulary for links (dupsession/testing/link.py) in each network model.

One `LinkSettings` becomes the shim's `Impairment`, the simulator's `LinkSpec` and the
netlab's scenario keys with the same meaning (units converted, jitter's shape kept); a setting
a model cannot do is refused by name.
"""

from __future__ import annotations

import math
import random

import pytest

from contrib.netlab.emulator import normalize_params
from dupsession.testing.link import BurstLoss, LinkSettings
from dupsession.testing.shim import UDP_MAX_QUEUE_DELAY
from tests.sim.network import Link, LinkSpec

SETTINGS = LinkSettings(delay=0.04, jitter=0.01, loss=0.05, rate=2e6, queue=0.1)


def test_the_shim_takes_the_same_names_and_units() -> None:
    imp = SETTINGS.impairment()
    assert (imp.delay, imp.jitter, imp.loss, imp.rate_bps, imp.queue) == (
        0.04,
        0.01,
        0.05,
        2e6,
        0.1,
    )
    assert not imp.blackhole and LinkSettings(down=True).impairment().blackhole
    assert LinkSettings().impairment().queue == UDP_MAX_QUEUE_DELAY


def test_the_netlab_gets_its_keys_in_its_units() -> None:
    params = LinkSettings(
        delay=0.04,
        jitter=0.01,
        loss=0.05,
        burst=BurstLoss(0.02, 0.3, 0.8),
        rate=2e6,
        queue=0.1,
        outages=((20.0, 25.0),),
    ).netlab_params()
    assert normalize_params(params) == params  # every key is one the emulator knows
    assert params["delay_ms"] == pytest.approx(40) and params["jitter_ms"] == pytest.approx(10)
    assert params["rate_kbit"] == 2000 and params["queue_bytes"] == 25_000  # 0.1 s at 2 Mbit/s
    assert (params["p_enter_bad"], params["p_leave_bad"], params["loss_in_bad"]) == (
        0.02,
        0.3,
        0.8,
    )
    assert params["outages"] == [[20.0, 25.0]] and params["down"] is False
    with pytest.raises(ValueError, match="give a rate with a queue"):
        LinkSettings(queue=0.1).netlab_params()


def test_the_simulator_keeps_the_jitter_range_and_the_rate() -> None:
    spec = LinkSpec.from_settings(SETTINGS)
    assert spec.bottleneck is not None
    assert spec.bottleneck.rate == 250_000 and spec.bottleneck.queue == 0.1  # bytes/s, s
    steady = LinkSpec.from_settings(LinkSettings(delay=0.04, jitter=0.01))
    link = Link(steady, random.Random(1), 0.0)
    delays = [link.send(b"x", i * 0.01)[0][0] - i * 0.01 for i in range(2000)]
    assert 0.03 <= min(delays) < 0.031 and 0.049 < max(delays) <= 0.05 + 1e-9
    dead = LinkSpec.from_settings(LinkSettings(down=True), datagram=False)
    assert dead.outages == ((0.0, math.inf),) and not dead.datagram


@pytest.mark.parametrize(
    ("use", "message"),
    [
        (lambda s: s.impairment(), "the shim has no burst loss"),
        (lambda s: LinkSpec.from_settings(s), "the simulator has no burst loss"),
    ],
)
def test_what_a_model_cannot_do_is_refused_by_name(use: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        use(LinkSettings(burst=BurstLoss(0.1)))  # type: ignore[operator]


def test_bad_settings_are_refused() -> None:
    for bad in ({"loss": 1.5}, {"delay": -1.0}, {"rate": 0.0}, {"outages": ((5.0, 1.0),)}):
        with pytest.raises(ValueError):
            LinkSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no scheduled outages"):
        LinkSettings(outages=((1.0, 2.0),)).impairment()
