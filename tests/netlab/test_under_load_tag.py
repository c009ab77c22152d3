"""under_load.py's headlines say when a run is not a plain one.

Why: `--sched-trace` (perf recording the whole machine) and `--py-spy` run beside dupsession's
download on the same CPUs, yet their typing p99 and PASS/MISS lines read like a plain run's
(review J5); `--typing-nice` already said DIAGNOSTIC.
"""

from __future__ import annotations

from argparse import Namespace

import pytest

from contrib.bench.under_load import run_tag


def args(**changed: object) -> Namespace:
    """under_load.py's arguments for a plain run, with `changed`."""
    plain: dict[str, object] = {
        "scale": 1.0,
        "paths": ["udp", "tcp"],
        "typing_nice": None,
        "typing_exit": "shared",
    }
    return Namespace(**(plain | {"sched_trace": None, "py_spy": None} | changed))


def test_a_plain_run_is_named_by_its_loss_alone() -> None:
    assert run_tag(5.0, args()) == "5 % loss"


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        ({"sched_trace": 7.0}, "DIAGNOSTIC (perf recording during dupsession's download)"),
        ({"py_spy": "/tmp/spy"}, "DIAGNOSTIC (py-spy recording during dupsession's download)"),
        ({"typing_nice": -10}, "DIAGNOSTIC (the typing session's dupsession and ssh at nice -10)"),
        ({"scale": 0.5}, "SCALED VARIANT (every rate x0.5)"),
        ({"paths": ["udp"]}, "VARIANT (dupsession paths: udp on each uplink)"),
        (
            {"typing_exit": "own"},
            "VARIANT (dupsession's typing session on its own relayd at the exit)",
        ),
    ],
)
def test_a_diagnosis_or_a_variant_is_in_the_runs_name(
    changed: dict[str, object], said: str
) -> None:
    assert run_tag(5.0, args(**changed)) == f"5 % loss, {said}"
