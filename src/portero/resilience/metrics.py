"""Every policy's state and outcomes as Prometheus metrics, for the app's own `/metrics`.

Names (labels `breaker` or `policy`, the policy's name):

- `resilience_breaker_state{breaker,state}`: 1 for the breaker's current state (closed, half-open, open), else 0.
- `resilience_breaker_open{breaker}`: 1 while open; the series an alert watches.
- `resilience_breaker_failures{breaker}`: consecutive failures counted towards `fail_max`.
- `resilience_breaker_transitions_total{breaker,state}`: moves into each state.
- `resilience_calls_total{policy,outcome}`: calls by outcome: `success`, `failure` (raised or fell back after
  its attempts), `rejected` (the breaker refused it).
- `resilience_attempts_total{policy,outcome}`: attempts: `success`, `error`, `timeout`.
- `resilience_retries_total{policy}`, `resilience_fallbacks_total{policy}`: retries made, fallbacks served.

Under gunicorn with several workers, set `PROMETHEUS_MULTIPROC_DIR` (examples/portal/gunicorn.conf.py does):
counters add up over the workers and the state gauges show the most recent write of any live worker.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from portero.resilience.breaker import OPEN, STATES


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode="livemostrecent")

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.state = gauge("resilience_breaker_state", "1 for the breaker's current state.", ["breaker", "state"])
        self.open = gauge("resilience_breaker_open", "1 while the breaker is open.", ["breaker"])
        self.failures = gauge("resilience_breaker_failures", "Consecutive failures towards fail_max.", ["breaker"])
        self.transitions = counter(
            "resilience_breaker_transitions", "Moves of the breaker into each state.", ["breaker", "state"]
        )
        self.calls = counter("resilience_calls", "Calls by outcome: success, failure, rejected.", ["policy", "outcome"])
        self.attempts = counter(
            "resilience_attempts", "Attempts by outcome: success, error, timeout.", ["policy", "outcome"]
        )
        self.retries = counter("resilience_retries", "Retries made after a retryable error.", ["policy"])
        self.fallbacks = counter("resilience_fallbacks", "Fallback values served instead of the call's.", ["policy"])

    def publish(self, name: str, state: str, failures: int) -> None:
        for each in STATES:
            self.state.labels(name, each).set(1.0 if each == state else 0.0)
        self.open.labels(name).set(1.0 if state == OPEN else 0.0)
        self.failures.labels(name).set(failures)


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
# By name: the metrics are labelled by the policy's name, so the latest policy of a name owns its series (an
# older one still alive, e.g. a previous app object in the same process, would otherwise overwrite them).
_refreshers: dict[str, weakref.ref[Refreshable]] = {}


class Refreshable(Protocol):
    name: str

    def refresh(self) -> None: ...


def metrics_for(registry: CollectorRegistry) -> Metrics:
    """One set of metrics per registry: policies share them, each under its own label."""
    found = _by_registry.get(registry)
    if found is None:
        found = _by_registry[registry] = Metrics(registry)
    return found


def track(policy: Refreshable) -> None:
    _refreshers[policy.name] = weakref.ref(policy)


def refresh() -> None:
    """Re-read every breaker's state: open -> half-open is lazy, and another replica may have moved a shared one."""
    for name, ref in list(_refreshers.items()):
        policy = ref()
        if policy is None:
            _refreshers.pop(name, None)
        else:
            policy.refresh()


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The body and content type of `/metrics`: this process's registry, or every worker's in multiprocess mode."""
    refresh()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
