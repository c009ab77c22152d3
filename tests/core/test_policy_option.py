"""The SCHEDULE handshake option: policy, k and tiers round-trip, the exit follows what the
client asked, and a malformed value is never answered."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core import negotiate, wire
from dupsession.core.negotiate import Features
from dupsession.core.policy import Policy, Schedule, Tier

schedules = st.builds(
    Schedule,
    st.sampled_from(list(Policy)),
    st.integers(1, 255),
    st.dictionaries(st.integers(0, 255), st.sampled_from([Tier.OVERFLOW, Tier.BACKUP])).map(
        lambda d: tuple(sorted(d.items()))
    ),
)


# No per-example deadline: the bodies take 0-11 ms, but one stall of the shared VM
# (100+ ms seen beside other work) would fail the run as Flaky (review L16).
@settings(deadline=None)
@given(schedules)
def test_schedule_round_trips_and_the_exit_follows_it(schedule: Schedule) -> None:
    assert Schedule.decode(schedule.encode()) == schedule
    wanted = Features(schedule=schedule)
    answer, exit_features = negotiate.answer(negotiate.offer(wanted))
    assert exit_features.schedule == schedule
    assert negotiate.settle(wanted, answer).schedule == schedule


def test_the_default_is_not_sent_and_an_old_exit_leaves_the_client_its_choice() -> None:
    assert wire.OptionType.SCHEDULE not in dict(negotiate.offer(Features()))
    wanted = Features(schedule=Schedule(Policy.STRIPE, tiers=((2, Tier.BACKUP),)))
    assert negotiate.settle(wanted, ()).schedule == wanted.schedule  # no answer: old exit
    assert wanted.schedule.tier_of(2) is Tier.BACKUP
    assert wanted.schedule.tier_of(1) is Tier.PRIMARY


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00",
        b"\x09\x02",
        b"\x02\x02\x01",
        b"\x02\x02\x01\x07",
        b"\x02\x02\x01\x00",
        b"\x02\x02\x01\x01\x01\x02",
    ],
)
def test_malformed_schedule_is_not_answered(value: bytes) -> None:
    answer, features = negotiate.answer(((wire.OptionType.SCHEDULE, value),))
    assert answer == ()
    assert features.schedule == Schedule()


def test_k_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="best-k"):
        Schedule(Policy.BEST_K, 0)
