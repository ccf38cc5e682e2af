"""When a failed try may be tried again: HTTP semantics (`RetryPolicy`) and load (`RetryBudget`, Envoy's).

A retry is allowed only if both agree. The policy says whether repeating the request is safe; the budget says
whether the service can afford it: during an outage every request fails, and retrying each one would multiply the
load on the endpoints that are left. Rejected: a fixed retry count alone, which triples that load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# RFC 9110 §9.2.2; a retried PUT or DELETE leaves the same state behind. POST and PATCH do not.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


@dataclass(frozen=True, slots=True)
class RetryBudget:
    ratio: float = 0.2  # share of the active requests that may be retries at any moment
    min_retries: int = 3  # allowed whatever the load, so a quiet service can still fail over

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise ValueError(f"retry budget: ratio must be >= 0, got {self.ratio}")
        if self.min_retries < 0:
            raise ValueError(f"retry budget: min_retries must be >= 0, got {self.min_retries}")

    def can_retry(self, active_requests: int, active_retries: int) -> bool:
        """`active_requests` counts every request in flight to the service, retries included (as Envoy does)."""
        return active_retries < max(self.min_retries, self.ratio * active_requests)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries a connect failure or a reset before any response byte, on another endpoint.

    The caller reports what happened as two facts: whether any request byte went upstream (a connect failure
    sent nothing) and whether any response byte came back. It must also be able to replay the body: a streamed
    body that is no longer buffered cannot be sent again, whatever this policy says.
    """

    attempts: int = 3  # tries in total, the first one included
    idempotent_methods: frozenset[bytes] = field(default=IDEMPOTENT_METHODS)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry policy: attempts must be >= 1, got {self.attempts}")

    def may_retry(self, method: bytes, sent_anything: bool, got_response_byte: bool, attempt: int) -> bool:
        """`attempt` is the number of the try that just failed, 1 for the first."""
        if got_response_byte or attempt >= self.attempts:
            return False  # part of a response may already be on its way to the client
        return not sent_anything or method in self.idempotent_methods
