"""Resilience for an app's calls to services it does not control: a named circuit breaker (pybreaker, shared
through Redis when `REDIS_URL` is set), retries with backoff and jitter (tenacity), a timeout and a fallback,
published as Prometheus metrics. docs/resilience.md shows how the demo portal uses it."""

from portero.resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen
from portero.resilience.clock import Clock, SystemClock
from portero.resilience.metrics import exposition, refresh
from portero.resilience.policy import Breaker, CallTimeout, Policy, Retry

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerOpen",
    "CallTimeout",
    "Clock",
    "Policy",
    "Retry",
    "SystemClock",
    "exposition",
    "refresh",
]
