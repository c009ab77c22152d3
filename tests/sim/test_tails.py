"""Keystroke tails on one lossy path, in the simulator (issue 9's single-path targets).

A keystroke every 50 ms, echoed by the exit; 5 % random loss each way on data and ACKs
alike. About one keystroke in ten loses a copy in one direction; what sets the p99 is what
such a loss costs, and what a second loss (of the resend, or in the other direction) adds.
The exact timer rules behind these figures are in tests/core/test_recovery.py.
"""

from __future__ import annotations

from tests.sim.echo import echo_tail
from tests.sim.network import LinkSpec, PathSpec

SEEDS = range(1, 9)
KEYSTROKES = 200


def one_path(up: float, down: float, loss: float) -> PathSpec:
    return PathSpec(LinkSpec(delay=up, loss=loss), LinkSpec(delay=down, loss=loss))


def test_one_udp_path_with_5_percent_loss_keeps_the_keystroke_p99_within_3_rtt() -> None:
    rtt = 0.05
    tail = echo_tail(one_path(0.025, 0.025, 0.05), SEEDS, KEYSTROKES)
    assert abs(tail.p50 - rtt) < 0.001, tail
    assert tail.p99 <= 3 * rtt, tail
    assert tail.max <= 6 * rtt, tail  # no keystroke waits on a backed-off timer


def test_the_demos_single_path_keeps_its_p99_within_3_5_rtt() -> None:
    """`dupsession demo`'s best single path: lte-udp, 35 ms out, 12 ms back, 5 % loss."""
    rtt = 0.047
    tail = echo_tail(one_path(0.035, 0.012, 0.05), SEEDS, KEYSTROKES)
    assert tail.p99 <= 3.5 * rtt, tail
