"""The one window of percentiles and error rates: totals in, the last 60 s out, on a fake clock."""

from __future__ import annotations

from portero.monitor.snapshot import EndpointSample, ServiceSample, Traffic
from portero.monitor.window import TrafficWindow
from portero.router.stats import BOUNDS_S

T0 = 1_700_000_000.0
FAST = BOUNDS_S.index(0.005)  # the bucket of requests up to 5 ms
SLOW = BOUNDS_S.index(1)  # up to 1 s


def totals(ok: int, client: int = 0, server: int = 0, fast: int = 0, slow: int = 0) -> Traffic:
    buckets = [0] * (len(BOUNDS_S) + 1)
    buckets[FAST], buckets[SLOW] = fast, slow
    return Traffic(
        requests_total=ok + client + server,
        responses_total={"1xx": 0, "2xx": ok, "3xx": 0, "4xx": client, "5xx": server},
        requests_per_second=None,
        error_ratio=None,
        in_flight=0,
        latency_p50_s=None,
        latency_p95_s=None,
        latency_p99_s=None,
        latency_buckets=tuple(buckets),
        latency_sum_s=0.0,
        latency_count=sum(buckets),
    )


def service(traffic: Traffic, endpoint: Traffic | None = None) -> list[ServiceSample]:
    endpoints = [EndpointSample("127.0.0.1:9", None, "active", endpoint)] if endpoint is not None else []
    return [ServiceSample("portal", 1, 1, traffic, endpoints)]


def test_the_figures_are_those_of_the_last_60_s_and_agree_for_services_and_endpoints():
    window = TrafficWindow()
    (first,) = window.services(service(totals(90, client=10, slow=100), totals(90, client=10, slow=100)), T0)
    assert first.traffic is not None
    assert first.traffic.client_error_ratio == 0.1
    assert (first.traffic.latency_p95_s or 0) > 0.5  # slow so far
    # 30 s later: 100 fast requests more, 5 of them 5xx; the window still holds the slow ones.
    later = totals(185, client=10, server=5, fast=100, slow=100)
    (mid,) = window.services(service(later, later), T0 + 30)
    assert mid.traffic is not None
    assert mid.traffic.error_ratio == 5 / 200
    assert mid.endpoints[0].traffic.latency_p95_s == mid.traffic.latency_p95_s
    # 61 s after the first pass the slow ones have left the window: what is left is the last 100, all fast.
    (late,) = window.services(service(later, later), T0 + 61)
    assert late.traffic is not None
    assert 0 < (late.traffic.latency_p95_s or 0) <= 0.005
    assert late.traffic.error_ratio == 5 / 100
    assert late.traffic.client_error_ratio == 0.0


def test_an_endpoint_whose_totals_start_over_starts_its_window_over():
    window = TrafficWindow()
    window.services(service(totals(100), totals(100, server=50)), T0)
    (again,) = window.services(service(totals(110), totals(10, server=10)), T0 + 10)
    assert again.endpoints[0].traffic.error_ratio == 0.5  # its own 20 answers, not a negative difference
