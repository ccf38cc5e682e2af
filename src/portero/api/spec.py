"""The spec: apply a changed one (each changed field and how it took effect, the deployments it started); a
refused spec changes nothing."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from portero.api.schemas import AppliedOut, SpecIn
from portero.cluster.local import local
from portero.control import ControlPlane
from portero.spec.loader import parse_spec


def routes(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["spec"])

    @api.put("/spec", summary="Apply a changed spec; a refused one changes nothing")
    async def apply_spec(body: SpecIn, request: Request) -> AppliedOut:
        spec = await asyncio.to_thread(parse_spec, body.yaml, body.source)  # a big spec must not stall traffic
        if getattr(request.app.state, "cluster", None):  # sent through another portero: its ports are its own
            spec = local(spec, control.spec)
        applied = await control.apply(spec, body.source, reason=f"applied from {body.source}")
        return AppliedOut(changes=applied.changes, deployments=[d.id for d in applied.deployments])

    return api
