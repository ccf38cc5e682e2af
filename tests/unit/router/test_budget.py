"""Retry decisions, table-driven: the budget (load) and the policy (HTTP semantics)."""

from __future__ import annotations

import pytest

from portero.router.budget import CHARGED_RETRY, FREE_RETRY, NO_RETRY, STATUS, RetryBudget, RetryPolicy
from portero.router.stats import BAD_RESPONSE, CONNECT_TIMEOUT, REFUSED, RESET, STALLED, TIMEOUT


def test_retries_stay_within_a_fifth_of_the_requests_plus_the_floor():
    budget = RetryBudget(ratio=0.2, min_retries=10)
    for n in range(100):
        budget.request(1000.0 + n * 0.05)  # 100 requests over 5 s
    granted = sum(budget.try_retry(1005.0) for _ in range(100))
    assert granted == 30  # 20 % of 100, plus 10


def test_the_floor_lets_a_quiet_service_fail_over():
    budget = RetryBudget(ratio=0.2, min_retries=3)
    budget.request(0.0)
    assert [budget.try_retry(0.5) for _ in range(4)] == [True, True, True, False]  # 3.2 allowed: 3


def test_the_budget_forgets_what_is_older_than_its_window():
    budget = RetryBudget(ratio=0.0, min_retries=2, window_s=10)
    assert budget.try_retry(100.0)
    assert budget.try_retry(100.5)
    assert not budget.try_retry(105.0)  # both still count
    assert budget.try_retry(111.0)  # the second 100 is out of the window
    for _ in range(50):
        budget.request(111.0)
    assert not RetryBudget(ratio=0.0, min_retries=0).try_retry(0.0)


def test_the_budget_grows_with_the_requests_it_sees():
    budget = RetryBudget(ratio=1.0, min_retries=0)
    for _ in range(5):
        budget.request(7.0)
    assert sum(budget.try_retry(7.5) for _ in range(10)) == 5


R, CT, RS, TO, ST, BAD = REFUSED, CONNECT_TIMEOUT, RESET, TIMEOUT, STALLED, BAD_RESPONSE
NO, FREE, CHARGED = NO_RETRY, FREE_RETRY, CHARGED_RETRY


@pytest.mark.parametrize(
    ("fault", "method", "sent", "reused", "charged", "free", "expected"),
    [
        (R, b"GET", False, False, 0, 0, FREE),  # refused: nothing reached any app
        (R, b"POST", False, False, 0, 0, FREE),  # ... whatever the method
        (CT, b"POST", False, False, 0, 0, FREE),
        (R, b"GET", False, False, 5, 0, FREE),  # free retries do not count against the attempts
        (R, b"GET", False, False, 0, 4, NO),  # ... but have their own bound (4 here: see free_limit below)
        (RS, b"GET", True, True, 0, 0, FREE),  # a reused connection closed before answering an idempotent request
        (RS, b"POST", True, True, 0, 0, NO),  # the app may have acted on a POST
        (RS, b"GET", True, False, 0, 0, CHARGED),  # a fresh connection lost: it reached an app that then died
        (RS, b"GET", True, False, 2, 0, NO),  # three tries in all
        (RS, b"GET", True, True, 0, 4, CHARGED),  # out of free retries: charged
        (RS, b"PUT", True, False, 1, 0, CHARGED),
        (TO, b"GET", True, False, 0, 0, NO),  # timeouts: the app may still be working on it
        (ST, b"GET", True, False, 0, 0, NO),
        (BAD, b"GET", True, False, 0, 0, NO),
        (STATUS, b"GET", True, False, 0, 0, CHARGED),  # an answer in `on_status`
        (STATUS, b"POST", True, False, 0, 0, NO),
        (RS, b"get", True, True, 0, 0, NO),  # methods are case-sensitive (RFC 9110 §9.1)
    ],
)
def test_the_policy_retries_only_what_is_safe(fault, method, sent, reused, charged, free, expected):
    policy = RetryPolicy(on_status=frozenset({503}))
    kind = policy.decide(
        fault, method, sent=sent, reused=reused, charged_so_far=charged, free_so_far=free, free_limit=4
    )
    assert kind == expected


def test_timeouts_are_retried_only_when_asked():
    decide = RetryPolicy(on_timeout=True).decide
    assert decide(TIMEOUT, b"GET", sent=True, reused=False, charged_so_far=0, free_so_far=0, free_limit=4) == CHARGED
    assert decide(TIMEOUT, b"POST", sent=True, reused=False, charged_so_far=0, free_so_far=0, free_limit=4) == NO


def test_one_attempt_means_no_charged_retry_and_methods_are_configurable():
    args = {"sent": True, "reused": False, "charged_so_far": 0, "free_so_far": 0, "free_limit": 4}
    assert RetryPolicy(attempts=1).decide(RESET, b"GET", **args) == NO
    assert RetryPolicy(idempotent_methods=frozenset({b"POST"})).decide(RESET, b"POST", **args) == CHARGED
    assert RetryPolicy(idempotent_methods=frozenset({b"POST"})).decide(RESET, b"GET", **args) == NO


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RetryPolicy(attempts=0), "attempts"),
        (lambda: RetryBudget(ratio=-0.1), "ratio"),
        (lambda: RetryBudget(min_retries=-1), "min_retries"),
        (lambda: RetryBudget(window_s=0), "window_s"),
    ],
)
def test_nonsensical_settings_are_refused_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()
