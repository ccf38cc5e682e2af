"""A circuit breaker per endpoint: stop sending to an endpoint that fails most requests, then test it gently.

Theory of operation:

    CLOSED --tripped--> OPEN --cooled_down--> HALF_OPEN --probes_passed--> CLOSED
                          ^                       |
                          +-----probe_failed------+

CLOSED: every request is allowed, and its outcome goes into a rolling window of `window_s`. When the window holds
at least `min_requests` outcomes and failures make up `failure_ratio` of them or more, the breaker trips. The
window is `BUCKETS` buckets of `window_s / BUCKETS` each, with running sums, so memory and time per request are
O(1); an outcome leaves it between 0.9 and 1.0 × `window_s` after it came. Rejected: a deque of timestamps, which
grows with the request rate.

OPEN: nothing is allowed for `open_s`. The first `allow` after that moves to HALF_OPEN (lazily: time is only
looked at when asked, there is no timer).

HALF_OPEN: at most `half_open_probes` requests are in flight at once (the probes). One failure trips the breaker
again and restarts `open_s`; `half_open_probes` successes close it with an empty window.

Contract with the caller: every `allow` that returned True is followed by exactly one `record` (the request ended
with a verdict) or `release` (it ended without one, e.g. the client went away), so probe slots are never lost.
Outcomes that arrive while OPEN belong to requests admitted before the trip and are ignored. One admitted while
CLOSED that ends during HALF_OPEN is taken for a probe's when a probe is in flight; keeping the per-try timeout
below `open_s` makes that rare.

Every state change goes through `transition` and the `TRANSITIONS` table; a change not in it raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

BUCKETS: Final = 10  # of the rolling window


class BreakerState(StrEnum):
    CLOSED = "closed"  # requests flow, outcomes are counted
    OPEN = "open"  # no requests until open_s has passed
    HALF_OPEN = "half_open"  # a few probe requests decide


class BreakerEvent(StrEnum):
    TRIPPED = "tripped"  # the failure ratio over the window crossed the threshold
    COOLED_DOWN = "cooled_down"  # open_s has passed
    PROBE_FAILED = "probe_failed"
    PROBES_PASSED = "probes_passed"  # half_open_probes successes


S, E = BreakerState, BreakerEvent
TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    (S.CLOSED, E.TRIPPED): S.OPEN,
    (S.OPEN, E.COOLED_DOWN): S.HALF_OPEN,
    (S.HALF_OPEN, E.PROBE_FAILED): S.OPEN,
    (S.HALF_OPEN, E.PROBES_PASSED): S.CLOSED,
}
del S, E
# The states as Final names: mypyc reads these from a static, where `BreakerState.CLOSED` is an attribute lookup
# on the class at every request.
_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN


class BreakerTransitionError(ValueError):  # not RuntimeError: mypyc cannot compile a subclass of it
    def __init__(self, state: BreakerState, event: BreakerEvent) -> None:
        super().__init__(f"circuit breaker: event {event.value!r} is not allowed in state {state.value!r}")


def transition(state: BreakerState, event: BreakerEvent) -> BreakerState:
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise BreakerTransitionError(state, event)
    return target


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_ratio: float = 0.5  # share of failures in the window that trips the breaker
    min_requests: int = 20  # fewer outcomes in the window say too little: never trip on them
    window_s: float = 10.0  # how far back the failure ratio looks
    open_s: float = 5.0  # how long an open breaker refuses everything before probing
    half_open_probes: int = 3  # probes in flight at once, and successes needed to close

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError(f"breaker policy: failure_ratio must be in (0, 1], got {self.failure_ratio}")
        if self.min_requests < 1 or self.half_open_probes < 1:
            raise ValueError(
                f"breaker policy: min_requests and half_open_probes must be >= 1, "
                f"got {self.min_requests} and {self.half_open_probes}"
            )
        if self.window_s <= 0:
            raise ValueError(f"breaker policy: window_s must be > 0, got {self.window_s}")
        if self.open_s < 0:
            raise ValueError(f"breaker policy: open_s must be >= 0, got {self.open_s}")


class CircuitBreaker:
    __slots__ = (
        "_bucket_failures",
        "_bucket_requests",
        "_failures",
        "_head",
        "_opened_at",
        "_passed",
        "_per_s",
        "_probes",
        "_requests",
        "_state",
        "policy",
    )

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probes = 0  # half-open: probes in flight
        self._passed = 0  # half-open: probes that succeeded
        self._per_s = BUCKETS / self.policy.window_s  # buckets per second: a multiplication per request
        self._bucket_requests = [0] * BUCKETS
        self._bucket_failures = [0] * BUCKETS
        self._requests = 0  # running sums over the buckets
        self._failures = 0
        self._head = -(1 << 62)  # number of the newest bucket, int(now × per_s); far past, so the first call clears

    @property
    def state(self) -> BreakerState:
        """As of the last call: an OPEN breaker whose open_s has run out turns HALF_OPEN at the next `allow`."""
        return self._state

    @property
    def reopens_at(self) -> float | None:
        """When an open breaker will admit probes (for Retry-After); None unless OPEN."""
        return self._opened_at + self.policy.open_s if self._state is _OPEN else None

    def allow(self, now: float) -> bool:
        state = self._state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            if now < self._opened_at + self.policy.open_s:
                return False
            self._fire(BreakerEvent.COOLED_DOWN)
            self._probes = self._passed = 0
        if self._probes >= self.policy.half_open_probes:
            return False
        self._probes += 1
        return True

    def record(self, now: float, *, ok: bool) -> None:
        state = self._state
        if state is _CLOSED:
            self._count(now, ok=ok)
        elif state is _HALF_OPEN and self._probes:  # no probe in flight: a stale outcome, ignore it
            self._probes -= 1
            if not ok:
                self._trip(BreakerEvent.PROBE_FAILED, now)
                return
            self._passed += 1
            if self._passed >= self.policy.half_open_probes:
                self._fire(BreakerEvent.PROBES_PASSED)  # with the window emptied at the trip: a fresh start

    def release(self) -> None:
        """An allowed request ended without a verdict: give its probe slot back."""
        if self._state is _HALF_OPEN and self._probes:
            self._probes -= 1

    def window(self, now: float) -> tuple[int, int]:
        """(requests, failures) in the rolling window as of `now`; zeros unless CLOSED."""
        self._advance(int(now * self._per_s))
        return self._requests, self._failures

    def _fire(self, event: BreakerEvent) -> None:
        self._state = transition(self._state, event)

    def _trip(self, event: BreakerEvent, now: float) -> None:
        self._fire(event)
        self._opened_at = now
        self._clear_window()

    def _count(self, now: float, *, ok: bool) -> None:
        bucket = int(now * self._per_s)
        if bucket > self._head:
            self._advance(bucket)
        slot = self._head % BUCKETS
        self._bucket_requests[slot] += 1
        self._requests += 1
        if ok:
            return
        self._bucket_failures[slot] += 1
        self._failures += 1
        policy = self.policy
        if self._requests >= policy.min_requests and self._failures >= policy.failure_ratio * self._requests:
            self._trip(BreakerEvent.TRIPPED, now)

    def _advance(self, bucket: int) -> None:
        """Make `bucket` the newest, emptying the buckets that fell out of the window on the way."""
        head = self._head
        if bucket <= head:  # same bucket (or a clock that went back: count into the newest)
            return
        if bucket - head >= BUCKETS:
            self._clear_window()
        else:
            requests, failures = self._bucket_requests, self._bucket_failures
            for passed in range(head + 1, bucket + 1):
                slot = passed % BUCKETS
                self._requests -= requests[slot]
                self._failures -= failures[slot]
                requests[slot] = failures[slot] = 0
        self._head = bucket

    def _clear_window(self) -> None:
        self._bucket_requests = [0] * BUCKETS
        self._bucket_failures = [0] * BUCKETS
        self._requests = self._failures = 0
