"""When a failed try may be tried again: HTTP semantics (`RetryPolicy`) and load (`RetryBudget`).

A retry is allowed only if both agree. The policy says whether repeating the request is safe; the budget says
whether the service can afford it: during an outage every request fails, and retrying each one would multiply the
load on the endpoints that are left. Rejected: a fixed retry count alone, which triples that load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from portero.router.stats import CONNECT_TIMEOUT, REFUSED, RESET, TIMEOUT

# RFC 9110 §9.2.2; a retried PUT or DELETE leaves the same state behind. POST and PATCH do not.
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
STATUS: Final = -1  # `RetryPolicy.decide`'s fault for an answer whose status the policy retries


class RetryBudget:
    """Finagle's and Linkerd's retry budget: over the last `window_s`, retries may be at most `ratio` of the requests
    plus `min_retries`, so that tries stay within requests x (1 + ratio) + min however every endpoint fails.

    Counted in one-second buckets: a request deposits, a retry withdraws. Rejected: Envoy's cap on retries in flight
    as a share of requests in flight, which bounds concurrency, not tries (a quick retry frees its place at once,
    and 20 % of 40 in flight let through 25 % more tries than requests when every endpoint answered 503).
    """

    __slots__ = ("_requests", "_retries", "_seconds", "min_retries", "ratio")

    def __init__(self, ratio: float = 0.2, min_retries: int = 10, window_s: int = 10) -> None:
        if ratio < 0:
            raise ValueError(f"retry budget: ratio must be >= 0, got {ratio}")
        if min_retries < 0:
            raise ValueError(f"retry budget: min_retries must be >= 0, got {min_retries}")
        if window_s < 1:
            raise ValueError(f"retry budget: window_s must be >= 1, got {window_s}")
        self.ratio = ratio
        self.min_retries = min_retries
        self._seconds = [-1] * window_s  # the second each bucket counts, by `second % window_s`
        self._requests = [0] * window_s
        self._retries = [0] * window_s

    def _bucket(self, now: float) -> int:
        second = int(now)
        index = second % len(self._seconds)
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._requests[index] = self._retries[index] = 0
        return index

    def request(self, now: float) -> None:
        """A request arrived (each one, once)."""
        self._requests[self._bucket(now)] += 1

    def allows(self, now: float) -> bool:
        """The budget has a retry left."""
        oldest = int(now) - len(self._seconds)
        requests = retries = 0
        for bucket, second in enumerate(self._seconds):
            if second > oldest:
                requests += self._requests[bucket]
                retries += self._retries[bucket]
        return retries + 1 <= self.ratio * requests + self.min_retries

    def spend(self, now: float) -> None:
        """A retry is made."""
        self._retries[self._bucket(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Spend a retry if the budget allows one."""
        if not self.allows(now):
            return False
        self.spend(now)
        return True


NO_RETRY: Final = 0
FREE_RETRY: Final = 1  # the request never reached a living app: retried at once, outside the budget
CHARGED_RETRY: Final = 2  # it may have reached one: retried only within `attempts` and the budget


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failed tries are tried again, and whether a retry costs budget.

    Free: a connection that could not be opened (nothing was sent), or a reused keep-alive connection that the
    endpoint closed before the first byte of its answer to an idempotent request (the endpoint closed an idle
    connection as the request went out, or died: either way no app acted on it). Such failures prove nothing
    about load, so the budget, which exists to stop retry storms, does not apply; they are bounded by
    `free_limit` instead (the caller gives about one per endpoint). Charged: a connection lost after the request
    went out on a fresh connection, a status in `on_status`, a timeout when `on_timeout` is set; idempotent
    requests only. Never: a stalled or garbled response, once any response byte went to the client, once the
    client has gone, or when the body sent cannot be sent again.
    """

    attempts: int = 3  # tries in total, the first one included, of the charged kind
    on_timeout: bool = False  # a timeout may mean the app is still working on it: off, as in HAProxy and Envoy
    on_status: frozenset[int] = frozenset()  # endpoint answers retried elsewhere (e.g. 503), within the budget
    idempotent_methods: frozenset[bytes] = field(default=IDEMPOTENT_METHODS)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry policy: attempts must be >= 1, got {self.attempts}")

    def decide(
        self,
        fault: int,
        method: bytes,
        *,
        sent: bool,
        reused: bool,
        charged_so_far: int,
        free_so_far: int,
        free_limit: int,
    ) -> int:
        """NO_RETRY, FREE_RETRY or CHARGED_RETRY for a try that failed with `fault` (stats.REFUSED...; -1 for an
        answer whose status is in `on_status`). The caller has checked that the client is still there, that no
        response byte went to it, and that the body can be sent again."""
        if fault in (REFUSED, CONNECT_TIMEOUT) or not sent:
            return FREE_RETRY if free_so_far < free_limit else NO_RETRY
        if method not in self.idempotent_methods:
            return NO_RETRY
        if fault == RESET and reused and free_so_far < free_limit:
            return FREE_RETRY
        chargeable = fault in (RESET, STATUS) or (fault == TIMEOUT and self.on_timeout)
        if chargeable and charged_so_far + 1 < self.attempts:
            return CHARGED_RETRY
        return NO_RETRY
