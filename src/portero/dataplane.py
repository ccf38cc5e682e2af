"""Wires the router to the control plane: ready replicas become endpoints, a replica drains before it is
stopped, and servers registered by hand live in the store so that they survive a restart."""

from __future__ import annotations

import asyncio
import logging

from portero.control import ControlPlane
from portero.replicas import Replica, ReplicaState
from portero.router.server import ReplicaEndpoint, Router

log = logging.getLogger(__name__)


class DataPlane:
    def __init__(self, control: ControlPlane, router: Router) -> None:
        self.control = control
        self.router = router

    async def attach(self) -> None:
        """Before the supervisor adopts or starts anything: configure routes and restore registrations."""
        control, router = self.control, self.router
        router.apply(control.spec.router, control.spec.services)
        for server in await control.store.get_servers():
            if server.service in router.services:
                router.register(server.service, server.address, server.weight)
        control.supervisor.observers.append(self.sync)
        control.supervisor.drain = self.drain
        control.on_applied.append(lambda spec: router.apply(spec.router, spec.services))

    def sync(self, replicas: list[Replica] | None = None) -> None:
        replicas = self.control.supervisor.replicas if replicas is None else replicas
        ready: dict[str, list[Replica]] = {name: [] for name in self.router.services}
        for replica in replicas:
            if replica.state is ReplicaState.READY and replica.process is not None and replica.service in ready:
                ready[replica.service].append(replica)
        deployer = self.control.deployer
        for service, members in ready.items():
            split = self.control.traffic.get(service)
            record = self.control.records.get(service)
            if split is None and record is not None and not (deployer is not None and service in deployer.active):
                split = {record.revision: 1.0}  # outside a deployment only the serving revision gets requests
            self.router.sync_replicas(service, [_endpoint(r, members, split) for r in members])

    async def drain(self, replica: Replica) -> None:
        if replica.process is None or replica.service not in self.router.services:
            return
        address = f"{replica.process.host}:{replica.process.port}"
        try:
            self.router.drain(replica.service, address)
        except LookupError:
            return  # never routed (it was not ready yet)
        timeout = self.router.settings.drain_timeout_s
        try:
            await asyncio.wait_for(self.router.drained(replica.service, address), timeout + 1)
        except TimeoutError:
            log.warning("replica %s still had requests after %.0f s of draining", replica.id, timeout)


WEIGHT_SCALE = 1000  # a revision's traffic share is spread over its ready replicas in these units


def _endpoint(replica: Replica, members: list[Replica], split: dict[int, float] | None) -> ReplicaEndpoint:
    """With a traffic split (a deployment in progress), each revision's share is divided among its replicas."""
    assert replica.process is not None
    weight = None
    if split is not None:
        share = split.get(replica.revision, 0.0)
        peers = sum(1 for r in members if r.revision == replica.revision)
        weight = round(share * WEIGHT_SCALE / peers)
    return ReplicaEndpoint(replica.id, replica.process.host, replica.process.port, weight)
