"""The FastAPI application, assembled: error handling, auth, then each module's routes (thin handlers over the
control plane), in the order the API document lists them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

import portero
from portero.api import (
    auth,
    autoscaling,
    dashboard,
    deployments,
    errors,
    events,
    loadbalancer,
    logs,
    monitoring,
    replicas,
    routerd,
    services,
    spec,
)
from portero.api import portero as itself
from portero.api.schemas import ErrorResponse
from portero.autoscale.loop import Autoscaler
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.monitor.monitor import Monitor
from portero.tokens import TokenSet

# 408 and 413: the admin server's own request deadline and body cap (api/server.py), on any route.
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 408, 409, 413, 422, 502, 503)
}


def create_app(
    control: ControlPlane,
    request_shutdown: Callable[..., float | None],
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
    for router in (
        itself.routes(control, plane, request_shutdown),  # health and shutdown
        replicas.routes(control),
        services.routes(control, monitor),
        spec.routes(control),
        events.routes(control),
        logs.routes(control),
        loadbalancer.routes(control, plane),
        routerd.routes(control, plane),
        monitoring.routes(control, monitor),
        deployments.routes(control),
        autoscaling.routes(control, autoscaler),
        dashboard.routes(control, plane, monitor, autoscaler),
    ):
        app.include_router(router)
    return app
