"""under_load.py's headlines say when a run is not a plain one.

Why: `--sched-trace` (perf recording the whole machine) and `--py-spy` run beside dupsession's
download on the same CPUs, yet their typing p99 and PASS/MISS lines read like a plain run's
(review J5); `--typing-nice` already said DIAGNOSTIC.
"""

from __future__ import annotations

from argparse import Namespace

import pytest

from contrib.bench.under_load import EXIT_PORT, TYPING_EXIT_PORT, run_tag, to_typing_exit


def args(**changed: object) -> Namespace:
    """under_load.py's arguments for a plain run, with `changed`."""
    plain: dict[str, object] = {
        "scale": 1.0,
        "paths": ["udp", "tcp"],
        "typing_nice": None,
        "typing_exit": "shared",
        "exit_processes": 0,
        "pin_exit": False,
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
        (
            {"exit_processes": 4},
            "VARIANT (relayd serve --session-processes 4 at the exit: a worker process per "
            "session)",
        ),
        (
            {"pin_exit": True},
            "DIAGNOSTIC (the exit's relayd and sshd on CPU 1, every other lab process on CPU 0)",
        ),
    ],
)
def test_a_diagnosis_or_a_variant_is_in_the_runs_name(
    changed: dict[str, object], said: str
) -> None:
    assert run_tag(5.0, args(**changed)) == f"5 % loss, {said}"


def test_own_typing_exit_moves_every_path_or_says_so() -> None:
    """`--typing-exit own` rewrites every exit path's port, or stops (review L7)."""
    url = f"udp://198.18.0.1:{EXIT_PORT}?bind=198.18.1.1&via=server"
    config = f'paths = ["{url}", "{url.replace("udp", "tcp")}"]\n'
    moved = to_typing_exit(config, 2)
    assert moved.count(f":{TYPING_EXIT_PORT}?") == 2
    assert f":{EXIT_PORT}?" not in moved
    with pytest.raises(ValueError, match="1 of 2 paths"):
        to_typing_exit(config.replace(f"{EXIT_PORT}?bind", f"{EXIT_PORT}/?bind", 1), 2)
