"""Retry decisions, table-driven: the budget (load) and the policy (HTTP semantics)."""

from __future__ import annotations

import pytest

from portero.router.budget import RetryBudget, RetryPolicy


@pytest.mark.parametrize(
    ("active_requests", "active_retries", "allowed"),
    [
        (0, 0, True),  # the floor: a quiet service can still fail over
        (0, 2, True),
        (0, 3, False),
        (10, 2, True),
        (10, 3, False),  # 20 % of 10 is 2: the floor of 3 rules
        (100, 19, True),
        (100, 20, False),  # 20 % of 100
        (1000, 199, True),
        (1000, 200, False),
    ],
)
def test_the_budget_allows_a_fifth_of_active_requests_and_at_least_three(active_requests, active_retries, allowed):
    assert RetryBudget().can_retry(active_requests, active_retries) is allowed


def test_the_budget_is_configurable():
    assert not RetryBudget(ratio=0.0, min_retries=0).can_retry(100, 0)
    assert RetryBudget(ratio=1.0, min_retries=0).can_retry(100, 99)


@pytest.mark.parametrize(
    ("method", "sent_anything", "got_response_byte", "attempt", "allowed"),
    [
        (b"GET", False, False, 1, True),  # connect failure
        (b"GET", True, False, 1, True),  # reset before the response: idempotent, so safe
        (b"GET", True, True, 1, False),  # part of a response came: never
        (b"GET", False, False, 2, True),
        (b"GET", False, False, 3, False),  # three tries in all
        (b"POST", False, False, 1, True),  # nothing reached the endpoint
        (b"POST", True, False, 1, False),  # it may have acted on it
        (b"POST", False, True, 1, False),
        (b"PATCH", True, False, 1, False),
        (b"PUT", True, False, 2, True),
        (b"DELETE", True, False, 1, True),
        (b"HEAD", True, False, 1, True),
        (b"OPTIONS", True, False, 1, True),
        (b"TRACE", True, False, 1, True),
        (b"get", True, False, 1, False),  # methods are case-sensitive (RFC 9110 §9.1)
    ],
)
def test_the_policy_retries_only_what_is_safe(method, sent_anything, got_response_byte, attempt, allowed):
    assert RetryPolicy().may_retry(method, sent_anything, got_response_byte, attempt) is allowed


def test_one_attempt_means_no_retry_and_methods_are_configurable():
    assert not RetryPolicy(attempts=1).may_retry(b"GET", False, False, 1)
    assert RetryPolicy(idempotent_methods=frozenset({b"POST"})).may_retry(b"POST", True, False, 1)
    assert not RetryPolicy(idempotent_methods=frozenset({b"POST"})).may_retry(b"GET", True, False, 1)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RetryPolicy(attempts=0), "attempts"),
        (lambda: RetryBudget(ratio=-0.1), "ratio"),
        (lambda: RetryBudget(min_retries=-1), "min_retries"),
    ],
)
def test_nonsensical_settings_are_refused_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()
