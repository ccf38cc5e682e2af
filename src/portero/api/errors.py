"""Every error the API returns has one JSON shape: {"error": {"status", "message", "problems"}}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portero.errors import NotFound, Refused
from portero.runtimes.base import RuntimeFailure
from portero.spec.loader import SpecError
from portero.store.base import StaleLeader, StoreUnavailable


def error(
    status: int, message: str, problems: list[str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"status": status, "message": message, "problems": problems or []}}
    return JSONResponse(body, status, headers=headers)


class RetryAfter:
    """Every 503 says when to try again (`Retry-After: 1` unless it says otherwise): a 503 is always a
    temporary refusal here (Redis away, a leader handover, a runtime that cannot start a replica yet), and a
    client told when to retry need not guess. Pure ASGI, so streamed answers pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = MutableHeaders(scope=message)
                if "retry-after" not in headers:
                    headers["Retry-After"] = "1"
            await send(message)

        await self.app(scope, receive, sending)


def install(app: FastAPI) -> None:
    app.add_middleware(RetryAfter)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(SpecError)
    async def bad_spec(_: Request, exc: SpecError) -> JSONResponse:
        return error(422, f"spec refused ({exc.source}); nothing was changed", exc.problems)

    @app.exception_handler(RuntimeFailure)
    async def runtime_failed(_: Request, exc: RuntimeFailure) -> JSONResponse:
        if exc.retryable:
            return error(503, str(exc), headers={"Retry-After": "1"})
        return error(502, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def store_away(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error(503, f"{exc}; nothing was changed, retry when it answers", headers={"Retry-After": "1"})

    @app.exception_handler(StaleLeader)
    async def stale(_: Request, exc: StaleLeader) -> JSONResponse:
        return error(409, f"{exc}; nothing was changed, send the request to the leader", headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error(422, "invalid request", problems)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
