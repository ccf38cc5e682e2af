"""What one collection pass saw: plain frozen data, read by the API, the series, the alerts and `/metrics`."""

from __future__ import annotations

from dataclasses import dataclass, field

from portero.monitor.appmetrics import AppSample, ScrapeStatus


@dataclass(frozen=True)
class HostSample:
    cpu_percent: float  # of all cores, since the previous sample
    cpu_count: int
    memory_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    load1: float
    load5: float
    load15: float
    disk_path: str  # the state directory: its filesystem is the one portero fills (logs, state.db)
    disk_percent: float
    disk_used_bytes: int
    disk_total_bytes: int
    network_receive_bytes_per_second: float | None  # None on the first sample (no previous to compare)
    network_transmit_bytes_per_second: float | None
    network_receive_bytes_total: int
    network_transmit_bytes_total: int


@dataclass(frozen=True)
class ReplicaSample:
    id: str
    service: str
    revision: int
    state: str
    restarts: int
    uptime_s: float | None
    cpu_percent: float | None  # of one core, summed over its processes; None when not running or unreadable
    memory_bytes: int | None
    memory_percent: float | None
    processes: int | None
    error: str | None = None  # why the runtime could not measure it


@dataclass(frozen=True)
class Traffic:
    """Requests through the router: totals since the monitor started, the rate of the last interval, percentiles and
    error ratios of the last 60 s (`monitor/window.py`: one definition for every reader)."""

    requests_total: int  # answered, by an endpoint or by the router itself (a retried request counts once)
    responses_total: dict[str, int]  # "1xx".."5xx"
    requests_per_second: float | None
    error_ratio: float | None  # 5xx share of the responses of the window; None without responses
    in_flight: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    latency_buckets: tuple[int, ...]  # cumulative counts per bound of `bounds_s` (not Prometheus' running sum)
    latency_sum_s: float
    latency_count: int
    client_error_ratio: float | None = None  # 4xx share of the responses of the window
    # An endpoint's own failures since the monitor started (a service's are its endpoints'): tries failed by kind
    # (router/stats.py FAULTS), tries that failed there and went elsewhere, times it was ejected.
    faults_total: dict[str, int] = field(default_factory=dict)
    retries_total: int = 0
    ejections_total: int = 0


@dataclass(frozen=True)
class EndpointSample:
    address: str
    replica: str | None
    state: str
    traffic: Traffic


@dataclass(frozen=True)
class ServiceSample:
    name: str
    desired: int
    ready: int
    traffic: Traffic | None  # None when the router is off
    endpoints: list[EndpointSample] = field(default_factory=list)
    unroutable: bool | None = None  # endpoints, none taking requests (health/service.py); None: the router is off


@dataclass(frozen=True)
class RouterSample:
    requests_per_second: float | None
    in_flight: int
    connections: int


@dataclass(frozen=True)
class PorteroSample:
    cpu_percent: float  # of one core, the whole portero process (API, router, supervisor, monitor)
    memory_bytes: int
    uptime_s: float
    collect_seconds: float  # wall time of the previous collection pass
    series: int
    series_memory_bytes: int
    series_budget_bytes: int
    store_up: bool | None = None  # Redis answered the last call (None: the embedded SQLite store)


@dataclass(frozen=True)
class Snapshot:
    at: float
    interval_s: float
    host: HostSample
    replicas: list[ReplicaSample]
    services: list[ServiceSample]
    router: RouterSample | None
    portero: PorteroSample
    scrapes: list[ScrapeStatus] = field(default_factory=list)  # the last scrape of each replica (`metrics:`)
    app: list[AppSample] = field(default_factory=list)  # what the replicas' last good scrapes read
