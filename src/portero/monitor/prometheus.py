"""`/metrics`: the monitor's latest snapshot in Prometheus' text format, through prometheus-client.

A custom collector builds the families from the snapshot when scraped, on a registry of its own: nothing is
registered globally and a scrape never measures anything itself (it shows the last pass, at most
`monitoring.interval_s` old). Names follow Prometheus' conventions: the `portero_` prefix, base units in the
name (`_seconds`, `_bytes`, `_ratio` for 0..1), `_total` for counters. Percentages of the JSON API become
ratios here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from portero.monitor.alerts import AlertState
from portero.monitor.snapshot import Snapshot
from portero.router.stats import BOUNDS_S

if TYPE_CHECKING:
    from portero.monitor.monitor import Monitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        enabled = GaugeMetricFamily(
            "portero_monitoring_enabled", "1 when portero collects metrics (monitoring.enabled)."
        )
        enabled.add_metric([], 1.0 if monitor.enabled else 0.0)
        yield enabled
        snapshot = monitor.snapshot
        if snapshot is None:
            return
        yield from _host(snapshot)
        yield from _replicas(snapshot)
        yield from _services(snapshot)
        yield from _portero(snapshot)
        yield from _scraped(snapshot)
        yield from self._alerts()

    def _alerts(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "portero_alerts",
            "Active alerts by rule and state (Prometheus' ALERTS).",
            labels=["alertname", "alertstate"],
        )
        counts: dict[tuple[str, str], int] = {}
        for alert in self.monitor.active():
            key = (alert.rule, alert.state.value)
            counts[key] = counts.get(key, 0) + 1
        for (rule, state), count in sorted(counts.items()):
            family.add_metric([rule, state], count)
        yield family
        firing = GaugeMetricFamily("portero_alerts_firing", "Alerts firing now.")
        firing.add_metric([], sum(1 for a in self.monitor.active() if a.state is AlertState.FIRING))
        yield firing
        if self.monitor.senders is not None:
            sent = CounterMetricFamily(
                "portero_notifications",
                "Webhook notifications by receiver and outcome.",
                labels=["receiver", "outcome"],
            )
            for (receiver, outcome), count in sorted(self.monitor.senders.outcomes.items()):
                sent.add_metric([receiver, outcome], count)
            yield sent


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        family.add_metric(list((labels or {}).values()), value)
    return family


def _host(snapshot: Snapshot) -> Iterator[Metric]:
    host = snapshot.host
    yield _gauge("portero_host_cpu_usage_ratio", "Host CPU busy, 0..1 of all cores.", host.cpu_percent / 100)
    yield _gauge("portero_host_cpus", "Logical CPUs of the host.", host.cpu_count)
    yield _gauge("portero_host_memory_usage_ratio", "Host memory in use, 0..1.", host.memory_percent / 100)
    yield _gauge("portero_host_memory_used_bytes", "Host memory in use (total - available).", host.memory_used_bytes)
    yield _gauge("portero_host_memory_total_bytes", "Host memory.", host.memory_total_bytes)
    load = GaugeMetricFamily("portero_host_load", "Host load average.", labels=["window"])
    for window, value in (("1m", host.load1), ("5m", host.load5), ("15m", host.load15)):
        load.add_metric([window], value)
    yield load
    path = {"path": host.disk_path}
    yield _gauge(
        "portero_host_disk_usage_ratio",
        "Filesystem of the state directory in use, 0..1.",
        host.disk_percent / 100,
        path,
    )
    yield _gauge(
        "portero_host_disk_used_bytes", "Filesystem of the state directory in use.", host.disk_used_bytes, path
    )
    yield _gauge("portero_host_disk_total_bytes", "Filesystem of the state directory.", host.disk_total_bytes, path)
    network = CounterMetricFamily(
        "portero_host_network", "Bytes through the host's interfaces.", labels=["direction"], unit="bytes"
    )
    network.add_metric(["receive"], host.network_receive_bytes_total)
    network.add_metric(["transmit"], host.network_transmit_bytes_total)
    yield network


def _replicas(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["service", "replica"]
    cpu = GaugeMetricFamily(
        "portero_replica_cpu_usage_ratio", "Replica CPU, of one core (may exceed 1).", labels=labels
    )
    memory = GaugeMetricFamily(
        "portero_replica_memory_rss_bytes", "Resident memory of the replica's processes.", labels=labels
    )
    processes = GaugeMetricFamily("portero_replica_processes", "Processes of the replica.", labels=labels)
    ready = GaugeMetricFamily("portero_replica_ready", "1 when the replica is ready (in rotation).", labels=labels)
    restarts = CounterMetricFamily(
        "portero_replica_restarts", "Restarts of the replica after a crash or failed check.", labels=labels
    )
    for replica in snapshot.replicas:
        values = [replica.service, replica.id]
        ready.add_metric(values, 1.0 if replica.state == "ready" else 0.0)
        restarts.add_metric(values, replica.restarts)
        if replica.cpu_percent is not None:
            cpu.add_metric(values, replica.cpu_percent / 100)
        if replica.memory_bytes is not None:
            memory.add_metric(values, replica.memory_bytes)
        if replica.processes is not None:
            processes.add_metric(values, replica.processes)
    yield from (cpu, memory, processes, ready, restarts)


def _services(snapshot: Snapshot) -> Iterator[Metric]:
    service = ["service"]
    desired = GaugeMetricFamily("portero_service_desired_replicas", "Replicas the service should have.", labels=service)
    ready = GaugeMetricFamily("portero_service_ready_replicas", "Replicas of the service ready now.", labels=service)
    requests = CounterMetricFamily(
        "portero_service_requests", "Requests answered (by an endpoint or the router).", labels=[*service, "code"]
    )
    in_flight = GaugeMetricFamily("portero_service_in_flight_requests", "Requests being served.", labels=service)
    latency = HistogramMetricFamily(
        "portero_service_request_duration_seconds",
        "Time from a request's arrival to the end of its response.",
        labels=service,
    )
    endpoint_labels = ["service", "endpoint", "replica"]
    endpoint_requests = CounterMetricFamily(
        "portero_endpoint_requests", "Requests answered by the endpoint.", labels=[*endpoint_labels, "code"]
    )
    endpoint_in_flight = GaugeMetricFamily(
        "portero_endpoint_in_flight_requests", "Requests the endpoint is serving.", labels=endpoint_labels
    )
    endpoint_faults = CounterMetricFamily(
        "portero_endpoint_faults",
        "Tries the endpoint failed, by kind (refused, connect_timeout, reset, timeout, stalled, bad_response).",
        labels=[*endpoint_labels, "kind"],
    )
    endpoint_retries = CounterMetricFamily(
        "portero_endpoint_retries", "Tries that failed at the endpoint and were tried again.", labels=endpoint_labels
    )
    endpoint_ejections = CounterMetricFamily(
        "portero_endpoint_ejections",
        "Times outlier detection took the endpoint out of rotation.",
        labels=endpoint_labels,
    )
    for sample in snapshot.services:
        desired.add_metric([sample.name], sample.desired)
        ready.add_metric([sample.name], sample.ready)
        traffic = sample.traffic
        if traffic is None:
            continue
        for code, count in traffic.responses_total.items():
            requests.add_metric([sample.name, code], count)
        in_flight.add_metric([sample.name], traffic.in_flight)
        latency.add_metric([sample.name], _buckets(traffic.latency_buckets), traffic.latency_sum_s)
        for endpoint in sample.endpoints:
            values = [sample.name, endpoint.address, endpoint.replica or ""]
            for code, count in endpoint.traffic.responses_total.items():
                endpoint_requests.add_metric([*values, code], count)
            endpoint_in_flight.add_metric(values, endpoint.traffic.in_flight)
            for kind, count in endpoint.traffic.faults_total.items():
                endpoint_faults.add_metric([*values, kind], count)
            endpoint_retries.add_metric(values, endpoint.traffic.retries_total)
            endpoint_ejections.add_metric(values, endpoint.traffic.ejections_total)
    yield from (desired, ready, requests, in_flight, latency, endpoint_requests, endpoint_in_flight)
    yield from (endpoint_faults, endpoint_retries, endpoint_ejections)
    if snapshot.router is not None:
        yield _gauge(
            "portero_router_client_connections", "Open client connections to the router.", snapshot.router.connections
        )


def _buckets(counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus' cumulative `le` buckets, +Inf last."""
    running, out = 0, []
    for bound, count in zip([*map(floatToGoString, BOUNDS_S), "+Inf"], counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out


def _portero(snapshot: Snapshot) -> Iterator[Metric]:
    me = snapshot.portero
    yield _gauge("portero_process_cpu_usage_ratio", "portero's own CPU, of one core.", me.cpu_percent / 100)
    yield _gauge("portero_process_resident_memory_bytes", "portero's own resident memory.", me.memory_bytes)
    yield _gauge("portero_process_uptime_seconds", "Time since portero started.", me.uptime_s)
    yield _gauge(
        "portero_monitor_collect_duration_seconds", "Wall time of the last collection pass.", me.collect_seconds
    )
    yield _gauge("portero_monitor_series", "Metric series held in memory.", me.series)
    yield _gauge("portero_monitor_series_memory_bytes", "Memory the metric series take.", me.series_memory_bytes)
    yield _gauge(
        "portero_monitor_series_budget_bytes",
        "Memory budget of the series (monitoring.series).",
        me.series_budget_bytes,
    )
    yield _gauge("portero_monitor_sample_timestamp_seconds", "Unix time of the snapshot shown.", snapshot.at)


def _scraped(snapshot: Snapshot) -> Iterator[Metric]:
    """The replicas' own metrics as `portero_app_<name>` (type unknown: a histogram's samples are flattened),
    and whether each replica's last scrape worked (Prometheus' `up`)."""
    if not snapshot.scrapes:
        return
    up = GaugeMetricFamily(
        "portero_scrape_up",
        "1 when the replica's last scrape of its metrics endpoint worked.",
        labels=["service", "replica"],
    )
    for scrape in snapshot.scrapes:
        up.add_metric([scrape.service, scrape.replica], 1.0 if scrape.ok else 0.0)
    yield up
    families: dict[str, Metric] = {}
    for sample in snapshot.app:
        name = f"portero_app_{sample.name}"
        family = families.get(name)
        if family is None:
            family = families[name] = Metric(name, f"{sample.name}, scraped from the replicas.", "unknown")
        family.add_sample(name, sample.labels, sample.value)
    yield from families.values()


class Exposition:
    """One registry per monitor, made once: a scrape only renders."""

    def __init__(self, monitor: Monitor) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(monitor))

    def render(self) -> bytes:
        return generate_latest(self.registry)
