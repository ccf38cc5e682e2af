"""Services: their replicas (with the monitor's CPU and memory when it runs), and a scale by hand."""

from __future__ import annotations

from fastapi import APIRouter

from portero.api.params import ServiceName
from portero.api.schemas import ScaleIn, ServiceOut, ServicesOut
from portero.control import ControlPlane
from portero.monitor.monitor import Monitor


def routes(control: ControlPlane, monitor: Monitor | None) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["services"])

    @api.get("/services", summary="List services with their replicas")
    async def list_services() -> ServicesOut:
        snapshot = monitor.snapshot if monitor is not None and monitor.enabled else None
        usage = {r.id: (r.cpu_percent, r.memory_bytes) for r in snapshot.replicas} if snapshot is not None else {}
        now, runtime = control.clock(), control.runtime.name
        return ServicesOut(services=[ServiceOut.of(view, now, usage, runtime=runtime) for view in control.services()])

    @api.post("/services/{name}/scale", summary="Set a service's replica count")
    async def scale(name: ServiceName, body: ScaleIn) -> ServiceOut:
        await control.scale(name, body.replicas)
        view = next(v for v in control.services() if v.name == name)
        return ServiceOut.of(view, control.clock(), runtime=control.runtime.name)

    return api
