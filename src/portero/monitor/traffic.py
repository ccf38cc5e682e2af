"""Rates and percentiles from the router's cumulative counters, by differencing two readings.

The router keeps plain counters and histograms per stats object: one per service (every answer its clients got,
whoever made it, and the time they waited) and one per endpoint (the tries it served and the time they took
there). An endpoint that leaves takes its object with it, so the monitor keeps its own totals: each pass adds
what every stats object gained since the previous pass (a stats object it has not seen before, e.g. a new
endpoint, gained everything it holds). Totals therefore never go down, as a Prometheus counter must not; the rates
and percentiles of a pass come from the same differences. A service's figures come from its own object alone:
a request counts once, when its client is answered, however many tries it took.

Pure: readings and `now` in, `Traffic` out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from portero.monitor.snapshot import Traffic
from portero.router.stats import BOUNDS_S, FAULTS, STATUS_CLASSES, LatencyHistogram

Key = tuple[str, str | None]  # (service, endpoint address); None: the router's own answers for the service


@dataclass(frozen=True)
class Reading:
    """One stats object of the router, read at one moment."""

    service: str
    address: str | None
    replica: str | None
    state: str
    identity: int  # id() of the stats object: another identity is another object, which started at zero
    requests: int
    responses: tuple[int, ...]  # by status class, 1xx..5xx
    in_flight: int
    buckets: tuple[int, ...]  # len(BOUNDS_S) + 1
    latency_sum_s: float
    faults: tuple[int, ...] = (0,) * len(FAULTS)  # tries it failed, by kind (router/stats.py FAULTS)
    retries: int = 0
    ejections: int = 0


@dataclass
class Totals:
    requests: int = 0
    responses: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_S) + 1))
    latency_sum_s: float = 0.0
    faults: list[int] = field(default_factory=lambda: [0] * len(FAULTS))
    retries: int = 0
    ejections: int = 0

    def add(self, delta: Totals) -> None:
        self.requests += delta.requests
        self.responses = [a + b for a, b in zip(self.responses, delta.responses, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, delta.buckets, strict=True)]
        self.latency_sum_s += delta.latency_sum_s
        self.faults = [a + b for a, b in zip(self.faults, delta.faults, strict=True)]
        self.retries += delta.retries
        self.ejections += delta.ejections


class TrafficBook:
    def __init__(self) -> None:
        self.previous: dict[Key, Reading] = {}
        self.endpoints: dict[Key, Totals] = {}
        self.services: dict[str, Totals] = {}
        self.last_at: float | None = None

    def update(self, readings: Iterable[Reading], now: float) -> tuple[dict[str, Traffic], dict[Key, Traffic]]:
        elapsed = None if self.last_at is None else now - self.last_at
        self.last_at = now
        current: dict[Key, Reading] = {}
        gained: dict[str, Totals] = {}
        in_flight: dict[str, int] = {}
        endpoint_traffic: dict[Key, Traffic] = {}
        for reading in readings:
            key = (reading.service, reading.address)
            current[key] = reading
            delta = _delta(self.previous.get(key), reading)
            if reading.address is None:
                gained.setdefault(reading.service, Totals()).add(delta)
                continue
            in_flight[reading.service] = in_flight.get(reading.service, 0) + reading.in_flight
            totals = self.endpoints.setdefault(key, Totals())
            totals.add(delta)
            endpoint_traffic[key] = _traffic(totals, delta, reading.in_flight, elapsed)
        self.previous = current
        self.endpoints = {k: v for k, v in self.endpoints.items() if k in current}
        service_traffic: dict[str, Traffic] = {}
        for service, delta in gained.items():
            totals = self.services.setdefault(service, Totals())
            totals.add(delta)
            service_traffic[service] = _traffic(totals, delta, in_flight.get(service, 0), elapsed)
        self.services = {k: v for k, v in self.services.items() if k in gained}
        return service_traffic, endpoint_traffic


def _delta(before: Reading | None, now: Reading) -> Totals:
    if before is None or before.identity != now.identity or now.requests < before.requests:
        return Totals(
            now.requests,
            list(now.responses),
            list(now.buckets),
            now.latency_sum_s,
            list(now.faults),
            now.retries,
            now.ejections,
        )
    return Totals(
        now.requests - before.requests,
        [a - b for a, b in zip(now.responses, before.responses, strict=True)],
        [a - b for a, b in zip(now.buckets, before.buckets, strict=True)],
        now.latency_sum_s - before.latency_sum_s,
        [a - b for a, b in zip(now.faults, before.faults, strict=True)],
        now.retries - before.retries,
        now.ejections - before.ejections,
    )


def _traffic(totals: Totals, delta: Totals, in_flight: int, elapsed: float | None) -> Traffic:
    window = LatencyHistogram()
    window.counts = list(delta.buckets)
    window.count = sum(delta.buckets)
    answered = sum(delta.responses)
    return Traffic(
        requests_total=sum(totals.responses),
        responses_total=dict(zip(STATUS_CLASSES, totals.responses, strict=True)),
        requests_per_second=answered / elapsed if elapsed else None,
        error_ratio=delta.responses[4] / answered if answered else None,
        in_flight=in_flight,
        latency_p50_s=window.percentile(50),
        latency_p95_s=window.percentile(95),
        latency_p99_s=window.percentile(99),
        latency_buckets=tuple(totals.buckets),
        latency_sum_s=totals.latency_sum_s,
        latency_count=sum(totals.buckets),
        faults_total=dict(zip(FAULTS, totals.faults, strict=True)),
        retries_total=totals.retries,
        ejections_total=totals.ejections,
    )
