"""An app's exposition parsed into series samples for the monitor."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from portero.monitor.appmetrics import parse


def exposition() -> str:
    registry = CollectorRegistry()
    Gauge("resilience_breaker_open", "open", ["breaker"], registry=registry).labels("payments").set(1)
    Counter("resilience_calls", "calls", ["policy", "outcome"], registry=registry).labels("payments", "rejected").inc(3)
    Gauge("replica_cpu_percent", "an app name that is portero's own", ["service"], registry=registry).labels("x").set(5)
    Histogram("job_seconds", "jobs", registry=registry, buckets=(0.1, 1)).observe(0.5)
    return generate_latest(registry).decode()


def test_samples_get_the_replicas_labels_and_kinds():
    parsed = parse(exposition(), "portal", "portal-1", 100)
    found = {(s.name, tuple(sorted(s.labels.items()))): (s.value, s.kind) for s in parsed.samples}
    assert found[
        ("resilience_breaker_open", (("breaker", "payments"), ("replica", "portal-1"), ("service", "portal")))
    ] == (
        1.0,
        "gauge",
    )
    calls = (("outcome", "rejected"), ("policy", "payments"), ("replica", "portal-1"), ("service", "portal"))
    assert found[("resilience_calls_total", calls)] == (3.0, "counter")
    own = (("exported_service", "x"), ("replica", "portal-1"), ("service", "portal"))
    assert found[("app_replica_cpu_percent", own)] == (5.0, "gauge")
    assert found[("job_seconds_count", (("replica", "portal-1"), ("service", "portal")))] == (1.0, "counter")
    assert not [s for s in parsed.samples if s.name.endswith("_created")]
    assert parsed.dropped == 0


def test_series_over_the_limit_are_dropped_and_counted():
    parsed = parse(exposition(), "portal", "portal-1", 2)
    assert len(parsed.samples) == 2
    assert parsed.dropped > 0


def test_text_that_is_not_an_exposition_is_refused():
    with pytest.raises(ValueError):  # noqa: PT011
        parse("<html>not metrics</html>", "portal", "portal-1", 10)
