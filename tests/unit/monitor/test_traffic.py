"""Rates and interval percentiles from cumulative router counters; totals never go down."""

from __future__ import annotations

from dataclasses import replace

import pytest

from portero.monitor.traffic import Reading, TrafficBook
from portero.router.stats import BOUNDS_S, FAULTS

T0 = 1_700_000_000.0
BUCKETS = len(BOUNDS_S) + 1


def reading(address: str | None, identity: int, ok: int, errors: int = 0, fast: int = 0, slow: int = 0) -> Reading:
    buckets = [0] * BUCKETS
    buckets[BOUNDS_S.index(0.005)] = fast
    buckets[BOUNDS_S.index(0.5)] = slow
    return Reading(
        "portal", address, None, "active", identity, ok + errors, (0, ok, 0, 0, errors), 1, tuple(buckets), 0
    )


def test_rates_and_error_ratio_come_from_differences():
    book = TrafficBook()
    services, _ = book.update([reading(None, 0, ok=100, fast=100), reading("a:1", 1, ok=100, fast=100)], T0)
    assert services["portal"].requests_per_second is None  # nothing to compare with yet
    assert services["portal"].requests_total == 100
    both = [reading(None, 0, ok=150, errors=50, fast=150, slow=50), reading("a:1", 1, ok=150, errors=50, fast=150)]
    services, endpoints = book.update(both, T0 + 2)
    traffic = services["portal"]
    assert traffic.requests_per_second == pytest.approx(50.0)
    assert traffic.error_ratio == pytest.approx(0.5)
    assert traffic.latency_p95_s is not None
    assert 0.25 < traffic.latency_p95_s <= 0.5  # this interval's half slow answers, not the lifetime's
    assert traffic.responses_total == {"1xx": 0, "2xx": 150, "3xx": 0, "4xx": 0, "5xx": 50}
    assert endpoints[("portal", "a:1")].requests_total == 200


def test_a_service_counts_its_clients_answers_once_however_many_endpoints_tried():
    book = TrafficBook()
    tries = [reading(None, 0, ok=10), reading("a:1", 1, ok=0, errors=10), reading("b:1", 2, ok=10)]
    services, endpoints = book.update(tries, T0)
    assert services["portal"].requests_total == 10  # ten requests, each tried on a (failed) then b
    assert endpoints[("portal", "a:1")].requests_total == 10
    assert services["portal"].in_flight == 2  # the endpoints' requests in flight


def test_an_endpoint_that_leaves_and_comes_back_as_a_new_object_starts_from_its_own_counts():
    book = TrafficBook()
    book.update([reading(None, 0, ok=30), reading("a:1", 1, ok=10), reading("b:1", 2, ok=20)], T0)
    services, endpoints = book.update([reading(None, 0, ok=35), reading("b:1", 2, ok=25)], T0 + 1)
    assert services["portal"].requests_total == 35
    assert ("portal", "a:1") not in endpoints
    services, endpoints = book.update([reading(None, 0, ok=39), reading("a:1", 3, ok=4)], T0 + 2)
    assert services["portal"].requests_total == 39
    assert services["portal"].requests_per_second == pytest.approx(4.0)
    assert endpoints[("portal", "a:1")].requests_total == 4


def test_an_endpoints_faults_retries_and_ejections_add_up_across_passes_and_never_go_down():
    book = TrafficBook()
    first = replace(reading("a:1", 1, ok=10), faults=(3, 0, 1, 0, 0, 0), retries=4, ejections=1)
    _, endpoints = book.update([reading(None, 0, ok=10), first], T0)
    assert endpoints[("portal", "a:1")].faults_total == dict(zip(FAULTS, (3, 0, 1, 0, 0, 0), strict=True))
    later = replace(reading("a:1", 1, ok=12), faults=(5, 0, 1, 0, 2, 0), retries=6, ejections=2)
    _, endpoints = book.update([reading(None, 0, ok=12), later], T0 + 1)
    traffic = endpoints[("portal", "a:1")]
    assert traffic.faults_total["refused"] == 5
    assert traffic.faults_total["stalled"] == 2
    assert (traffic.retries_total, traffic.ejections_total) == (6, 2)
    # The same endpoint as a new stats object (it left and came back): its counts add to the totals.
    again = replace(reading("a:1", 2, ok=1), faults=(1, 0, 0, 0, 0, 0), retries=1, ejections=0)
    _, endpoints = book.update([reading(None, 0, ok=13), again], T0 + 2)
    assert endpoints[("portal", "a:1")].faults_total["refused"] == 6
    assert endpoints[("portal", "a:1")].retries_total == 7
