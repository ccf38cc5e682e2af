"""Every 503 of the management API says when to retry, whatever raised it."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from starlette.exceptions import HTTPException

from portero.api import errors
from portero.runtimes.base import RuntimeFailure


def app() -> FastAPI:
    served = FastAPI()
    errors.install(served)

    @served.post("/start")
    async def start() -> None:
        raise RuntimeFailure("no free port for replica web-1-0001", retryable=True)

    @served.get("/busy")
    async def busy() -> None:
        raise HTTPException(503, "busy")

    @served.get("/later")
    async def later() -> None:
        raise HTTPException(503, "later", headers={"Retry-After": "7"})

    return served


async def test_a_503_carries_retry_after_unless_it_has_its_own():
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://portero") as client:
        started = await client.post("/start")
        assert started.status_code == 503
        assert started.headers["retry-after"] == "1"
        assert started.json()["error"]["message"] == "no free port for replica web-1-0001"
        assert (await client.get("/busy")).headers["retry-after"] == "1"
        assert (await client.get("/later")).headers["retry-after"] == "7"
