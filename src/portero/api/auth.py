"""Who may call the management API. Every request passes here first; the rule lives in this module only.

Theory of operation: an ASGI middleware, outermost (outside Starlette's error handler and any middleware added
later), sees every HTTP request before routing, so a route added tomorrow, a mount, `/openapi.json` and an
unknown path are all closed unless `is_public` says otherwise. A FastAPI app-level dependency was rejected: it
skips mounts and the OpenAPI route, and it runs after path matching, so a stranger could tell routes that
exist from those that do not.

- Public, exactly: `GET /scalability/health`; `GET /scalability/dashboard` when the client does not ask for
  JSON (the HTML shell, and the middleware lets only a `text/html` answer out); `GET
  /scalability/dashboard/assets/<file>` (static JS/CSS, plain path segments only). HEAD is treated as GET.
- Everything else needs `Authorization: Bearer <token>`: missing or unknown, 401 with `WWW-Authenticate:
  Bearer`; a `viewer` token may read (GET, HEAD), anything else needs `admin`, else 403.
- Tokens are looked up by hash, compared in constant time, never taken from the URL, never logged; a
  changing request is logged with the token's id and name (the audit trail), never its secret.
- A read that lasts (a followed log) is watched: its token is checked again every REVOCATION_CHECK_S, and a
  revoke ends it with a last `error` event. A changing request is never cancelled halfway (an apply could be
  left half done): it finishes with the token it started with.
- HEAD runs the GET route and drops the body (Starlette's own routes do so; FastAPI's answer HEAD with 405).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

import anyio
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portero.api.errors import error
from portero.tokens import TokenRecord, TokenSet

HEALTH = "/scalability/health"
DASHBOARD = "/scalability/dashboard"
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"  # no `.` or `..` segment, no empty one
ASSETS = "/scalability/dashboard/assets/"
ASSET = re.compile(rf"/scalability/dashboard/assets/(?:{_SEGMENT}/)*{_SEGMENT}")
READ_METHODS = frozenset({"GET", "HEAD"})
QUERY_CREDENTIALS = re.compile(rb"(?:^|&)(?:access_token|token|api_key)=", re.IGNORECASE)
SECURITY_SCHEME = "bearer"
REVOCATION_CHECK_S = 0.25  # a revoked token's stream ends within this (plus a stat of tokens.json)

log = logging.getLogger(__name__)


def wants_json(accept: str | None) -> bool:
    """Whether an Accept header asks for JSON (`application/json` with q > 0). The dashboard route must answer
    JSON only when this is true, and HTML otherwise; the HTML shell is public, the JSON is not."""
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() != "application/json":
            continue
        q = next((p.split("=", 1)[1] for p in params if p.replace(" ", "").lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True  # a malformed weight is taken as asking: the stricter reading
    return False


def is_public(method: str, path: str, accept: str | None) -> bool:
    if method not in READ_METHODS:
        return False
    if path == HEALTH:
        return True
    if path == DASHBOARD:
        return not wants_json(accept)
    return ASSET.fullmatch(path) is not None


def allows(role: str, method: str) -> bool:
    return role == "admin" or (role == "viewer" and method in READ_METHODS)


UNKNOWN = "unknown or revoked token"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, tokens: TokenSet) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route uses one; refuse rather than let one bypass the rule
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = [(k, v) for k, v in scope["headers"] if k in (b"authorization", b"accept")]
        accept = next((v.decode("latin-1") for k, v in headers if k == b"accept"), None)
        authorization = [v.decode("latin-1") for k, v in headers if k == b"authorization"]
        record, problem = self._authenticate(authorization, scope.get("query_string", b""))
        if record is None and problem == UNKNOWN and self.tokens.on_miss is not None:
            await self.tokens.on_miss()  # made on another portero of the group a moment ago?
            record, problem = self._authenticate(authorization, scope.get("query_string", b""))
        public = record is None and is_public(method, path, accept)  # a bad token on a public route is no token
        send = _hardened(send, private=not public)
        if public:
            await (_html_only(self.app) if path == DASHBOARD else self.app)(scope, receive, send)
            return
        if record is None:
            log.info("denied %s %r from %s: %s", method, path, _client(scope), problem)
            challenge = 'Bearer realm="portero"' + (', error="invalid_token"' if authorization else "")
            await _deny(401, problem, challenge, scope, receive, send)
            return
        if not allows(record.role, method):
            log.info("denied %s %r to token %s (%s): role %s", method, path, record.id, record.name, record.role)
            message = f"token {record.id} has role {record.role}, which may only read (GET); {method} needs admin"
            await _deny(403, message, 'Bearer realm="portero", error="insufficient_scope"', scope, receive, send)
            return
        scope.setdefault("state", {})["token"] = record
        if method in READ_METHODS:
            await self._while_valid(record, scope, receive, send)
            return
        await self.app(scope, receive, _audited(send, method, path, record))

    async def _while_valid(self, record: TokenRecord, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a read, ending it if its token is revoked meanwhile (within REVOCATION_CHECK_S)."""
        started: list[bytes] = []  # the content type, once the answer has begun

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(dict(message.get("headers", [])).get(b"content-type", b""))
            await send(message)

        revoked = False
        failure: Exception | None = None
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal revoked
                while True:
                    await anyio.sleep(REVOCATION_CHECK_S)
                    if not self.tokens.holds(record):
                        break
                revoked = True
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await self.app(scope, receive, sending)
            except Exception as exc:  # raised as itself below, not in the task group's ExceptionGroup
                failure = exc
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if revoked:
            await _ended(record, started[0] if started else None, scope, receive, send)

    def _authenticate(self, authorization: list[str], query: bytes) -> tuple[TokenRecord | None, str]:
        if not authorization:
            if QUERY_CREDENTIALS.search(query):
                return None, "tokens are taken only from the Authorization header, never from the URL"
            return None, "missing bearer token: send `Authorization: Bearer <token>`"
        scheme, _, credentials = authorization[0].strip().partition(" ")
        if len(authorization) > 1 or scheme.lower() != "bearer" or not credentials.strip():
            return None, "malformed Authorization header: expected exactly one `Authorization: Bearer <token>`"
        record = self.tokens.check(credentials.strip())
        if record is None:
            return None, UNKNOWN
        return record, ""


