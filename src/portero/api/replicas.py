"""Replicas (the seed's "containers"): list, hold stopped, start again, measure."""

from __future__ import annotations

from fastapi import APIRouter

from portero.api.params import ReplicaId
from portero.api.schemas import ContainersOut, ReplicaOut, StatsOut
from portero.control import ControlPlane
from portero.errors import NotFound, Refused
from portero.replicas import Replica


def routes(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["containers"])

    def found(replica_id: str, replica: Replica | None) -> ReplicaOut:
        if replica is None:
            raise NotFound("replica", replica_id)
        return ReplicaOut.of(replica, control.clock())

    @api.get("/containers/list", summary="List every replica")
    async def list_containers() -> ContainersOut:
        now = control.clock()
        return ContainersOut(containers=[ReplicaOut.of(r, now) for r in control.supervisor.replicas])

    @api.post("/containers/{replica_id}/stop", summary="Stop a replica and hold it stopped")
    async def stop_container(replica_id: ReplicaId) -> ReplicaOut:
        return found(replica_id, await control.supervisor.hold(replica_id))

    @api.post("/containers/{replica_id}/start", summary="Start a held replica again")
    async def start_container(replica_id: ReplicaId) -> ReplicaOut:
        return found(replica_id, await control.supervisor.release(replica_id))

    @api.get("/containers/{replica_id}/stats", summary="CPU, memory and processes of a replica")
    async def container_stats(replica_id: ReplicaId) -> StatsOut:
        return await _stats(control, replica_id)

    return api


async def _stats(control: ControlPlane, replica_id: str) -> StatsOut:
    replica = control.replica(replica_id)
    if replica.process is None or not replica.running:
        raise Refused(f"replica {replica_id} is {replica.state.value}: no process to measure")
    stats = await control.runtime.stats(replica.id, replica.process)
    now = control.clock()
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
        uptime_s=round(now - (replica.started_at or now), 1),
        restarts=replica.restarts,
    )
