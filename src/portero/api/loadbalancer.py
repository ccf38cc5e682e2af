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
from portero.spec.models import NAME_PATTERN
from portero.store.base import ServerRecord


def routes(control: ControlPlane, plane: DataPlane | None) -> APIRouter:
    api = APIRouter(prefix="/scalability/load-balancer", tags=["load balancer"])

    def live() -> DataPlane:
        if plane is None:
            raise Refused("the router is disabled (router.enabled: false in the spec)")
        return plane

    def known(service: str, address: str | None = None) -> DataPlane:
        data = live()
        if service not in data.table.services:
            raise NotFound("service", service)
        if address is not None and data.table.entry(service, address) is None:
            raise NotFound("server", f"{service}/{address}")
        return data

    async def settled(service: str, address: str) -> ServerOut:
        data = live()
        await data.settle()
        return ServerOut(**data.endpoint(service, address))

    async def note(kind: str, service: str, message: str, **data: Any) -> None:
        await control.supervisor.record(Event(kind, service, message, service, control.clock(), data))

    @api.get("/servers", summary="List the router's endpoints")
    async def servers(service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServersOut:
        """Every endpoint: state, weight, in-flight, requests, faults, errors, latency percentiles, health, as every
        router worker together reports them."""
        data = known(service) if service is not None else live()
        return ServersOut(servers=[ServerOut(**e) for e in data.endpoints(service)])

    @api.post("/register", status_code=201, summary="Route to a server portero does not run")
    async def register(body: ServerIn) -> ServerOut:
        """Route a server portero does not run; kept in the store across restarts."""
        data = known(body.service)
        await control.store.put_server(ServerRecord(body.service, body.address, body.weight))  # first: it may refuse
        data.table.register(body.service, body.address, body.weight)
        await note("server.registered", body.service, f"{body.address} registered with weight {body.weight}")
        return await settled(body.service, body.address)

    @api.post("/deregister", summary="Stop routing to a server (it drains first)")
    async def deregister(body: ServerRef) -> ServerOut:
        """Stop routing to a server: it drains (requests in flight finish), then leaves."""
        data = known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source != "registered":
            raise Refused(f"{body.address} is not a registered server of {body.service} (it is a {entry.source} one)")
        await control.store.delete_server(body.service, body.address)
        data.table.deregister(body.service, body.address, time.monotonic())
        await note("server.deregistered", body.service, f"{body.address} deregistered; draining")
        return await settled(body.service, body.address)

    @api.post("/weight", summary="Set a server's weight")
    async def weight(body: WeightIn) -> ServerOut:
        data = known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source == "registered":
            await control.store.put_server(ServerRecord(body.service, body.address, body.weight))
        else:  # a replica's weight is not stored: the other porteros are told directly
            await control.announce({"kind": "server", "op": "weight", **body.model_dump(mode="json")})
        data.table.reweight(body.service, body.address, body.weight)
        await note("server.weighted", body.service, f"{body.address} weight set to {body.weight}")
        return await settled(body.service, body.address)

    @api.post("/drain", summary="Drain a server: no new requests")
    async def drain(body: DrainIn) -> ServerOut:
        """No new requests; those in flight may finish until the drain timeout, then are cut. Draining the last
        endpoint that can take requests is an outage, so it is refused unless `force` is set."""
        data = known(body.service, body.address)
        others = [
            e for e in data.table.entries(body.service) if e.address != body.address and not e.draining and e.weight > 0
        ]
        if not others and not body.force:
            raise Refused(
                f"{body.address} is the last endpoint of {body.service} that takes requests: draining it stops the "
                "service (repeat with force to do it anyway)"
            )
        entry = data.table.entry(body.service, body.address)
        if entry is not None and entry.source == "registered":
            await control.store.delete_server(body.service, body.address)  # it leaves once drained: not restored
        await control.announce({"kind": "server", "op": "drain", **body.model_dump(mode="json")})
        timeout = body.timeout_s if body.timeout_s is not None else data.table.settings.drain_timeout_s
        data.table.drain(body.service, body.address, timeout, time.monotonic())
        await note("server.draining", body.service, f"{body.address} draining")
        return await settled(body.service, body.address)

    @api.post("/undrain", summary="Put a draining server back in rotation")
    async def undrain(body: ServerRef) -> ServerOut:
        """A server drained by hand takes requests again (slow start included)."""
        data = known(body.service, body.address)
        entry = data.table.entry(body.service, body.address)
        if entry is None or not entry.draining:
            raise Refused(f"{body.address} of {body.service} is not draining")
        data.table.undrain(body.service, body.address)
        if entry.source == "registered":
            await control.store.put_server(ServerRecord(body.service, body.address, entry.weight))
        await control.announce({"kind": "server", "op": "undrain", **body.model_dump(mode="json")})
        await note("server.undrained", body.service, f"{body.address} back in rotation")
        return await settled(body.service, body.address)

    @api.get("/next-server", summary="The endpoint the next request would go to")
    async def next_server(service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServerOut:
        """The endpoint the next request would go to, without using its turn."""
        data = live()
        name = service or next(iter(data.table.services), None)
        if name is None or name not in data.table.services:
            raise NotFound("service", name or "(none)")
        endpoint = data.next_server(name)
        if endpoint is None:
            raise Refused(f"service {name!r} has no endpoint that can take a request now")
        return ServerOut(**endpoint)

    return api
