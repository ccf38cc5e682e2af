"""One collection pass: the host and portero (psutil, in a thread), every replica (its runtime's `stats`, all
at once, each with a deadline) and the router (its counters, read in place: no await, so one consistent view)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator

from portero.control import ControlPlane
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
from portero.router.server import Router
from portero.router.service import Stats
from portero.runtimes.base import RuntimeFailure

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, control: ControlPlane, router: Router | None, host: HostSampler) -> None:
        self.control = control
        self.router = router
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
        traffic, endpoints = self.traffic.update(_readings(self.router), now) if self.router else ({}, {})
        samples = []
        for name, record in sorted(self.control.records.items()):
            ready = sum(1 for r in by_service.get(name, []) if r.state is ReplicaState.READY)
            route = self.router.services.get(name) if self.router else None
            shown = [
                EndpointSample(endpoint.key, endpoint.replica_id or None, endpoint.state.value, endpoints[key])
                for endpoint in (route.endpoints.values() if route else [])
                if (key := (name, endpoint.key)) in endpoints
            ]
            samples.append(ServiceSample(name, record.desired, ready, traffic.get(name), shown))
        if self.router is None:
            return samples, None
        rates = [t.requests_per_second for t in traffic.values() if t.requests_per_second is not None]
        router = RouterSample(
            requests_per_second=sum(rates) if rates or not traffic else None,
            in_flight=sum(t.in_flight for t in traffic.values()),
            connections=len(self.router.connections),
        )
        return samples, router


def _readings(router: Router | None) -> Iterator[Reading]:
    if router is None:
        return
    for name, route in router.services.items():
        yield _reading(name, None, None, "router", route.stats)
        for endpoint in route.endpoints.values():
            yield _reading(name, endpoint.key, endpoint.replica_id or None, endpoint.state.value, endpoint.stats)


def _reading(service: str, address: str | None, replica: str | None, state: str, stats: Stats) -> Reading:
    counters, latency = stats.counters, stats.latency
    return Reading(
        service=service,
        address=address,
        replica=replica,
        state=state,
        identity=id(stats),
        requests=counters.requests if address is not None else sum(counters.responses),
        responses=tuple(counters.responses),
        in_flight=counters.in_flight,
        buckets=tuple(latency.counts),
        latency_sum_s=latency.sum,
    )
