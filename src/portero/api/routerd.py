"""The router's processes through the API: what runs (parent, workers, the snapshot each serves) and a hitless
restart of them."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from portero.control import ControlPlane
from portero.dataplane.build import BUILD
from portero.dataplane.link import Hello, RouterUnavailable
from portero.dataplane.plane import DataPlane
from portero.errors import Refused
from portero.events import Event


class WorkerOut(BaseModel):
    number: int
    pid: int
    version: int = Field(description="The snapshot version it serves.")


class RouterProcessesOut(BaseModel):
    pid: int = Field(description="The router's parent process.")
    build: str = Field(description="The router code it runs (portero's version and a digest of its sources).")
    control_build: str = Field(description="This control plane's; a restart makes the router run it.")
    adopted: bool = Field(description="Found running when this portero started (it outlived the last one).")
    workers: list[WorkerOut]
    spare: list[int] = Field(description="Spare workers (loaded, not accepting): one takes a dead worker's place.")
    listeners: list[str]
    snapshot: int = Field(description="The latest snapshot version the control plane pushed.")
    applied: int = Field(description="The newest version every worker serves.")
    push_p99_s: float | None = Field(description="Over the last 1,000 pushes: seconds until every worker served it.")
    pushes: list[tuple[float, float]] = Field(
        description="The last 200 pushes: (Unix time, seconds until every worker served it)."
    )
    error: str | None = Field(description="The last snapshot the router refused, and why.")


def routes(control: ControlPlane, plane: DataPlane | None) -> APIRouter:
    api = APIRouter(prefix="/scalability/router", tags=["router"])

    def live() -> DataPlane:
        if plane is None:
            raise Refused("the router is disabled (router.enabled: false in the spec)")
        return plane

    def out(data: DataPlane, hello: Hello | None) -> RouterProcessesOut:
        if hello is None:
            raise Refused("the router does not answer (it is being started again)")
        times = sorted(seconds for _, seconds in data.push_times)
        return RouterProcessesOut(
            pid=hello.pid,
            build=hello.build,
            control_build=BUILD,
            adopted=data.link.adopted,
            workers=[WorkerOut(**w) for w in hello.workers],
            spare=list(hello.spare),
            listeners=hello.listeners,
            snapshot=data.table.version,
            applied=data.link.applied,
            push_p99_s=round(times[min(len(times) - 1, int(0.99 * len(times)))], 4) if times else None,
            pushes=[(round(at, 3), round(seconds, 5)) for at, seconds in list(data.push_times)[-200:]],
            error=data.link.error,
        )

    @api.get("", summary="The router's processes")
    async def processes() -> RouterProcessesOut:
        data = live()
        await data.link.refresh()
        return out(data, data.link.hello)

    @api.post("/restart", summary="Restart the router without refusing a connection")
    async def restart() -> RouterProcessesOut:
        """New workers (and a new parent program: an upgraded portero's) take the listening sockets over before the
        old ones stop accepting; the old ones finish their requests and close their connections cleanly."""
        data = live()
        try:
            hello = await data.link.restart()
        except RouterUnavailable as exc:
            raise Refused(str(exc)) from exc
        message = f"router restarted: pid {hello.pid}, workers {', '.join(str(w['pid']) for w in hello.workers)}"
        await control.supervisor.record(Event("router.restarted", "router", message, at=control.clock()))
        return out(data, hello)

    return api
