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

    def sync(self, replicas: list[Replica]) -> None:
        ready: dict[str, list[ReplicaEndpoint]] = {name: [] for name in self.router.services}
        for replica in replicas:
            if replica.state is ReplicaState.READY and replica.process is not None and replica.service in ready:
                process = replica.process
                ready[replica.service].append(ReplicaEndpoint(replica.id, process.host, process.port))
        for service, endpoints in ready.items():
            self.router.sync_replicas(service, endpoints)

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
