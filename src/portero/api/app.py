"""The FastAPI application: thin handlers over the control plane."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import StreamingResponse

import portero
from portero import logs
from portero.api import auth, autoscaling, cluster, dashboard, deployments, errors, loadbalancer, routerd
from portero.api.monitoring import routes as monitoring_routes
from portero.api.params import REPLICA_ID, ReplicaId, ServiceName
from portero.api.schemas import (
    Accepted,
    AppliedOut,
    ContainersOut,
    ErrorResponse,
    EventOut,
    EventsOut,
    HealthOut,
    LogLineOut,
    LogsOut,
    ReplicaOut,
    ScaleIn,
    ServiceHealth,
    ServiceOut,
    ServicesOut,
    SpecIn,
    StatsOut,
)
from portero.autoscale.loop import Autoscaler
from portero.cluster.local import local
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.errors import NotFound, Refused
from portero.monitor.monitor import Monitor
from portero.replicas import ReplicaState
from portero.spec.loader import parse_spec
from portero.spec.models import NAME_PATTERN
from portero.tokens import TokenSet

SERVICE_NAME = NAME_PATTERN
ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 422, 502, 503)}


def create_app(
    control: ControlPlane,
    request_shutdown: Callable[..., None],
    plane: DataPlane | None = None,
    monitor: Monitor | None = None,
    autoscaler: Autoscaler | None = None,
    *,
    tokens: TokenSet,
) -> FastAPI:
    app = FastAPI(
        title="portero",
        version=portero.__version__,
        description="Management API of portero: replicas, services, spec, events and logs.",
        responses=ERRORS,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN and could not send a token: use /openapi.json
        redoc_url=None,
    )
    app.state.control = control
    errors.install(app)
    auth.install(app, tokens)  # before any route: every request, even to a path that is not one, is checked
    api = APIRouter(prefix="/scalability")

    def now() -> float:
        return control.clock()

    @api.get("/health", tags=["health"], summary="portero's health and each service's ready replicas (public)")
    async def health() -> HealthOut:
        services = {
            view.name: ServiceHealth(
                desired=view.record.desired if view.spec.managed else 0,
                ready=sum(1 for r in view.replicas if r.state is ReplicaState.READY),
            )
            for view in control.services()
        }
        degraded = any(s.ready < s.desired for s in services.values())
        return HealthOut(
            status="degraded" if degraded else "ok",
            version=portero.__version__,
            uptime_s=round(now() - control.started_at, 1),
            runtime=control.runtime.name,
            services=services,
            cluster=cluster.view(app.state.cluster) if getattr(app.state, "cluster", None) else None,
        )

    @api.get("/containers/list", tags=["containers"], summary="List every replica")
    async def list_containers() -> ContainersOut:
        return ContainersOut(containers=[ReplicaOut.of(r, now()) for r in control.supervisor.replicas])

    @api.post("/containers/{replica_id}/stop", tags=["containers"], summary="Stop a replica and hold it stopped")
    async def stop_container(replica_id: ReplicaId) -> ReplicaOut:
        replica = await control.supervisor.hold(replica_id)
        if replica is None:
            raise NotFound("replica", replica_id)
        return ReplicaOut.of(replica, now())

    @api.post("/containers/{replica_id}/start", tags=["containers"], summary="Start a held replica again")
    async def start_container(replica_id: ReplicaId) -> ReplicaOut:
        replica = await control.supervisor.release(replica_id)
        if replica is None:
            raise NotFound("replica", replica_id)
        return ReplicaOut.of(replica, now())

    @api.get("/containers/{replica_id}/stats", tags=["containers"], summary="CPU, memory and processes of a replica")
    async def container_stats(replica_id: ReplicaId) -> StatsOut:
        replica = control.replica(replica_id)
        if replica.process is None or not replica.running:
            raise Refused(f"replica {replica_id} is {replica.state.value}: no process to measure")
        stats = await control.runtime.stats(replica.id, replica.process)
        return StatsOut(
            id=replica.id,
            service=replica.service,
            state=replica.state.value,
            pid=replica.process.pid,
            app_pid=stats.app_pid,
            cpu_percent=stats.cpu_percent,
            memory_bytes=stats.memory_bytes,
            memory_percent=stats.memory_percent,
            processes=stats.processes,
            uptime_s=round(now() - (replica.started_at or now()), 1),
            restarts=replica.restarts,
        )

    @api.get("/services", tags=["services"], summary="List services with their replicas")
    async def list_services() -> ServicesOut:
        snapshot = monitor.snapshot if monitor is not None and monitor.enabled else None
        usage = {r.id: (r.cpu_percent, r.memory_bytes) for r in snapshot.replicas} if snapshot is not None else {}
        return ServicesOut(
            services=[ServiceOut.of(view, now(), usage, runtime=control.runtime.name) for view in control.services()]
        )

    @api.post("/services/{name}/scale", tags=["services"], summary="Set a service's replica count")
    async def scale(name: ServiceName, body: ScaleIn) -> ServiceOut:
        await control.scale(name, body.replicas)
        view = next(v for v in control.services() if v.name == name)
        return ServiceOut.of(view, now(), runtime=control.runtime.name)

    @api.put("/spec", tags=["spec"], summary="Apply a changed spec; a refused one changes nothing")
    async def apply_spec(body: SpecIn) -> AppliedOut:
        spec = await asyncio.to_thread(parse_spec, body.yaml, body.source)  # a big spec must not stall traffic
        if getattr(app.state, "cluster", None):  # sent through another portero: its ports are its own
            spec = local(spec, control.spec)
        applied = await control.apply(spec, body.source, reason=f"applied from {body.source}")
        return AppliedOut(changes=applied.changes, deployments=[d.id for d in applied.deployments])

    @api.get("/events", tags=["events"], summary="Read the event log")
    async def events(
        since: Annotated[float | None, Query(ge=0, description="Unix time.")] = None,
        service: Annotated[str | None, Query(pattern=SERVICE_NAME)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventsOut:
        found = await control.store.get_events(since=since, service=service, limit=limit)
        return EventsOut(events=[EventOut(**vars(e)) for e in found])

    @api.get(
        "/logs", tags=["logs"], response_model=LogsOut, summary="Read or follow (server-sent events) replica output"
    )
    async def get_logs(
        service: Annotated[str | None, Query(pattern=SERVICE_NAME)] = None,
        replica: Annotated[str | None, Query(pattern=REPLICA_ID)] = None,
        since: Annotated[float | None, Query(description="Unix time, or seconds ago when negative.")] = None,
        grep: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
        follow: bool = False,
        health: Annotated[bool, Query(description="Include the lines of portero's health checks.")] = False,
    ) -> LogsOut | StreamingResponse:
        if service is not None:
            control.service_spec(service)
        if replica is not None:
            control.replica(replica)

        def sources() -> list[logs.LogSource]:  # asked again while following: new replicas join the stream
            return [
                logs.LogSource(r.service, r.id, control.runtime.log_path(r.id))
                for r in control.supervisor.replicas
                if (service is None or r.service == service) and (replica is None or r.id == replica)
            ]

        start = now() + since if since is not None and since < 0 else since
        # Taken from here on: nothing written meanwhile is lost.
        following = logs.follow(sources, grep, health=health) if follow else None
        # Files are read in a thread, off the event loop.
        found = await asyncio.to_thread(lambda: logs.read(sources(), start, grep, limit, health=health))
        backlog = [LogLineOut(**vars(line)) for line in found]
        if following is None:
            return LogsOut(lines=backlog)
        return StreamingResponse(_sse(backlog, following), media_type="text/event-stream")

    @api.post("/shutdown", tags=["portero"], status_code=202, summary="Stop every replica gracefully, then portero")
    async def shutdown(
        keep_running: Annotated[
            bool, Query(description="Stop portero only: replicas and router keep serving for the next portero.")
        ] = False,
    ) -> Accepted:
        request_shutdown(keep_running=keep_running)
        return Accepted(status="stopping")

    app.include_router(api)
    app.include_router(loadbalancer.routes(control, plane))
    app.include_router(routerd.routes(control, plane))
    app.include_router(monitoring_routes(control, monitor))
    app.include_router(deployments.routes(control))
    app.include_router(autoscaling.routes(control, autoscaler))
    app.include_router(dashboard.routes(control, plane, monitor, autoscaler))
    return app


async def _sse(backlog: list[LogLineOut], following: AsyncIterator[logs.LogLine]) -> AsyncIterator[str]:
    # Starlette cancels this generator when the client goes away.
    for line in backlog:
        yield f"data: {json.dumps(line.model_dump())}\n\n"  # ASCII: no "\x85" or "\u2028" for a client to split on
    async for new in following:
        yield f"data: {json.dumps(vars(new))}\n\n"
