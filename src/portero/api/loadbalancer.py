"""The seed's load balancer routes: the router's registry, seen and changed through the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from portero.api.schemas import DrainIn, ServerIn, ServerOut, ServerRef, ServersOut, WeightIn
from portero.control import ControlPlane, NotFound, Refused
from portero.events import Event
from portero.router.server import Router
from portero.router.service import Endpoint
from portero.spec.models import NAME_PATTERN
from portero.store.base import ServerRecord


def routes(control: ControlPlane, router: Router | None) -> APIRouter:
    api = APIRouter(prefix="/scalability/load-balancer", tags=["load balancer"])

    def live() -> Router:
        if router is None:
            raise Refused("the router is disabled (router.enabled: false in the spec)")
        return router

    def found(service: str, address: str) -> Endpoint:
        try:
            return live().endpoint(service, address)
        except LookupError as exc:
            raise NotFound("server", f"{service}/{address}") from exc

    def out(endpoint: Endpoint) -> ServerOut:
        return ServerOut(**endpoint.snapshot(live().now()))

    async def note(kind: str, service: str, message: str, **data: Any) -> None:
        await control.supervisor.record(Event(kind, service, message, service, control.clock(), data))

    @api.get("/servers", summary="List the router's endpoints")
    async def servers(service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServersOut:
        """Every endpoint: state, weight, in-flight, requests, errors, latency percentiles, health."""
        rt = live()
        if service is not None and service not in rt.services:
            raise NotFound("service", service)
        chosen = [rt.services[service]] if service else list(rt.services.values())
        return ServersOut(servers=[out(e) for s in chosen for e in s.endpoints.values()])

    @api.post("/register", status_code=201, summary="Route to a server portero does not run")
    async def register(body: ServerIn) -> ServerOut:
        """Route a server portero does not run; kept in the store across restarts."""
        if body.service not in live().services:
            raise NotFound("service", body.service)
        await control.store.put_server(ServerRecord(body.service, body.address, body.weight))  # first: it may refuse
        endpoint = live().register(body.service, body.address, body.weight)
        await note("server.registered", body.service, f"{body.address} registered with weight {body.weight}")
        return out(endpoint)

    @api.post("/deregister", summary="Stop routing to a server (it drains first)")
    async def deregister(body: ServerRef) -> ServerOut:
        """Stop routing to a server: it drains (requests in flight finish), then leaves."""
        endpoint = found(body.service, body.address)
        await control.store.delete_server(body.service, body.address)
        live().deregister(body.service, body.address)
        await note("server.deregistered", body.service, f"{body.address} deregistered; draining")
        return out(endpoint)

    @api.post("/weight", summary="Set a server's weight")
    async def weight(body: WeightIn) -> ServerOut:
        endpoint = found(body.service, body.address)
        if endpoint.source == "registered":
            await control.store.put_server(ServerRecord(body.service, body.address, body.weight))
        else:  # a replica's weight is not stored: the other porteros are told directly
            await control.announce({"kind": "server", "op": "weight", **body.model_dump(mode="json")})
        live().set_weight(body.service, body.address, body.weight)
        await note("server.weighted", body.service, f"{body.address} weight set to {body.weight}")
        return out(endpoint)

    @api.post("/drain", summary="Drain a server: no new requests")
    async def drain(body: DrainIn) -> ServerOut:
        """No new requests; those in flight may finish until the drain timeout, then are cut."""
        if found(body.service, body.address).source == "registered":
            await control.store.delete_server(body.service, body.address)  # it leaves once drained: not restored
        await control.announce({"kind": "server", "op": "drain", **body.model_dump(mode="json")})
        endpoint = live().drain(body.service, body.address, body.timeout_s)
        await note("server.draining", body.service, f"{body.address} draining")
        return out(endpoint)

    @api.get("/next-server", summary="The endpoint the next request would go to")
    async def next_server(service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> ServerOut:
        """The endpoint the next request would go to, without using its turn."""
        rt = live()
        name = service or rt.default_service
        if name is None or name not in rt.services:
            raise NotFound("service", name or "(none)")
        endpoint = rt.services[name].peek(rt.now())
        if endpoint is None:
            raise Refused(f"service {name!r} has no endpoint that can take a request now")
        return out(endpoint)

    return api
