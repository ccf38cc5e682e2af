"""Monitoring routes: the snapshot and series (`/scalability/monitoring/metrics`), alerts, rules, and `/metrics`.

With `monitoring.enabled: false` (or MONITORING_ENABLED=false) the JSON routes answer 409 saying so, rather
than an empty list an operator could take for "all is well"; `/metrics` still answers 200 with
`portero_monitoring_enabled 0`, because a scraper treats an error as portero being down.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from portero.control import ControlPlane
from portero.errors import NotFound, Refused
from portero.monitor.alerts import Alert
from portero.monitor.monitor import Monitor
from portero.monitor.notify import rfc3339
from portero.monitor.prometheus import CONTENT_TYPE, Exposition
from portero.monitor.series import parse_selector
from portero.spec.models import NAME_PATTERN, AlertRule

FIRST_SAMPLE_WAIT_S = 5.0


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HostOut(Out):
    cpu_percent: float = Field(description="Of all cores, since the previous sample.")
    cpu_count: int
    memory_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    load1: float
    load5: float
    load15: float
    disk_path: str = Field(description="The state directory; its filesystem is the one measured.")
    disk_percent: float
    disk_used_bytes: int
    disk_total_bytes: int
    network_receive_bytes_per_second: float | None
    network_transmit_bytes_per_second: float | None
    network_receive_bytes_total: int
    network_transmit_bytes_total: int


class ReplicaMetricsOut(Out):
    id: str
    service: str
    revision: int
    state: str
    restarts: int
    uptime_s: float | None
    cpu_percent: float | None = Field(description="Of one core, summed over the replica's processes.")
    memory_bytes: int | None
    memory_percent: float | None
    processes: int | None
    error: str | None


class TrafficOut(Out):
    requests_total: int = Field(description="Answered since the monitor started (a retried request counts once).")
    responses_total: dict[str, int]
    requests_per_second: float | None
    error_ratio: float | None = Field(description="5xx share of the responses of the last 60 s.")
    client_error_ratio: float | None = Field(None, description="4xx share of the responses of the last 60 s.")
    in_flight: int
    latency_p50_s: float | None = Field(description="Of the requests answered in the last 60 s.")
    latency_p95_s: float | None = Field(description="Of the requests answered in the last 60 s.")
    latency_p99_s: float | None = Field(description="Of the requests answered in the last 60 s.")


class EndpointMetricsOut(Out):
    address: str
    replica: str | None
    state: str
    traffic: TrafficOut


class ServiceMetricsOut(Out):
    name: str
    desired: int
    ready: int
    traffic: TrafficOut | None
    endpoints: list[EndpointMetricsOut]


class RouterOut(Out):
    requests_per_second: float | None
    in_flight: int
    connections: int


class PorteroOut(Out):
    cpu_percent: float
    memory_bytes: int
    uptime_s: float
    collect_seconds: float
    series: int
    series_memory_bytes: int
    series_budget_bytes: int


class ScrapeOut(Out):
    service: str
    replica: str
    url: str
    at: float
    ok: bool
    series: int
    dropped: int = Field(description="Series over `metrics.max_series`, not kept.")
    duration_s: float
    error: str | None


class AppMetricOut(Out):
    name: str
    labels: dict[str, str]
    value: float
    kind: Literal["gauge", "counter"]


class SnapshotOut(Out):
    at: float
    interval_s: float
    host: HostOut
    replicas: list[ReplicaMetricsOut]
    services: list[ServiceMetricsOut]
    router: RouterOut | None
    portero: PorteroOut
    scrapes: list[ScrapeOut] = Field(description="The last scrape of each replica whose service names `metrics`.")
    app: list[AppMetricOut] = Field(
        description="The replicas' own metrics, as their last good scrape read them (series: `?name=`)."
    )


class SeriesOut(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix time, value] pairs, oldest first.")


class SeriesQueryOut(BaseModel):
    name: str
    kind: Literal["gauge", "counter"] | None
    since: float
    until: float
    step_s: float
    series: list[SeriesOut]


class AlertOut(BaseModel):
    name: str
    state: Literal["pending", "firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    active_since: str | None
    fired_at: str | None
    fingerprint: str

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        return cls(
            name=alert.rule,
            state=alert.state.value,
            labels=alert.labels,
            annotations=alert.annotations,
            value=alert.value,
            active_since=rfc3339(alert.active_at) if alert.active_at is not None else None,
            fired_at=rfc3339(alert.fired_at) if alert.fired_at is not None else None,
            fingerprint=alert.fingerprint,
        )


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class RulesOut(BaseModel):
    rules: list[AlertRule]


def routes(control: ControlPlane, monitor: Monitor | None) -> APIRouter:
    api = APIRouter(tags=["monitoring"])
    exposition = Exposition(monitor) if monitor is not None else None

    def live() -> Monitor:
        if monitor is None or not monitor.enabled:
            raise Refused(
                "monitoring is disabled (monitoring.enabled: false or MONITORING_ENABLED=false); "
                "enable it in the spec and `portero apply`"
            )
        return monitor

    @api.get(
        "/scalability/monitoring/metrics",
        response_model=SnapshotOut | SeriesQueryOut,
        summary="The latest sample, or one series over time",
    )
    async def metrics(
        name: Annotated[
            str | None, Query(max_length=500, description='A series: `replica_cpu_percent{service="portal"}`.')
        ] = None,
        since: Annotated[
            float | None, Query(description="Unix time, or seconds ago when negative; -300 default.")
        ] = None,
        step: Annotated[float | None, Query(gt=0, le=86_400, description="Seconds between points.")] = None,
        max_points: Annotated[
            int | None, Query(ge=10, le=10_000, description="At most this many points per series: the step grows.")
        ] = None,
    ) -> SnapshotOut | SeriesQueryOut:
        """The latest sample of everything by default; with `name`, that series over time."""
        mon = live()
        return _series(mon, name, since, step, max_points) if name is not None else await _latest(mon)

    @api.get("/scalability/monitoring/alerts", summary="Active alerts: pending and firing")
    async def alerts(
        state: Annotated[Literal["pending", "firing"] | None, Query()] = None,
        rule: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    ) -> AlertsOut:
        """Active alerts: pending (condition holds, `for_s` not over yet) and firing. History: the event log
        (`alert.firing`, `alert.resolved`)."""
        shown = [a for a in live().active() if (state is None or a.state == state) and (rule in (None, a.rule))]
        return AlertsOut(alerts=[AlertOut.of(a) for a in shown])

    @api.get("/scalability/monitoring/rules", summary="The alert rules in force")
    async def alert_rules() -> RulesOut:
        """The rules in force: the built-in ones (with the spec's thresholds) and the spec's own."""
        return RulesOut(rules=live().rules)

    @api.get("/metrics", tags=["monitoring"], response_class=Response, summary="Prometheus text exposition")
    async def prometheus() -> Response:
        """Prometheus text exposition of the latest sample."""
        body = exposition.render() if exposition is not None else b"portero_monitoring_enabled 0\n"
        return Response(body, media_type=CONTENT_TYPE)

    return api


async def _latest(monitor: Monitor) -> SnapshotOut:
    if monitor.snapshot is None:
        try:
            await asyncio.wait_for(monitor.sampled.wait(), FIRST_SAMPLE_WAIT_S)
        except TimeoutError:
            raise Refused("no sample yet: the monitor's first pass has not finished") from None
    return SnapshotOut.model_validate(monitor.snapshot)


def _series(
    monitor: Monitor, selector: str, since: float | None, step: float | None, max_points: int | None = None
) -> SeriesQueryOut:
    try:
        name, match = parse_selector(selector)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    now = monitor.clock()
    start = now - 300 if since is None else (now + since if since < 0 else since)
    if not math.isfinite(start) or start > now:
        raise Refused(f"since={since}: must be in the past (Unix time, or negative seconds ago)")
    if max_points is not None:  # a day at full resolution is more than a chart can show: average into buckets
        step = max(step or 0.0, (now - start) / (max_points - 1))
    store = monitor.store
    if name not in store.by_name:
        raise NotFound("series", name)
    found = store.select(name, match)
    out: list[SeriesOut] = []
    used_step = step or store.fine.step_s
    for series in sorted(found, key=lambda s: s.key):
        used_step, points = store.downsample(series, start, now, step or 0.0, now)
        out.append(SeriesOut(labels=series.labels, points=[(round(t, 3), v) for t, v in points]))
    kind = found[0].kind if found else None
    return SeriesQueryOut(name=name, kind=kind, since=start, until=now, step_s=used_step, series=out)
