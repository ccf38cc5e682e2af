"""A snapshot as series samples: the names and labels every rule, query and chart uses (docs/monitoring.md).

Pure. A value that is None (nothing to measure this time) is not recorded, so a gap stays a gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from portero.monitor.series import Kind
from portero.monitor.snapshot import ServiceSample, Snapshot, Traffic

Sample = tuple[str, dict[str, str], float, Kind]


def samples(snapshot: Snapshot) -> Iterator[Sample]:
    host = snapshot.host
    yield from _gauges(
        {},
        host_cpu_percent=host.cpu_percent,
        host_memory_percent=host.memory_percent,
        host_load1=host.load1,
        host_disk_percent=host.disk_percent,
        host_network_receive_bytes_per_second=host.network_receive_bytes_per_second,
        host_network_transmit_bytes_per_second=host.network_transmit_bytes_per_second,
    )
    for replica in snapshot.replicas:
        labels = {"service": replica.service, "replica": replica.id}
        yield "replica_restarts_total", labels, float(replica.restarts), "counter"
        yield from _gauges(
            labels,
            replica_ready=1.0 if replica.state == "ready" else 0.0,
            replica_cpu_percent=replica.cpu_percent,
            replica_memory_bytes=replica.memory_bytes,
            replica_memory_percent=replica.memory_percent,
        )
    for service in snapshot.services:
        yield from _service(service)
    if snapshot.router is not None:
        yield from _gauges(
            {},
            router_requests_per_second=snapshot.router.requests_per_second,
            router_in_flight=snapshot.router.in_flight,
            router_connections=snapshot.router.connections,
        )
    for scrape in snapshot.scrapes:
        yield from _gauges(
            {"service": scrape.service, "replica": scrape.replica},
            replica_scrape_up=1.0 if scrape.ok else 0.0,
            replica_scrape_series=scrape.series,
            replica_scrape_duration_seconds=scrape.duration_s,
        )
    portero = snapshot.portero
    yield from _gauges(
        {},
        portero_cpu_percent=portero.cpu_percent,
        portero_memory_bytes=portero.memory_bytes,
        portero_collect_seconds=portero.collect_seconds,
        portero_store_up=None if portero.store_up is None else float(portero.store_up),
    )


def _service(service: ServiceSample) -> Iterator[Sample]:
    labels = {"service": service.name}
    yield from _gauges(
        labels,
        service_desired_replicas=service.desired,
        service_ready_replicas=service.ready,
        service_missing_replicas=max(service.desired - service.ready, 0),
        service_unroutable=None if service.unroutable is None else float(service.unroutable),
    )
    if service.traffic is not None:
        yield from _traffic("service", labels, service.traffic)
    for endpoint in service.endpoints:
        yield from _gauges(
            {"service": service.name, "endpoint": endpoint.address},
            endpoint_requests_per_second=endpoint.traffic.requests_per_second,
            endpoint_in_flight=endpoint.traffic.in_flight,
            endpoint_latency_p95_seconds=endpoint.traffic.latency_p95_s,
        )


def _traffic(prefix: str, labels: dict[str, str], traffic: Traffic) -> Iterator[Sample]:
    yield f"{prefix}_responses_total", labels, float(traffic.requests_total), "counter"
    yield f"{prefix}_responses_4xx_total", labels, float(traffic.responses_total["4xx"]), "counter"
    yield f"{prefix}_responses_5xx_total", labels, float(traffic.responses_total["5xx"]), "counter"
    yield from _gauges(
        labels,
        **{
            f"{prefix}_requests_per_second": traffic.requests_per_second,
            f"{prefix}_error_ratio": traffic.error_ratio,
            f"{prefix}_client_error_ratio": traffic.client_error_ratio,
            f"{prefix}_in_flight": traffic.in_flight,
            f"{prefix}_latency_p50_seconds": traffic.latency_p50_s,
            f"{prefix}_latency_p95_seconds": traffic.latency_p95_s,
            f"{prefix}_latency_p99_seconds": traffic.latency_p99_s,
        },
    )


def _gauges(labels: dict[str, str], **values: float | None) -> Iterator[Sample]:
    for name, value in values.items():
        yield name, labels, math.nan if value is None else float(value), "gauge"
