"""A service's health verdict (health/service.py): down when it has endpoints and none takes requests."""

from __future__ import annotations

from portero.health.service import condition
from portero.router.snapshot import EndpointEntry

ACTIVE = EndpointEntry("127.0.0.1:5001", 1, "replica", "portal-1-a")
DRAINING = EndpointEntry("127.0.0.1:5002", 1, "replica", "portal-1-b", draining=True)
WEIGHTLESS = EndpointEntry("127.0.0.1:5003", 0, "registered")


def test_a_service_whose_endpoints_all_drain_is_unroutable_and_says_why() -> None:
    state = condition(1, 1, [DRAINING], managed=True)
    assert state.unroutable
    assert (state.endpoints, state.routable) == (1, 0)
    assert any("no endpoint takes requests" in p for p in state.problems())
    assert condition(0, 0, [WEIGHTLESS, DRAINING], managed=False).unroutable


def test_one_endpoint_that_takes_requests_is_enough() -> None:
    state = condition(2, 2, [ACTIVE, DRAINING], managed=True)
    assert not state.unroutable
    assert state.problems() == []


def test_no_endpoint_at_all_is_a_missing_replica_not_an_outage_by_hand() -> None:
    starting = condition(1, 0, [], managed=True)
    assert not starting.unroutable
    assert starting.problems() == ["0 of 1 replica(s) ready"]
    assert condition(0, 0, [DRAINING], managed=True).problems() == []  # scaled to zero: its last one drains
    assert condition(1, 1, None, managed=True).problems() == []  # the router is off: nothing to say about routes
