"""The event log: what portero did and why, newest last."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from portero.api.schemas import EventOut, EventsOut
from portero.control import ControlPlane
from portero.spec.models import NAME_PATTERN


def routes(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["events"])

    @api.get("/events", summary="Read the event log")
    async def events(
        since: Annotated[float | None, Query(ge=0, description="Unix time.")] = None,
        service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventsOut:
        found = await control.store.get_events(since=since, service=service, limit=limit)
        return EventsOut(events=[EventOut(**vars(e)) for e in found])

    return api
