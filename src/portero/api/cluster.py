"""The API of a portero among several: who leads, and writes to the controllers forwarded to the leader.

A follower answers reads itself (its view is the store's) and takes registry changes itself (they are shared
through Redis). A request that the controllers must carry out (scale, apply a spec, deploy, stop a replica)
is forwarded to the leader's admin API, so it is done once, by the one portero that acts; during a handover
(nobody leads for up to `store.lease_s`) it is refused with 503 and Retry-After rather than queued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI, Request, Response

from portero.api.errors import error
from portero.api.schemas import ClusterOut
from portero.cluster.leader import Election

FORWARDED = (
    "/scalability/containers/",
    "/scalability/services/",
    "/scalability/spec",
    "/scalability/deploy",
    "/scalability/rollback",
)
FORWARDED_BY = "x-portero-forwarded-by"
PASSED_HEADERS = ("content-type", "authorization", "accept")
FORWARD_TIMEOUT_S = 60.0  # a spec whose images build takes a while


def view(election: Election) -> ClusterOut:
    leader = election.leader
    token = election.lease.token if election.leading else None
    return ClusterOut(
        instance=election.identity,
        role="leader" if election.leading else "follower",
        leader=str(leader["id"]) if leader["id"] is not None else None,
        leader_url=str(leader["url"]) if leader["url"] is not None else None,
        fencing_token=token,
        store_up=election.store.up,
        pending_events=election.store.pending_events,
    )


def install(app: FastAPI, election: Election) -> None:
    app.state.cluster = election
    client = httpx.AsyncClient(trust_env=False, timeout=FORWARD_TIMEOUT_S)

    @app.get("/scalability/cluster", tags=["health"])
    async def cluster() -> ClusterOut:
        """This portero's role, who leads, and whether Redis answers."""
        return view(election)

    @app.middleware("http")
    async def forward(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if request.method in ("GET", "HEAD", "OPTIONS") or not path.startswith(FORWARDED) or election.leading:
            return await call_next(request)
        leader = election.leader
        url = leader["url"]
        if url is None or leader["id"] == election.identity or request.headers.get(FORWARDED_BY):
            return error(
                503,
                "no portero leads right now (a handover takes up to store.lease_s); nothing was changed, retry",
                headers={"Retry-After": "1"},
            )
        headers = {k: v for k, v in request.headers.items() if k in PASSED_HEADERS}
        headers[FORWARDED_BY] = election.identity
        target = f"{url}{path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            answer = await client.request(request.method, target, content=await request.body(), headers=headers)
        except httpx.HTTPError as exc:
            return error(
                503,
                f"the leader at {url} did not answer ({type(exc).__name__}); retry (the same request again is safe)",
                headers={"Retry-After": "1"},
            )
        passed = {"x-portero-leader": str(url)}
        if "retry-after" in answer.headers:
            passed["retry-after"] = answer.headers["retry-after"]
        elif answer.status_code == 503:  # the leader stopping (its server's own 503), say: a retry is safe
            passed["retry-after"] = "1"
        media = answer.headers.get("content-type")
        return Response(answer.content, answer.status_code, headers=passed, media_type=media)
