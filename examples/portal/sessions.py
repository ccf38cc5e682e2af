"""Who is logged in, kept in Redis when ``REDIS_URL`` is set, so that any replica sees the same login.

Flask's own sessions live in a cookie signed with the app's secret key; with several replicas that each make
up their own key, a login made on one replica is unknown to the next one. Here the cookie carries only a random
session id (256 bits, so it cannot be guessed and needs no signature), and the session itself is a JSON value
in Redis under ``portal:session:<id>`` that expires after ``PORTAL_SESSION_TTL_S`` of inactivity (default 8 h).

Without ``REDIS_URL`` Flask's signed cookies are used, with ``PORTAL_SECRET_KEY`` (or a key made up per process:
then a login holds only on the replica that made it).

Routes: ``POST /login`` (form or JSON: ``name``, ``unit``), ``POST /logout``, ``GET /me``.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import redis
from flask import Blueprint, Flask, Request, Response, jsonify, request, session
from flask.sessions import SessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import CallbackDict

NAME_MAX = 120
UNIT_MAX = 40
DEFAULT_TTL_S = 8 * 3600
KEY_PREFIX = "portal:session:"


class RedisSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, initial: dict[str, Any] | None, sid: str, new: bool) -> None:
        def changed(_: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial or {}, changed)
        self.sid = sid
        self.new = new
        self.modified = False


class RedisSessionInterface(SessionInterface):
    """Server-side sessions on redis-py: one GET per request that carries a session cookie, one SET when it
    changed (or to push its expiry forward)."""

    def __init__(self, client: redis.Redis, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def open_session(self, app: Flask, request: Request) -> RedisSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid:
            raw = self.client.get(KEY_PREFIX + sid)
            if raw is not None:
                return RedisSession(json.loads(raw), sid, new=False)
        return RedisSession(None, secrets.token_urlsafe(32), new=True)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, RedisSession)
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        if not session:
            if session.modified:  # emptied (logout): gone from Redis and from the browser
                self.client.delete(KEY_PREFIX + session.sid)
                response.delete_cookie(name, domain=domain, path=path)
            return
        self.client.set(KEY_PREFIX + session.sid, json.dumps(dict(session)), ex=self.ttl_s)
        response.set_cookie(
            name,
            session.sid,
            max_age=self.ttl_s,
            httponly=True,
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app) or "Lax",
            domain=domain,
            path=path,
        )


accounts = Blueprint("accounts", __name__)


@accounts.post("/login")
def login() -> ResponseReturnValue:
    data = request.get_json(silent=True) if request.is_json else request.form
    fields = {name: str((data or {}).get(name, "")).strip() for name in ("name", "unit")}
    problems = [
        f"{name}: required, at most {limit} characters"
        for name, limit in (("name", NAME_MAX), ("unit", UNIT_MAX))
        if not 0 < len(fields[name]) <= limit
    ]
    if problems:
        return jsonify(error="datos inválidos", problems=problems), 422
    session.clear()
    session["user"] = fields
    return jsonify(user=fields)


@accounts.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return jsonify(user=None)


@accounts.get("/me")
def me() -> ResponseReturnValue:
    user = session.get("user")
    return (jsonify(user=user), 200) if user else (jsonify(error="no hay sesión iniciada", user=None), 401)


def install(app: Flask) -> None:
    """Sessions in Redis when REDIS_URL is set, Flask's signed cookies otherwise; and the login routes."""
    url = os.environ.get("REDIS_URL")
    if url:
        ttl_s = int(os.environ.get("PORTAL_SESSION_TTL_S") or DEFAULT_TTL_S)
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        app.session_interface = RedisSessionInterface(client, ttl_s)
    app.secret_key = os.environ.get("PORTAL_SECRET_KEY") or app.secret_key or secrets.token_hex(32)
    app.register_blueprint(accounts)
