"""portero itself: its health (public: a load balancer or a probe asks it without a token) and its shutdown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request

import portero
from portero.api import cluster
from portero.api.schemas import Accepted, ClusterOut, HealthOut, ServiceHealth
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.health.service import condition
from portero.replicas import ReplicaState


def routes(control: ControlPlane, plane: DataPlane | None, request_shutdown: Callable[..., float | None]) -> APIRouter:
    api = APIRouter(prefix="/scalability")

    @api.get("/health", tags=["health"], summary="portero's health and each service's ready replicas (public)")
    async def health(request: Request) -> HealthOut:
        election = getattr(request.app.state, "cluster", None)
        return _health(control, plane, cluster.view(election) if election else None)

    @api.post("/shutdown", tags=["portero"], status_code=202, summary="Stop every replica gracefully, then portero")
    async def shutdown(
        *,
        keep_running: Annotated[
            bool, Query(description="Stop portero only: replicas and router keep serving for the next portero.")
        ] = False,
    ) -> Accepted:
        within = request_shutdown(keep_running=keep_running)
        return Accepted(status="stopping", stop_within_s=round(within, 1) if within is not None else None)

    return api


def _health(control: ControlPlane, plane: DataPlane | None, cluster_view: ClusterOut | None) -> HealthOut:
    """Degraded when a service has fewer replicas ready than desired, or none of its endpoints takes requests."""
    services = {}
    for view in control.services():
        desired = view.record.desired if view.spec.managed else 0
        ready = sum(1 for r in view.replicas if r.state is ReplicaState.READY)
        entries = plane.table.entries(view.name) if plane is not None and view.name in plane.table.services else None
        state = condition(desired, ready, entries, managed=view.spec.managed)
        services[view.name] = ServiceHealth(
            desired=desired, ready=ready, routable=state.routable, problems=state.problems()
        )
    return HealthOut(
        status="degraded" if any(s.problems for s in services.values()) else "ok",
        version=portero.__version__,
        uptime_s=round(control.clock() - control.started_at, 1),
        runtime=control.runtime.name,
        services=services,
        cluster=cluster_view,
    )
