"""The circuit breaker as transcripts over a fake clock: outcomes in, allow/state out."""

from __future__ import annotations

import pytest

from portero.router.breaker import (
    TRANSITIONS,
    BreakerEvent,
    BreakerPolicy,
    BreakerState,
    BreakerTransitionError,
    CircuitBreaker,
    transition,
)

T0 = 1000.0
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def feed(breaker: CircuitBreaker, outcomes: str, now: float) -> None:
    """'+' a success, '-' a failure, each allowed first as the data plane would."""
    for outcome in outcomes:
        breaker.allow(now)
        breaker.record(now, ok=outcome == "+")


def tripped(now: float = T0) -> CircuitBreaker:
    breaker = CircuitBreaker()
    feed(breaker, "-" * 20, now)
    assert breaker.state is OPEN
    return breaker


def test_it_trips_once_failures_reach_the_ratio_over_enough_requests():
    breaker = CircuitBreaker()
    feed(breaker, "+-" * 9 + "+", T0)  # 19 requests: too few to judge
    assert breaker.state is CLOSED
    feed(breaker, "-", T0 + 0.5)  # 20 requests, 10 failed: 0.5
    assert breaker.state is OPEN


def test_it_stays_closed_below_the_ratio_and_under_min_requests():
    breaker = CircuitBreaker()
    feed(breaker, "++-" * 30, T0)  # a third fail
    feed(breaker, "+", T0)
    assert breaker.state is CLOSED
    few = CircuitBreaker()
    feed(few, "-" * 19, T0)
    assert few.state is CLOSED
    assert few.window(T0) == (19, 19)


def test_it_stays_open_for_open_s_then_admits_probes():
    breaker = tripped()
    assert not breaker.allow(T0 + 4.99)
    assert breaker.state is OPEN
    assert breaker.reopens_at == T0 + 5.0
    assert breaker.allow(T0 + 5.0)
    assert breaker.state is HALF_OPEN
    assert breaker.reopens_at is None


def test_half_open_admits_exactly_the_probes_and_release_returns_a_slot():
    breaker = tripped()
    assert [breaker.allow(T0 + 6.0) for _ in range(5)] == [True, True, True, False, False]
    breaker.release()  # a probe's client went away
    assert [breaker.allow(T0 + 6.0) for _ in range(2)] == [True, False]


def test_probe_successes_close_it_with_a_fresh_window():
    breaker = tripped()
    for _ in range(3):
        assert breaker.allow(T0 + 6.0)
    breaker.record(T0 + 6.1, ok=True)
    breaker.record(T0 + 6.1, ok=True)
    assert breaker.state is HALF_OPEN
    assert breaker.allow(T0 + 6.1)  # a slot came back with each success
    breaker.record(T0 + 6.2, ok=True)
    assert breaker.state is CLOSED
    assert breaker.window(T0 + 6.2) == (0, 0)
    feed(breaker, "-" * 19, T0 + 6.3)  # the old failures are not held against it
    assert breaker.state is CLOSED


def test_a_failed_probe_opens_it_again_for_open_s():
    breaker = tripped()
    assert breaker.allow(T0 + 6.0)
    assert breaker.allow(T0 + 6.0)
    breaker.record(T0 + 6.0, ok=True)
    breaker.record(T0 + 7.0, ok=False)
    assert breaker.state is OPEN
    assert not breaker.allow(T0 + 11.9)
    assert breaker.allow(T0 + 12.0)


def test_each_half_open_round_starts_afresh():
    breaker = tripped()
    assert [breaker.allow(T0 + 6.0) for _ in range(3)] == [True, True, True]
    breaker.record(T0 + 6.0, ok=True)
    breaker.record(T0 + 6.0, ok=False)  # open again, one probe still out
    assert [breaker.allow(T0 + 11.0) for _ in range(4)] == [True, True, True, False]
    breaker.record(T0 + 11.0, ok=True)
    breaker.record(T0 + 11.0, ok=True)
    assert breaker.state is HALF_OPEN  # the success of the round before does not count
    breaker.record(T0 + 11.0, ok=True)
    assert breaker.state is CLOSED


def test_outcomes_that_are_not_probes_are_ignored():
    breaker = tripped()
    breaker.record(T0 + 1.0, ok=True)  # requests admitted before the trip, ending while open
    breaker.record(T0 + 4.0, ok=False)
    assert breaker.reopens_at == T0 + 5.0
    assert breaker.allow(T0 + 5.0)
    breaker.record(T0 + 5.1, ok=True)  # the probe
    breaker.record(T0 + 5.2, ok=False)  # no probe in flight: stale
    breaker.release()
    assert breaker.state is HALF_OPEN


def test_the_window_forgets_outcomes_older_than_window_s():
    breaker = CircuitBreaker()
    feed(breaker, "-" * 19, T0)
    assert breaker.window(T0 + 9.9) == (19, 19)
    assert breaker.window(T0 + 10.0) == (0, 0)
    feed(breaker, "-", T0 + 10.0)
    assert breaker.state is CLOSED


def test_the_window_slides_bucket_by_bucket():
    breaker = CircuitBreaker()
    for second in range(10):
        feed(breaker, "-", T0 + second)
    assert breaker.window(T0 + 9.5) == (10, 10)
    assert breaker.window(T0 + 12.0) == (7, 7)  # those of T0, T0+1 and T0+2 have left
    assert breaker.window(T0 + 100.0) == (0, 0)


def test_a_failure_just_inside_the_window_still_counts():
    breaker = CircuitBreaker()
    feed(breaker, "-" * 19, T0)
    feed(breaker, "-", T0 + 9.9)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (CLOSED, BreakerEvent.PROBES_PASSED),
        (CLOSED, BreakerEvent.COOLED_DOWN),
        (OPEN, BreakerEvent.TRIPPED),
        (HALF_OPEN, BreakerEvent.COOLED_DOWN),
    ],
)
def test_a_transition_not_in_the_table_raises_naming_event_and_state(state, event):
    with pytest.raises(BreakerTransitionError, match=f"'{event.value}' .* '{state.value}'"):
        transition(state, event)


def test_every_state_can_be_left_and_reached():
    assert {source for source, _ in TRANSITIONS} == set(BreakerState)
    assert set(TRANSITIONS.values()) == set(BreakerState)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"failure_ratio": 0.0}, "failure_ratio"),
        ({"min_requests": 0}, "min_requests"),
        ({"window_s": 0.0}, "window_s"),
        ({"open_s": -1.0}, "open_s"),
    ],
)
def test_a_nonsensical_policy_is_refused_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        BreakerPolicy(**changes)


def test_the_policy_is_honoured():
    short = CircuitBreaker(BreakerPolicy(window_s=1.0))
    feed(short, "-" * 19, T0)
    assert short.window(T0 + 0.95) == (19, 19)
    assert short.window(T0 + 1.0) == (0, 0)
    breaker = CircuitBreaker(BreakerPolicy(min_requests=2, half_open_probes=1, open_s=1.0))
    feed(breaker, "--", T0)
    assert breaker.state is OPEN
    assert [breaker.allow(T0 + 1.0) for _ in range(2)] == [True, False]
    breaker.record(T0 + 1.0, ok=True)
    assert breaker.state is CLOSED
