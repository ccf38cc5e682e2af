"""Passive outlier detection, Envoy-style: an endpoint that fails requests in a row is ejected for a while.

Theory of operation: the data plane reports each finished request with `record` (what counts as a failure, 5xx
or a connect failure, is its call). `consecutive_failures` failures in a row eject the endpoint for
`base_ejection_s × times_ejected`, capped at `max_ejection_s`: an endpoint that keeps failing stays out longer
each time. The ejection ends by itself (`is_ejected` turns False at `ejected_until`); `release_due` tells the
caller once, so it can re-admit the endpoint with slow start. Every `base_ejection_s` an endpoint then spends in
service takes one off `times_ejected` (Envoy's multiplier decay), computed from `now` when next needed: no timers.

The cap on ejections protects the service from its own detector: when every endpoint fails (the database is
down, say), ejecting them all would turn errors into "no endpoint" for every request. So an ejection that would
take more than `max_ejection_percent` of the service's endpoints out is refused, except that one endpoint may
always be ejected when there are two or more (as Envoy does for small services); the only endpoint of a service
is never ejected. A refused endpoint keeps its failure count, so it is ejected at its next failure once there is
room. Results that arrive while an endpoint is ejected (requests sent before the ejection) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5  # failures in a row that eject an endpoint
    base_ejection_s: float = 30.0  # first ejection; the n-th lasts n times as long
    max_ejection_s: float = 300.0  # cap on one ejection: a repaired endpoint is back within 5 minutes
    max_ejection_percent: float = 50.0  # of a service's endpoints (ejected ones included) out at once

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError(f"outlier policy: consecutive_failures must be >= 1, got {self.consecutive_failures}")
        if self.base_ejection_s <= 0:
            raise ValueError(f"outlier policy: base_ejection_s must be > 0, got {self.base_ejection_s}")
        if self.max_ejection_s < self.base_ejection_s:
            raise ValueError(
                f"outlier policy: max_ejection_s ({self.max_ejection_s}) must be >= base_ejection_s "
                f"({self.base_ejection_s})"
            )
        if not 0.0 <= self.max_ejection_percent <= 100.0:
            raise ValueError(f"outlier policy: max_ejection_percent must be 0..100, got {self.max_ejection_percent}")

    @property
    def max_times(self) -> int:
        """Beyond this many ejections the duration is capped anyway; counting further would only slow the decay."""
        return math.ceil(self.max_ejection_s / self.base_ejection_s)


@dataclass(slots=True)
class OutlierState:
    consecutive_failures: int = 0
    times_ejected: int = 0  # the ejection multiplier; decays while the endpoint is in service
    ejected_until: float | None = None  # set while ejected, cleared by release_due
    healthy_since: float = 0.0  # start of the current in-service interval, for the decay


def record(
    state: OutlierState,
    now: float,
    policy: OutlierPolicy,
    ejected_in_service: int,
    endpoints_in_service: int,
    *,
    ok: bool,
) -> bool:
    """Count one request's outcome; True when this call ejects the endpoint.

    `endpoints_in_service` is every endpoint of the service, ejected ones included; `ejected_in_service` those of
    them ejected now, not counting this one.
    """
    if is_ejected(state, now):
        return False
    if ok:
        state.consecutive_failures = 0
        return False
    state.consecutive_failures += 1
    if state.consecutive_failures < policy.consecutive_failures:
        return False
    if not _room_to_eject(policy, ejected_in_service, endpoints_in_service):
        return False
    decay(state, now, policy)
    state.times_ejected = min(state.times_ejected + 1, policy.max_times)
    state.consecutive_failures = 0
    until = now + min(policy.base_ejection_s * state.times_ejected, policy.max_ejection_s)
    state.ejected_until = until
    state.healthy_since = until  # the in-service interval that decays the multiplier starts when this one ends
    return True


def _room_to_eject(policy: OutlierPolicy, ejected: int, endpoints: int) -> bool:
    if endpoints < 2:
        return False
    if ejected == 0:
        return True
    return (ejected + 1) * 100.0 <= policy.max_ejection_percent * endpoints


def is_ejected(state: OutlierState, now: float) -> bool:
    until = state.ejected_until
    return until is not None and now < until


def release_due(state: OutlierState, now: float) -> bool:
    """True once, when the ejection has run out: the caller re-admits the endpoint (with slow start)."""
    until = state.ejected_until
    if until is None or now < until:
        return False
    state.ejected_until = None
    return True


def decay(state: OutlierState, now: float, policy: OutlierPolicy) -> None:
    """Take one off `times_ejected` for each full `base_ejection_s` spent in service since the last ejection."""
    steps = int((now - state.healthy_since) // policy.base_ejection_s)  # negative while ejected: it is in the future
    if steps > 0:
        state.times_ejected = max(state.times_ejected - steps, 0)
        state.healthy_since += steps * policy.base_ejection_s
