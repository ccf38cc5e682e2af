"""`/metrics` parses with prometheus-client's own parser, and every family has HELP and TYPE."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from portero.monitor.prometheus import Exposition
from portero.monitor.snapshot import (
    EndpointSample,
    HostSample,
    PorteroSample,
    ReplicaSample,
    RouterSample,
    ServiceSample,
    Snapshot,
    Traffic,
)
from portero.router.stats import BOUNDS_S, FAULTS

HOST = HostSample(12.5, 2, 40.0, 4 << 30, 10 << 30, 0.5, 0.4, 0.3, "/tmp", 55.0, 5 << 30, 10 << 30, 100.0, 50.0, 10, 20)
BUCKETS = tuple([3] + [0] * len(BOUNDS_S))
TRAFFIC = Traffic(3, {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1}, 1.5, 0.33, 1, 0.0002, 0.0004, 0.0005,
                  BUCKETS, 0.0009, 3)  # fmt: skip
FAULTY = Traffic(3, {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1}, 1.5, 0.33, 1, 0.0002, 0.0004, 0.0005,
                 BUCKETS, 0.0009, 3, None, {**dict.fromkeys(FAULTS, 0), "refused": 7, "stalled": 2}, 5, 1)  # fmt: skip
SNAPSHOT = Snapshot(
    at=1_700_000_000.0,
    interval_s=1.0,
    host=HOST,
    replicas=[
        ReplicaSample("portal-1-ab12", "portal", 1, "ready", 2, 10.0, 25.0, 50 << 20, 0.5, 3),
        ReplicaSample("portal-1-cd34", "portal", 1, "backoff", 4, None, None, None, None, None),
    ],
    services=[
        ServiceSample("portal", 2, 1, TRAFFIC, [EndpointSample("127.0.0.1:4000", "portal-1-ab12", "active", FAULTY)])
    ],
    router=RouterSample(1.5, 1, 4),
    portero=PorteroSample(3.0, 80 << 20, 60.0, 0.004, 40, 1 << 20, 16 << 20),
)


def fake_monitor(snapshot: Snapshot | None, enabled: bool = True) -> SimpleNamespace:
    senders = SimpleNamespace(outcomes=Counter({("webhook-1", "sent"): 2}))
    return SimpleNamespace(enabled=enabled, snapshot=snapshot, active=list, senders=senders)


def parse(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_family_parses_and_has_help_and_type():
    text = Exposition(fake_monitor(SNAPSHOT)).render().decode()  # type: ignore[arg-type]
    families = parse(text)
    assert len(families) > 25
    for name, family in families.items():
        assert name.startswith("portero_")
        exposed = name + ("_total" if family.type == "counter" else "")  # type: ignore[attr-defined]
        assert f"# HELP {exposed} " in text
        assert f"# TYPE {exposed} " in text
        assert family.documentation  # type: ignore[attr-defined]
    assert families["portero_service_requests"].type == "counter"  # type: ignore[attr-defined]
    assert 'portero_service_requests_total{code="5xx",service="portal"} 1.0' in text
    assert 'portero_replica_restarts_total{replica="portal-1-cd34",service="portal"} 4.0' in text
    assert 'portero_replica_cpu_usage_ratio{replica="portal-1-ab12",service="portal"} 0.25' in text
    assert 'portero_service_request_duration_seconds_bucket{le="0.0005",service="portal"} 3.0' in text
    assert 'portero_service_request_duration_seconds_bucket{le="+Inf",service="portal"} 3.0' in text
    assert 'portero_host_network_bytes_total{direction="receive"} 10.0' in text
    assert 'portero_notifications_total{outcome="sent",receiver="webhook-1"} 2.0' in text
    assert "portero_monitoring_enabled 1.0" in text
    labels = 'endpoint="127.0.0.1:4000",replica="portal-1-ab12",service="portal"'
    faults = 'endpoint="127.0.0.1:4000",kind="{}",replica="portal-1-ab12",service="portal"'
    assert f"portero_endpoint_faults_total{{{faults.format('refused')}}} 7.0" in text
    assert f"portero_endpoint_faults_total{{{faults.format('stalled')}}} 2.0" in text
    assert f"portero_endpoint_faults_total{{{faults.format('reset')}}} 0.0" in text
    assert f"portero_endpoint_retries_total{{{labels}}} 5.0" in text
    assert f"portero_endpoint_ejections_total{{{labels}}} 1.0" in text


def test_disabled_or_not_yet_sampled_says_only_so():
    text = Exposition(fake_monitor(None, enabled=False)).render().decode()  # type: ignore[arg-type]
    assert list(parse(text)) == ["portero_monitoring_enabled"]
    assert "portero_monitoring_enabled 0.0" in text
