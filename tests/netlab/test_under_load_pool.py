"""under_load.py --repeat: each method pooled over its repetitions.

Why: one run's busy p99 is the 2nd highest of ~130 echoes, so one slow echo decides a run's
verdict; the pool must be every echo of every repetition (not a mean of p99s, which would hide
a bad run), the median rate, and a download complete only if every one was.
"""

from __future__ import annotations

from contrib.bench.lab_latency import pct
from contrib.bench.under_load import METHODS, Method, Result, pooled, report_pooled

DUP, PLAIN = METHODS[0], METHODS[2]


def run(method: Method, idle: list[float], busy: list[float], mbit: float) -> Result:
    return Result(method, idle=idle, busy=busy, mbit=mbit, seconds=1.0, complete=True)


def test_the_pool_is_every_echo_and_the_median_rate() -> None:
    a = run(DUP, [50.0] * 100, [60.0] * 99 + [200.0], 60.0)
    b = run(DUP, [52.0] * 100, [61.0] * 100, 70.0)
    c = run(DUP, [51.0] * 100, [62.0] * 100, 65.0)
    c.complete = False
    pool = pooled([a, b, c])
    assert sorted(pool.busy) == sorted(a.busy + b.busy + c.busy)
    assert pool.p99(True) == pct(a.busy + b.busy + c.busy, 99) < 200.0
    assert pool.mbit == 65.0
    assert not pool.complete


def test_pooled_verdicts_judge_the_pool_and_show_each_repetition() -> None:
    reps = [
        [run(DUP, [50.0] * 200, [60.0] * 128 + [95.0] * 2, 60.0), run(PLAIN, [50.0], [55.0], 40.0)],
        [run(DUP, [50.0] * 200, [60.0] * 130, 62.0), run(PLAIN, [50.0], [55.0], 44.0)],
    ]
    lines = report_pooled("0 % loss, pooled", reps)
    dup = next(line for line in lines if line.startswith(DUP.name))
    assert "200/260" not in dup and "400/260" in dup  # samples of both repetitions
    assert "+45, 60.0; +10, 62.0" in dup  # the first repetition alone would miss
    assert (
        f"  PASS {DUP.name}, 0 % loss, pooled: typing p99 during the download 60 ms"
        in "\n".join(lines)
    )
    assert f"  PASS {DUP.name}, 0 % loss, pooled: download 61.0 Mbit/s" in "\n".join(lines)


def test_a_pool_with_a_slow_third_misses() -> None:
    slow = [
        run(DUP, [50.0] * 200, [60.0] * 90 + [90.0] * 40, 60.0),
        run(PLAIN, [50.0], [55.0], 40.0),
    ]
    good = [run(DUP, [50.0] * 200, [60.0] * 130, 60.0), run(PLAIN, [50.0], [55.0], 40.0)]
    lines = report_pooled("5 % loss, pooled", [slow, good, good])
    assert any(line.startswith(f"  MISS {DUP.name}, 5 % loss, pooled: typing") for line in lines)


def test_a_download_that_never_moved_is_said_and_leaves_the_median_alone() -> None:
    """A repetition whose download delivered nothing has no rate (NaN) and no busy echoes:
    `statistics.median` with a NaN answers by where it stands (review O1)."""
    stalled = Result(DUP, idle=[50.0] * 100, busy=[], mbit=float("nan"), seconds=float("nan"))
    for order in (
        [stalled, run(DUP, [50.0], [60.0], 60.0), run(DUP, [50.0], [60.0], 70.0)],
        [run(DUP, [50.0], [60.0], 60.0), run(DUP, [50.0], [60.0], 70.0), stalled],
    ):
        pool = pooled(order)
        assert pool.mbit == 65.0
        assert not pool.complete
        assert pool.notes == ["only 2 of 3 downloads moved"]
