"""Deployments: deploy a new revision, follow it, roll back; revisions of a service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from portero.api.params import DeploymentId, ServiceName
from portero.api.schemas import DeployIn, DeploymentOut, DeploymentsOut, RevisionOut, RevisionsOut, RollbackIn
from portero.control import ControlPlane
from portero.deploy.model import Deployment
from portero.errors import NotFound
from portero.spec.models import NAME_PATTERN


def routes(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["deployments"])

    def out(d: Deployment | dict[str, object]) -> DeploymentOut:
        return DeploymentOut.model_validate(d.to_dict() if isinstance(d, Deployment) else d)

    @api.post("/deploy", status_code=202, summary="Deploy a new revision")
    async def deploy(body: DeployIn) -> DeploymentOut:
        """Start a deployment of a new revision (the serving one with these changes); follow it by its id."""
        d = await control.deploy(
            body.service, version=body.version, image=body.image, env=body.env, strategy=body.strategy, trigger="api"
        )
        return out(d)

    @api.post("/rollback", status_code=202, summary="Roll back to a kept revision")
    async def rollback(body: RollbackIn) -> DeploymentOut:
        """Go back to a kept revision (the previous one by default); recorded as a deployment itself."""
        return out(await control.rollback(body.service, body.revision, trigger="api"))

    @api.post("/deployments/{deployment_id}/abort", summary="Abort a running deployment")
    async def abort(deployment_id: DeploymentId, request: Request) -> DeploymentOut:
        """Back to the serving revision at once: all traffic to it, the new replicas stopped. The record says who
        asked (the token's name and id). 409 when the deployment has ended already."""
        return out(await control.abort(deployment_id, asked_by(request)))

    @api.get("/deployments", summary="List deployments, newest first")
    async def deployments(
        service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> DeploymentsOut:
        found = await control.store.get_deployments(service, limit)
        return DeploymentsOut(deployments=[out(d) for d in found])

    @api.get("/deployments/{deployment_id}", summary="One deployment with its steps")
    async def deployment(deployment_id: DeploymentId) -> DeploymentOut:
        for d in await control.store.get_deployments(None, 200):
            if d["id"] == deployment_id:
                return out(d)
        raise NotFound("deployment", deployment_id)

    @api.get("/services/{name}/revisions", summary="A service's kept revisions")
    async def revisions(name: ServiceName) -> RevisionsOut:
        control.service_spec(name)
        serving = control.records[name].revision if name in control.records else None
        return RevisionsOut(
            revisions=[
                RevisionOut(
                    service=r.service,
                    number=r.number,
                    digest=r.digest,
                    created_at=r.created_at,
                    reason=r.reason,
                    serving=r.number == serving,
                    version=r.template.get("version"),
                )
                for r in await control.store.get_revisions(name)
            ]
        )

    return api


def asked_by(request: Request) -> str:
    """Who sent the request, as records name it: the token's name and id."""
    token = getattr(request.state, "token", None)
    return f"token {token.name} ({token.id})" if token is not None else "the API"
