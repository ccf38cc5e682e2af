"""The seed's load balancer routes: the router's registry, seen and changed through the API.

Every change goes to the routing table (dataplane/table.py), is pushed to the router's workers, and the answer
comes once every worker serves it: what the API says has happened has happened on every worker.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from portero.api.schemas import DrainIn, ServerIn, ServerOut, ServerRef, ServersOut, WeightIn
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.errors import NotFound, Refused
from portero.events import Event
from portero.health.service import takes_requests
from portero.spec.models import NAME_PATTERN
from portero.store.base import ServerRecord


def routes(control: ControlPlane, plane: DataPlane | None) -> APIRouter:
    api = APIRouter(prefix="/scalability/load-balancer", tags=["load balancer"])
    handlers = _Handlers(control, plane)
    api.get("/servers", summary="List the router's endpoints")(handlers.servers)
    api.post("/register", status_code=201, summary="Route to a server portero does not run")(handlers.register)
    api.post("/deregister", summary="Stop routing to a server (it drains first)")(handlers.deregister)
    api.post("/weight", summary="Set a server's weight")(handlers.weight)
    api.post("/drain", summary="Drain a server: no new requests")(handlers.drain)
    api.post("/undrain", summary="Put a draining server back in rotation")(handlers.undrain)
    api.get("/next-server", summary="The endpoint the next request would go to")(handlers.next_server)
    return api


class _Handlers:
    """The routes' handlers, as methods: each is its own function, however many the module has."""

    def __init__(self, control: ControlPlane, plane: DataPlane | None) -> None:
        self.control = control
        self.plane = plane

    def live(self) -> DataPlane:
        if self.plane is None:
            raise Refused("the router is disabled (router.enabled: false in the spec)")
        return self.plane

    def known(self, service: str, address: str | None = None) -> DataPlane:
        data = self.live()
        if service not in data.table.services:
            raise NotFound("service", service)
        if address is not None and data.table.entry(service, address) is None:
            raise NotFound("server", f"{service}/{address}")
        return data

    async def settled(self, service: str, address: str) -> ServerOut:
        data = self.live()
        await data.settle()
        return ServerOut(**data.endpoint(service, address))

    async def note(self, kind: str, service: str, message: str, **data: Any) -> None:
        control = self.control
        await control.supervisor.record(Event(kind, service, message, service, control.clock(), data))

    async def servers(self, service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServersOut:
        """Every endpoint: state, weight, in-flight, requests, faults, errors, latency percentiles, health, as every
        router worker together reports them."""
        data = self.known(service) if service is not None else self.live()
        return ServersOut(servers=[ServerOut(**e) for e in data.endpoints(service)])

    async def register(self, body: ServerIn) -> ServerOut:
        """Route a server portero does not run; kept in the store across restarts."""
        data = self.known(body.service)
        # First: the store may refuse it.
        await self.control.store.put_server(ServerRecord(body.service, body.address, body.weight))
        data.table.register(body.service, body.address, body.weight)
        await self.note("server.registered", body.service, f"{body.address} registered with weight {body.weight}")
        return await self.settled(body.service, body.address)

    async def deregister(self, body: ServerRef) -> ServerOut:
        """Stop routing to a server: it drains (requests in flight finish), then leaves."""
        data = self.known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source != "registered":
            raise Refused(f"{body.address} is not a registered server of {body.service} (it is a {entry.source} one)")
        await self.control.store.delete_server(body.service, body.address)
        data.table.deregister(body.service, body.address, time.monotonic())
        await self.note("server.deregistered", body.service, f"{body.address} deregistered; draining")
        return await self.settled(body.service, body.address)

    async def weight(self, body: WeightIn) -> ServerOut:
        data = self.known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source == "registered":
            await self.control.store.put_server(ServerRecord(body.service, body.address, body.weight))
        else:  # a replica's weight is not stored: the other porteros are told directly
            await self.control.announce({"kind": "server", "op": "weight", **body.model_dump(mode="json")})
        data.table.reweight(body.service, body.address, body.weight)
        await self.note("server.weighted", body.service, f"{body.address} weight set to {body.weight}")
        return await self.settled(body.service, body.address)

    async def drain(self, body: DrainIn) -> ServerOut:
        """No new requests; those in flight may finish until the drain timeout, then are cut. Draining the last
        endpoint that can take requests is an outage, so it is refused unless `force` is set."""
        data = self.known(body.service, body.address)
        others = [e for e in data.table.entries(body.service) if e.address != body.address and takes_requests(e)]
        if not others and not body.force:
            raise Refused(
                f"{body.address} is the last endpoint of {body.service} that takes requests: draining it stops the "
                "service (repeat with force to do it anyway)"
            )
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source == "registered":
            await self.control.store.delete_server(body.service, body.address)  # it leaves once drained
        await self.control.announce({"kind": "server", "op": "drain", **body.model_dump(mode="json")})
        timeout = body.timeout_s if body.timeout_s is not None else data.table.settings.drain_timeout_s
        data.table.drain(body.service, body.address, timeout, time.monotonic())
        await self.note("server.draining", body.service, f"{body.address} draining")
        return await self.settled(body.service, body.address)

    async def undrain(self, body: ServerRef) -> ServerOut:
        """A server drained by hand takes requests again (slow start included)."""
        data = self.known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is None or not entry.draining:
            raise Refused(f"{body.address} of {body.service} is not draining")
        data.table.undrain(body.service, body.address)
        if entry.source == "registered":
            await self.control.store.put_server(ServerRecord(body.service, body.address, entry.weight))
        await self.control.announce({"kind": "server", "op": "undrain", **body.model_dump(mode="json")})
        await self.note("server.undrained", body.service, f"{body.address} back in rotation")
        return await self.settled(body.service, body.address)

    async def next_server(self, service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServerOut:
        """The endpoint the next request would go to, without using its turn."""
        data = self.live()
        name = service or next(iter(data.table.services), None)
        if name is None or name not in data.table.services:
            raise NotFound("service", name or "(none)")
        endpoint = data.next_server(name)
        if endpoint is None:
            raise Refused(f"service {name!r} has no endpoint that can take a request now")
        return ServerOut(**endpoint)