async def _ended(record: TokenRecord, content_type: bytes | None, scope: Scope, receive: Receive, send: Send) -> None:
    """A read whose token was revoked while it ran: a 401 if nothing was sent yet, an error event in a stream."""
    log.info("ended %s %r: token %s (%s) was revoked", scope["method"], scope["path"], record.id, record.name)
    message = f"token {record.id} was revoked"
    if content_type is None:
        await _deny(401, UNKNOWN, 'Bearer realm="portero", error="invalid_token"', scope, receive, send)
    elif content_type.startswith(b"text/event-stream"):
        body = json.dumps({"error": {"status": 401, "message": message, "problems": []}})
        await send({"type": "http.response.body", "body": f"event: error\ndata: {body}\n\n".encode()})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _head_as_get(app: ASGIApp) -> ASGIApp:
    """HEAD is answered by the GET route with the body dropped: the same status and headers (Content-Length
    included), as Starlette's own `Route` does and RFC 9110 asks. Once the head is sent the answer is complete,
    so a stream (a followed log) ends there: the server then reports the client gone, which stops it."""

    async def head(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return
        complete = False

        async def headers_only(message: Message) -> None:
            nonlocal complete
            if complete:
                return
            if message["type"] == "http.response.body":
                complete = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def receiving() -> Message:
            return {"type": "http.disconnect"} if complete else await receive()

        await app({**scope, "method": "GET"}, receiving, headers_only)

    return head


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


async def _deny(status: int, message: str, challenge: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = error(status, message)
    response.headers["WWW-Authenticate"] = challenge
    await response(scope, receive, send)


def _html_only(app: ASGIApp) -> ASGIApp:
    """The public dashboard answer may be the HTML shell only: anything else (JSON, an error) becomes a 401,
    whatever the dashboard route decides, so no data leaves without a token."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        blocked = False

        async def checked(message: Message) -> None:
            nonlocal blocked
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if not content_type.startswith(b"text/html"):
                    blocked = True
                    await _deny(
                        401, "the dashboard's data needs a bearer token", 'Bearer realm="portero"', scope, receive, send
                    )
                    return
            if not blocked:
                await send(message)

        await app(scope, receive, checked)

    return guarded


HARDENING = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def _hardened(send: Send, *, private: bool) -> Send:
    """Headers every answer gets unless its route set them: no MIME sniffing, no framing (an admin action
    cannot be clickjacked), no Referer; and an answer given to a token is never cached."""
    extra = [*HARDENING, (b"cache-control", b"no-store")] if private else HARDENING

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            message = {**message, "headers": headers + [(k, v) for k, v in extra if k not in present]}
        await send(message)

    return sending


def _audited(send: Send, method: str, path: str, record: TokenRecord) -> Send:
    async def logged(message: Message) -> None:
        if message["type"] == "http.response.start":
            log.info(
                "%s %r by token %s (%s, %s): %s", method, path, record.id, record.name, record.role, message["status"]
            )
        await send(message)

    return logged


class WhoAmIOut(BaseModel):
    id: str = Field(examples=["2ea96468"])
    role: Literal["admin", "viewer"]
    name: str | None = Field(examples=["grafana"])
    created_at: str = Field(description="RFC 3339, UTC.", examples=["2026-11-28T04:31:49Z"])


def token_of(request: Request) -> TokenRecord | None:
    """The token a request was let in with (None on a public route called without one)."""
    found: TokenRecord | None = getattr(request.state, "token", None)
    return found


def routes() -> APIRouter:
    api = APIRouter(prefix="/scalability/auth", tags=["auth"])

    @api.get("/whoami", summary="The token of this request: id, role and name")
    async def whoami(request: Request) -> WhoAmIOut:
        """What a client (the dashboard at login) learns from its token: whether it works, and its role."""
        record = token_of(request)
        assert record is not None  # the middleware lets no request in here without one
        return WhoAmIOut(id=record.id, role=record.role, name=record.name, created_at=record.created_at)

    return api


def install(app: FastAPI, tokens: TokenSet) -> None:
    """Close `app` to requests without a valid token, and say so in its OpenAPI document.

    The check wraps the whole middleware stack when Starlette builds it (at the first request), so it stays
    outermost: a middleware added later with `add_middleware` (one that forwards requests to another portero,
    say) runs only for requests already let in. An `add_middleware` here would be outermost only until then."""
    build = app.build_middleware_stack

    def build_behind_auth() -> ASGIApp:
        return AuthMiddleware(_head_as_get(build()), tokens)

    app.build_middleware_stack = build_behind_auth  # type: ignore[method-assign]
    app.include_router(routes())
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


UNAUTHORIZED = {
    "description": "Missing, malformed, unknown or revoked bearer token.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "example": 'Bearer realm="portero"'}},
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorResponse"},
            "example": {"error": {"status": 401, "message": "unknown or revoked token", "problems": []}},
        }
    },
}
FORBIDDEN = {
    "description": "The token's role may not do this (a viewer token may only read).",
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorResponse"},
            "example": {
                "error": {
                    "status": 403,
                    "message": "token 3f9a2c1e has role viewer, which may only read (GET); POST needs admin",
                    "problems": [],
                }
            },
        }
    },
}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Bearer security on every operation but the public ones; 401 everywhere it applies, 403 where a viewer
    would be refused."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "prt_<43 url-safe characters>",
        "description": "`portero token create --role viewer|admin`; the first admin token is in "
        "`<state dir>/admin.token`. Viewer: GET only. Admin: everything.",
    }
    schema["security"] = [{SECURITY_SCHEME: []}]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            verb = method.upper()
            if (path == HEALTH or path.startswith(ASSETS)) and verb in READ_METHODS:
                operation["security"] = []
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", UNAUTHORIZED)
            if not allows("viewer", verb):
                responses.setdefault("403", FORBIDDEN)
            if path == DASHBOARD and verb in READ_METHODS:
                operation["security"] = [{}, {SECURITY_SCHEME: []}]  # HTML without a token; JSON with one
    return schema
