"""Replica output: read (newest `limit` lines) or followed as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import TypeAdapter

from portero import logs, lowpriority
from portero.api.params import REPLICA_ID
from portero.api.schemas import LogsOut
from portero.control import ControlPlane
from portero.spec.models import NAME_PATTERN


def routes(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["logs"])

    @api.get("/logs", response_model=LogsOut, summary="Read or follow (server-sent events) replica output")
    async def get_logs(
        *,
        service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        replica: Annotated[str | None, Query(pattern=REPLICA_ID)] = None,
        since: Annotated[float | None, Query(description="Unix time, or seconds ago when negative.")] = None,
        grep: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
        follow: bool = False,
        health: Annotated[bool, Query(description="Include the lines of portero's health checks.")] = False,
    ) -> Response:
        sources = _sources(control, service, replica)
        start = control.clock() + since if since is not None and since < 0 else since
        # Taken from here on: nothing written meanwhile is lost.
        following = logs.follow(sources, grep, health=health) if follow else None
        # Read and encoded in a low-priority thread: a big read waits for traffic, and traffic never for it.
        if following is None:
            body = await lowpriority.run(lambda: _encoded(logs.read(sources(), start, grep, limit, health=health)))
            return Response(body, media_type="application/json")
        found = await lowpriority.run(lambda: logs.read(sources(), start, grep, limit, health=health))
        return StreamingResponse(_sse(found, following), media_type="text/event-stream")

    return api


def _sources(control: ControlPlane, service: str | None, replica: str | None) -> Callable[[], list[logs.LogSource]]:
    """The replicas asked for (each name checked: an unknown one is a 404), as a function: asked again while
    following, so that new replicas join the stream."""
    if service is not None:
        control.service_spec(service)
    if replica is not None:
        control.replica(replica)

    def sources() -> list[logs.LogSource]:
        return [
            logs.LogSource(r.service, r.id, control.runtime.log_path(r.id))
            for r in control.supervisor.replicas
            if (service is None or r.service == service) and (replica is None or r.id == replica)
        ]

    return sources


_LINES = TypeAdapter(list[logs.LogLine])


def _encoded(found: list[logs.LogLine]) -> bytes:
    """LogsOut's JSON, from the dataclasses as they are: 10,000 lines in 5 ms (29 through LogLineOut models)."""
    return b'{"lines":' + _LINES.dump_json(found) + b"}"


async def _sse(backlog: list[logs.LogLine], following: AsyncIterator[logs.LogLine]) -> AsyncIterator[str]:
    # Starlette cancels this generator when the client goes away.
    for line in backlog:
        yield f"data: {json.dumps(vars(line))}\n\n"  # ASCII: no "\x85" or "\u2028" for a client to split on
    async for new in following:
        yield f"data: {json.dumps(vars(new))}\n\n"
