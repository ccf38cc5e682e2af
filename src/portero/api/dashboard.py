"""The operator's dashboard: an HTML shell and its static assets, the JSON summary, and the chart series.

`GET /scalability/dashboard` answers the browser's page (no data in it: the page fetches everything with the
operator's token) or, for `Accept: application/json`, the summary of the whole house the seed promises. The
assets are plain ES modules and CSS shipped in the package (`portero/dashboard/`), read once at start: no
build step, and no request leaves for the internet.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

import portero
from portero.api import autoscaling
from portero.api.auth import wants_json
from portero.api.autoscaling import AutoscalerOut
from portero.api.monitoring import AlertOut, SeriesOut, TrafficOut
from portero.api.routerd import CertificateOut
from portero.api.schemas import DeploymentOut, EventOut, ServerOut, ServiceOut
from portero.autoscale.loop import Autoscaler
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.errors import NotFound
from portero.monitor.monitor import Monitor
from portero.monitor.series import SeriesStore
from portero.monitor.window import WINDOW_S

ASSET_NAME = r"^[a-z][a-z0-9-]{0,40}\.(js|css|svg)$"
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
# What the charts draw; one request brings them all, each downsampled to the chart's width.
CHART_SERIES = (
    "service_requests_per_second",
    "service_latency_p95_seconds",
    "service_error_ratio",
    "service_client_error_ratio",
    "service_desired_replicas",
    "service_ready_replicas",
    "replica_cpu_percent",
    "replica_memory_bytes",
)
# Fixed headers of every dashboard answer: only portero's own origin may serve anything to the page.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of `portero/dashboard/`, read once: they are part of the installed package."""
    found: dict[str, Asset] = {}
    for entry in resources.files("portero").joinpath("dashboard").iterdir():
        suffix = entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            found[entry.name] = Asset(body, MEDIA_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return found


class DeploymentsSummary(BaseModel):
    current: DeploymentOut | None = Field(description="The running deployment, else the last one.")
    recent: list[DeploymentOut] = Field(description="Newest first.")


class DashboardOut(BaseModel):
    role: Literal["admin", "viewer"] | None = Field(description="The caller's token's role: the page hides actions.")
    at: float
    version: str
    uptime_s: float
    runtime: str
    monitoring: bool = Field(description="False when monitoring is disabled: no traffic, alerts or series.")
    services: list[ServiceOut]
    traffic: dict[str, TrafficOut | None] = Field(
        description="Per service: the rate of the monitor's last interval, percentiles and error rates of `window_s`."
    )
    window_s: float = Field(description="The window of every percentile and error rate shown (monitor/window.py).")
    endpoints: list[ServerOut] = Field(description="The router's endpoints; empty when the router is disabled.")
    endpoint_traffic: dict[str, TrafficOut] = Field(
        description="Per endpoint address, the monitor's figures over `window_s` (the same definition as `traffic`)."
    )
    alerts: list[AlertOut] = Field(description="Active alerts: firing first, then pending.")
    certificates: list[CertificateOut] = Field(
        description="The router's certificates (router.tls) and their expiry; empty without HTTPS."
    )
    deployments: DeploymentsSummary
    autoscaler: AutoscalerOut
    events: list[EventOut] = Field(description="The most recent events, newest first.")


class ChartsOut(BaseModel):
    since: float
    until: float
    step_s: float
    series: dict[str, list[SeriesOut]] = Field(description="Series name -> one entry per label set.")


def routes(
    control: ControlPlane, plane: DataPlane | None, monitor: Monitor | None, autoscaler: Autoscaler | None
) -> APIRouter:
    api = APIRouter(prefix="/scalability/dashboard", tags=["dashboard"])
    assets = load_assets()

    def answer(asset: Asset, request: Request, *, revalidate: bool = True) -> Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
        if revalidate:  # not the page itself: auth lets only a text/html answer out to a client without a token
            headers["ETag"] = asset.etag
            if request.headers.get("if-none-match") == asset.etag:
                return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @api.get(
        "",
        response_model=DashboardOut,
        responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
        summary="The dashboard page (public), or with Accept: application/json its summary (token)",
    )
    async def dashboard(request: Request) -> DashboardOut | Response:
        """The page for a browser; with `Accept: application/json`, the summary of every service, replica,
        endpoint, alert, deployment, the autoscaler and recent events."""
        if not wants_json(request.headers.get("accept")):  # the same reading as auth's public rule
            return answer(assets["index.html"], request, revalidate=False)
        token = getattr(request.state, "token", None)
        return await summary(control, plane, monitor, autoscaler, token.role if token is not None else None)

    @api.get("/series", summary="The dashboard charts' series, downsampled to max_points each")
    async def series(
        window_s: Annotated[float, Query(ge=60, le=86_400, description="Seconds back from now.")] = 900,
        max_points: Annotated[int, Query(ge=10, le=2000, description="At most this many points per series.")] = 300,
    ) -> ChartsOut:
        """The charts' series over the last `window_s`, each averaged into at most `max_points` buckets."""
        return charts(monitor, window_s, max_points)

    @api.get(
        "/assets/{name}",
        response_class=Response,
        responses={200: {"content": {"text/javascript": {}, "text/css": {}}}},
        summary="A script or stylesheet of the dashboard page (public)",
    )
    async def asset(
        name: Annotated[str, Path(description="A file of the page.", examples=["app.js"], max_length=45)],
        request: Request,
    ) -> Response:
        """The page's scripts and styles (no token needed: there is no data in them)."""
        if not re.fullmatch(ASSET_NAME, name) or name not in assets:
            raise NotFound("asset", name)
        return answer(assets[name], request)

    return api


async def summary(
    control: ControlPlane,
    plane: DataPlane | None,
    monitor: Monitor | None,
    autoscaler: Autoscaler | None,
    role: str | None = None,
) -> DashboardOut:
    now = control.clock()
    live = monitor if monitor is not None and monitor.enabled else None
    snapshot = live.snapshot if live is not None else None
    usage = {r.id: (r.cpu_percent, r.memory_bytes) for r in snapshot.replicas} if snapshot is not None else {}
    services = snapshot.services if snapshot is not None else []
    traffic = {s.name: TrafficOut.model_validate(s.traffic) if s.traffic is not None else None for s in services}
    endpoint_traffic = {e.address: TrafficOut.model_validate(e.traffic) for s in services for e in s.endpoints}
    endpoints = [ServerOut(**e) for e in plane.endpoints()] if plane is not None else []
    recent = [DeploymentOut.model_validate(d) for d in await control.store.get_deployments(None, 10)]
    current = next((d for d in recent if d.state == "running"), recent[0] if recent else None)
    events = await control.store.get_events(limit=50)
    return DashboardOut(
        role=role if role in ("admin", "viewer") else None,
        at=now,
        version=portero.__version__,
        uptime_s=round(now - control.started_at, 1),
        runtime=control.runtime.name,
        monitoring=live is not None,
        services=[ServiceOut.of(view, now, usage, runtime=control.runtime.name) for view in control.services()],
        traffic=traffic,
        window_s=WINDOW_S,
        endpoints=endpoints,
        endpoint_traffic=endpoint_traffic,
        alerts=[AlertOut.of(a) for a in live.active()] if live is not None else [],
        certificates=[CertificateOut(**asdict(c)) for c in plane.tls.samples()]
        if plane is not None and plane.tls is not None
        else [],
        deployments=DeploymentsSummary(current=current, recent=recent),
        autoscaler=autoscaling.summary(control, autoscaler),
        events=sorted((EventOut(**vars(e)) for e in events), key=lambda e: e.at, reverse=True),
    )


def charts(monitor: Monitor | None, window_s: float, max_points: int) -> ChartsOut:
    if monitor is None or not monitor.enabled:
        now = 0.0 if monitor is None else monitor.clock()
        return ChartsOut(since=now - window_s, until=now, step_s=window_s, series={})
    return chart_series(monitor.store, monitor.clock(), window_s, max_points)


def chart_series(store: SeriesStore, now: float, window_s: float, max_points: int) -> ChartsOut:
    """Every chart series over the last `window_s`, averaged (counters: last value) into at most `max_points`
    buckets: a day at the fine ring's resolution is 86,400 points, a chart is a few hundred pixels wide."""
    start = now - window_s
    wanted = window_s / (max_points - 1)  # bucket indexes 0..max_points-1
    used = wanted
    out: dict[str, list[SeriesOut]] = {}
    for name in CHART_SERIES:
        found = []
        for series in sorted(store.select(name), key=lambda s: s.key):
            used, points = store.downsample(series, start, now, wanted, now)
            kept = [(round(t, 3), round(v, 6)) for t, v in points if math.isfinite(v)]
            if kept:
                found.append(SeriesOut(labels=series.labels, points=kept))
        out[name] = found
    return ChartsOut(since=start, until=now, step_s=used, series=out)
