"""Outlier detection as traces of request outcomes over a fake clock."""

from __future__ import annotations

import pytest

from portero.router.outlier import OutlierPolicy, OutlierState, decay, is_ejected, record, release_due

POLICY = OutlierPolicy()
T0 = 1000.0


def fail(state: OutlierState, times: int, now: float, ejected: int = 0, endpoints: int = 4) -> list[bool]:
    return [record(state, now, POLICY, ejected, endpoints, ok=False) for _ in range(times)]


def eject_and_release(state: OutlierState, now: float) -> float:
    """Eject at `now`; return how long the ejection lasts (and release it then)."""
    assert fail(state, 5, now)[-1]
    assert state.ejected_until is not None
    duration = state.ejected_until - now
    assert release_due(state, now + duration)
    return duration


def test_five_failures_in_a_row_eject_for_thirty_seconds():
    state = OutlierState()
    assert fail(state, 5, T0) == [False, False, False, False, True]
    assert is_ejected(state, T0 + 29.9)
    assert not is_ejected(state, T0 + 30.0)


def test_a_success_resets_the_count():
    state = OutlierState()
    fail(state, 4, T0)
    assert not record(state, T0, POLICY, 0, 4, ok=True)
    assert fail(state, 5, T0) == [False, False, False, False, True]


def test_each_ejection_lasts_longer_up_to_the_cap():
    state = OutlierState()
    now, durations = T0, []
    for _ in range(12):
        durations.append(eject_and_release(state, now))
        now += durations[-1] + 1.0  # back in service for a second only: no decay
    assert durations == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_release_is_reported_once_when_the_ejection_runs_out():
    state = OutlierState()
    fail(state, 5, T0)
    assert not release_due(state, T0 + 29.0)
    assert release_due(state, T0 + 31.0)
    assert not release_due(state, T0 + 32.0)
    assert not is_ejected(state, T0 + 32.0)


def test_outcomes_while_ejected_are_ignored():
    state = OutlierState()
    fail(state, 5, T0)
    assert fail(state, 10, T0 + 1.0) == [False] * 10  # requests sent before the ejection, still ending
    release_due(state, T0 + 30.0)
    assert fail(state, 5, T0 + 31.0) == [False, False, False, False, True]  # a full count again


def test_the_multiplier_decays_one_step_per_base_ejection_in_service():
    for in_service, expected in [(1.0, 90.0), (30.0, 60.0), (60.0, 30.0), (600.0, 30.0)]:
        state = OutlierState()
        released_at = T0 + eject_and_release(state, T0)
        released_at += eject_and_release(state, released_at)  # times_ejected is 2
        assert eject_and_release(state, released_at + in_service) == expected, in_service


def test_decay_waits_for_the_ejection_to_end_and_keeps_partial_progress():
    state = OutlierState()
    fail(state, 5, T0)
    release_due(state, T0 + 30.0)
    fail(state, 5, T0 + 30.0)  # times_ejected 2, out until T0 + 90
    decay(state, T0 + 89.0, POLICY)
    assert state.times_ejected == 2
    decay(state, T0 + 90.0 + 45.0, POLICY)
    assert state.times_ejected == 1
    decay(state, T0 + 90.0 + 60.0, POLICY)  # the 15 s left over from the last call count
    assert state.times_ejected == 0


def test_the_multiplier_stops_at_the_cap_so_it_decays_from_there():
    state = OutlierState()
    now = T0
    for _ in range(15):
        now += eject_and_release(state, now)
    assert eject_and_release(state, now + 300.0) == 30.0  # ten steps of decay undo ten capped ejections


def test_a_duration_between_multiples_is_capped_exactly():
    policy = OutlierPolicy(base_ejection_s=30.0, max_ejection_s=100.0)
    state, now, durations = OutlierState(), T0, []
    for _ in range(5):
        assert [record(state, now, policy, 0, 4, ok=False) for _ in range(5)][-1]
        assert state.ejected_until is not None
        durations.append(state.ejected_until - now)
        now = state.ejected_until
        release_due(state, now)
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]


@pytest.mark.parametrize(
    ("ejected", "endpoints", "allowed"),
    [
        (0, 1, False),  # the only endpoint: ejecting it helps nobody
        (0, 2, True),
        (1, 2, False),  # half are out already
        (1, 4, True),  # 2 of 4
        (2, 4, False),
        (1, 3, False),  # 2 of 3 is more than half
        (2, 5, False),
        (4, 10, True),
    ],
)
def test_never_more_than_half_of_a_service_is_ejected(ejected, endpoints, allowed):
    state = OutlierState()
    assert fail(state, 5, T0, ejected, endpoints)[-1] is allowed


def test_one_endpoint_may_always_be_ejected_whatever_the_percentage():
    policy = OutlierPolicy(max_ejection_percent=10.0)
    state = OutlierState()
    results = [record(state, T0, policy, 0, 3, ok=False) for _ in range(5)]
    assert results[-1]
    other = OutlierState()
    assert not [record(other, T0, policy, 1, 3, ok=False) for _ in range(5)][-1]


def test_a_refused_endpoint_is_ejected_at_its_next_failure_once_there_is_room():
    state = OutlierState()
    assert fail(state, 7, T0, ejected=1, endpoints=2) == [False] * 7
    assert fail(state, 1, T0 + 1.0, ejected=0, endpoints=2) == [True]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"base_ejection_s": 0.0}, "base_ejection_s"),
        ({"max_ejection_s": 10.0}, "max_ejection_s"),
        ({"max_ejection_percent": 150.0}, "max_ejection_percent"),
    ],
)
def test_a_nonsensical_policy_is_refused_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        OutlierPolicy(**changes)
