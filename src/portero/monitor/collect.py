"""One collection pass: the host and portero (psutil, in a thread), every replica (its runtime's `stats`, all
at once, each with a deadline) and the router (the totals its workers reported, read in place: one consistent
view)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from portero.control import ControlPlane
from portero.health.service import condition
from portero.monitor.host import HostSampler
from portero.monitor.snapshot import (
    EndpointSample,
    HostSample,
    ReplicaSample,
    RouterSample,
    ServiceSample,
)
from portero.monitor.traffic import Reading, TrafficBook
from portero.replicas import Replica, ReplicaState
from portero.runtimes.base import RuntimeFailure

if TYPE_CHECKING:
    from portero.dataplane.plane import DataPlane
    from portero.dataplane.report import RouterView, Tally

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, control: ControlPlane, plane: DataPlane | None, host: HostSampler) -> None:
        self.control = control
        self.view = plane.link.view if plane is not None else None
        self.table = plane.table if plane is not None else None
        self.host = host
        self.traffic = TrafficBook()

    async def host_and_self(self, now: float) -> tuple[HostSample, tuple[float, int]]:
        def both() -> tuple[HostSample, tuple[float, int]]:
            return self.host.host(now), self.host.portero()

        return await asyncio.to_thread(both)

    async def replicas(self, now: float, deadline_s: float) -> list[ReplicaSample]:
        replicas = list(self.control.supervisor.replicas)
        measured = await asyncio.gather(*(self._replica(r, now, deadline_s) for r in replicas))
        return list(measured)

    async def _replica(self, replica: Replica, now: float, deadline_s: float) -> ReplicaSample:
        base = ReplicaSample(
            id=replica.id,
            service=replica.service,
            revision=replica.revision,
            state=replica.state.value,
            restarts=replica.restarts,
            uptime_s=round(now - replica.started_at, 1) if replica.running and replica.started_at else None,
            cpu_percent=None,
            memory_bytes=None,
            memory_percent=None,
            processes=None,
        )
        if not replica.running or replica.process is None:
            return base
        try:
            stats = await asyncio.wait_for(self.control.runtime.stats(replica.id, replica.process), deadline_s)
        except (RuntimeFailure, OSError, TimeoutError) as exc:
            return dataclasses.replace(base, error=str(exc) or type(exc).__name__)
        return dataclasses.replace(
            base,
            cpu_percent=stats.cpu_percent,
            memory_bytes=stats.memory_bytes,
            memory_percent=stats.memory_percent,
            processes=stats.processes,
        )

    def services(self, now: float) -> tuple[list[ServiceSample], RouterSample | None]:
        by_service: dict[str, list[Replica]] = {}
        for replica in self.control.supervisor.replicas:
            by_service.setdefault(replica.service, []).append(replica)
        view = self.view
        traffic, endpoints = self.traffic.update(_readings(view), now) if view is not None else ({}, {})
        samples = []
        for name, record in sorted(self.control.records.items()):
            ready = sum(1 for r in by_service.get(name, []) if r.state is ReplicaState.READY)
            shown = [
                EndpointSample(
                    e.address, _gauge(e.gauges, "replica") or None, _gauge(e.gauges, "state"), endpoints[key]
                )
                for e in (view.routed(name) if view is not None else [])
                if (key := (name, e.address)) in endpoints
            ]
            samples.append(ServiceSample(name, record.desired, ready, traffic.get(name), shown, self._unroutable(name)))
        if view is None:
            return samples, None
        rates = [t.requests_per_second for t in traffic.values() if t.requests_per_second is not None]
        router = RouterSample(
            requests_per_second=sum(rates) if rates or not traffic else None,
            in_flight=sum(t.in_flight for t in traffic.values()),
            connections=view.connections,
        )
        return samples, router

    def _unroutable(self, name: str) -> bool | None:
        table = self.table
        if table is None or name not in table.services:
            return None
        spec = table.services[name]
        desired = self.control.records[name].desired if spec.managed else 0
        return condition(desired, 0, table.entries(name), managed=spec.managed).unroutable


def _gauge(gauges: dict[str, object] | None, name: str) -> str:
    return str((gauges or {}).get(name) or "")


def _readings(view: RouterView) -> Iterator[Reading]:
    """The totals of every service and endpoint, those of endpoints that left included (RouterView keeps them):
    their identity never changes, so each pass adds exactly what was counted since the last one."""
    for name, service in view.services.items():
        yield _reading(name, None, None, "router", service.totals, 0)
    for endpoint in view.endpoints.values():
        in_flight = int((endpoint.gauges or {}).get("in_flight", 0)) if endpoint.present else 0
        state = _gauge(endpoint.gauges, "state") if endpoint.present else "gone"
        replica = _gauge(endpoint.gauges, "replica") or None
        yield _reading(endpoint.service, endpoint.address, replica, state, endpoint.totals, in_flight)


def _reading(
    service: str, address: str | None, replica: str | None, state: str, totals: Tally, in_flight: int
) -> Reading:
    return Reading(
        service=service,
        address=address,
        replica=replica,
        state=state,
        identity=0,
        requests=totals.requests if address is not None else totals.answered,
        responses=tuple(totals.responses),
        in_flight=in_flight,
        buckets=tuple(totals.buckets),
        latency_sum_s=totals.latency_sum_s,
        faults=tuple(totals.faults),
        retries=totals.retries,
        ejections=totals.ejections,
    )
