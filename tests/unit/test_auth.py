"""The auth rule (what is public, what a role may do), the token file, and the middleware on a real app."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from portero import tokens
from portero.api.auth import allows, is_public, wants_json
from portero.daemon import StartupError, _bind, is_loopback
from portero.runtimes.ports import free_port
from portero.spec.loader import parse_spec
from tests.api_app import ApiApp, api_app


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),  # a browser
        ("application/json", True),
        ("Application/JSON", True),
        ("text/html, application/json;q=0.1", True),
        ("application/json;q=0", False),
        ("application/json; q=0.0", False),
        ("application/json;q=abc", True),  # a weight that cannot be read: the stricter reading
        ("application/jsonx", False),
    ],
)
def test_wants_json(accept: str | None, expected: bool) -> None:
    assert wants_json(accept) is expected


@pytest.mark.parametrize(
    ("method", "path", "accept", "public"),
    [
        ("GET", "/scalability/health", None, True),
        ("HEAD", "/scalability/health", None, True),
        ("POST", "/scalability/health", None, False),
        ("GET", "/scalability/health/", None, False),
        ("GET", "/scalability/healthz", None, False),
        ("GET", "/scalability/dashboard", "text/html", True),
        ("GET", "/scalability/dashboard", None, True),
        ("GET", "/scalability/dashboard", "application/json", False),
        ("POST", "/scalability/dashboard", "text/html", False),
        ("GET", "/scalability/dashboard/", "text/html", False),
        ("GET", "/scalability/dashboard/assets/app.js", None, True),
        ("GET", "/scalability/dashboard/assets/fonts/inter-v1.woff2", None, True),
        ("GET", "/scalability/dashboard/assets/app.js", "application/json", True),  # static files hold no data
        ("PUT", "/scalability/dashboard/assets/app.js", None, False),
        ("GET", "/scalability/dashboard/assets/", None, False),
        ("GET", "/scalability/dashboard/assets/../../containers/list", None, False),
        ("GET", "/scalability/dashboard/assets/./app.js", None, False),
        ("GET", "/scalability/dashboard/assets//app.js", None, False),
        ("GET", "/scalability/dashboard/assets/.env", None, False),
        ("GET", "/scalability/dashboard/assets/a b.js", None, False),
        ("GET", "/scalability/dashboardx", None, False),
        ("GET", "/openapi.json", None, False),
        ("GET", "/metrics", None, False),
        ("GET", "/", None, False),
    ],
)
def test_the_public_routes_are_exactly_these(method: str, path: str, accept: str | None, public: bool) -> None:
    assert is_public(method, path, accept) is public


def test_roles() -> None:
    assert all(allows("admin", m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
    assert allows("viewer", "GET")
    assert allows("viewer", "HEAD")
    assert not any(allows("viewer", m) for m in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"))
    assert not allows("root", "GET")


# --- the token file -------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_makes_one_admin_token_kept_hashed_and_saved_0600(tmp_path: Path) -> None:
    os.umask(0o022)
    made = tokens.ensure_admin(tmp_path)
    assert made is not None
    record, secret = made
    assert record.role == "admin"
    assert secret.startswith("prt_")
    assert len(secret) == 4 + 43
    assert tokens.ensure_admin(tmp_path) is None  # only at first start
    assert mode(tmp_path / "tokens.json") == 0o600
    assert mode(tmp_path / "admin.token") == 0o600
    assert secret not in (tmp_path / "tokens.json").read_text()
    assert record.sha256 in (tmp_path / "tokens.json").read_text()
    assert tokens.saved_admin_token(tmp_path) == secret


def test_create_list_revoke(tmp_path: Path) -> None:
    admin, admin_secret = tokens.ensure_admin(tmp_path) or pytest.fail("no admin token")
    viewer, secret = tokens.create(tmp_path, "viewer", "grafana")
    assert secret != admin_secret
    assert [(r.id, r.role, r.name) for r in tokens.listed(tmp_path)] == [
        (admin.id, "admin", "initial-admin"),
        (viewer.id, "viewer", "grafana"),
    ]
    assert tokens.find(tokens.listed(tmp_path), secret) == viewer
    assert tokens.find(tokens.listed(tmp_path), secret + "x") is None
    assert tokens.revoke(tmp_path, viewer.id) == viewer
    assert tokens.find(tokens.listed(tmp_path), secret) is None
    with pytest.raises(tokens.TokenError, match="no token with id 'ffffffff'"):
        tokens.revoke(tmp_path, "ffffffff")
    tokens.revoke(tmp_path, admin.id)
    assert not (tmp_path / "admin.token").exists()  # a revoked secret does not stay on disk


@pytest.mark.parametrize(
    ("role", "name", "problem"),
    [("root", None, "role 'root'"), ("viewer", "two words", "name 'two words'"), ("viewer", "x\ny", "name")],
)
def test_create_refuses_bad_input(tmp_path: Path, role: str, name: str | None, problem: str) -> None:
    with pytest.raises(tokens.TokenError, match=problem):
        tokens.create(tmp_path, role, name)


def test_commands_need_a_state_directory(tmp_path: Path) -> None:
    with pytest.raises(tokens.TokenError, match="no portero state directory"):
        tokens.create(tmp_path / "nope", "viewer")


def test_the_daemon_sees_a_revoke_at_once_and_a_broken_file_refuses_everyone(tmp_path: Path) -> None:
    _, admin = tokens.ensure_admin(tmp_path) or pytest.fail("no admin token")
    live = tokens.TokenSet(tmp_path / tokens.TOKENS_FILE)
    record, secret = tokens.create(tmp_path, "viewer")
    assert live.check(secret) == record
    tokens.revoke(tmp_path, record.id)
    assert live.check(secret) is None
    assert live.check(admin) is not None
    (tmp_path / tokens.TOKENS_FILE).write_text("{not json")
    assert live.check(admin) is None
    assert live.error is not None
    assert "unreadable token file" in live.error


def test_loose_modes_are_tightened(tmp_path: Path) -> None:
    tokens.ensure_admin(tmp_path)
    (tmp_path / "admin.token").chmod(0o644)
    fixed = tokens.tighten_modes(tmp_path)
    assert fixed == [f"{tmp_path / 'admin.token'} was 0644"]
    assert mode(tmp_path / "admin.token") == 0o600


# --- the middleware on a real app ---------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ApiApp]:
    async with api_app(tmp_path) as app:
        yield app


async def test_a_token_in_the_url_is_refused(served: ApiApp) -> None:
    async with served.client() as client:
        for name in ("token", "access_token", "api_key"):
            response = await client.get("/scalability/services", params={name: served.admin})
            assert response.status_code == 401
            assert "never from the URL" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "header",
    ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "Token {admin}", "{admin}", "Bearer prt_x", "Bearer {admin}x"],
)
async def test_malformed_or_unknown_credentials_are_401(served: ApiApp, header: str) -> None:
    async with served.client() as client:
        response = await client.get(
            "/scalability/services", headers={"Authorization": header.format(admin=served.admin)}
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="portero", error="invalid_token"'


async def test_two_authorization_headers_are_refused(served: ApiApp) -> None:
    async with served.client() as client:
        both = [("Authorization", f"Bearer {served.admin}"), ("Authorization", f"Bearer {served.viewer}")]
        response = await client.get("/scalability/services", headers=both)
    assert response.status_code == 401


async def test_the_scheme_is_case_insensitive(served: ApiApp) -> None:
    async with served.client() as client:
        response = await client.get("/scalability/services", headers={"Authorization": f"bearer {served.viewer}"})
    assert response.status_code == 200


async def test_the_public_dashboard_lets_only_html_out(served: ApiApp) -> None:
    """Whatever a dashboard route does, without a token only a text/html answer passes."""

    @served.app.get("/scalability/dashboard")
    async def leaky() -> JSONResponse:  # a route that forgot to look at Accept
        return JSONResponse({"replicas": ["secret"]})

    served.app.router.routes.insert(0, served.app.router.routes.pop())  # ahead of the real dashboard route

    async with served.client() as client:
        response = await client.get("/scalability/dashboard", headers={"Accept": "text/html"})
        assert response.status_code == 401
        assert "secret" not in response.text
    async with served.client(served.viewer) as client:
        assert (await client.get("/scalability/dashboard")).json() == {"replicas": ["secret"]}


async def test_the_public_dashboard_shell_and_its_json(served: ApiApp) -> None:
    async with served.client() as client:
        page = await client.get("/scalability/dashboard", headers={"Accept": "text/html,*/*;q=0.8"})
        assert page.status_code == 200
        assert "/scalability/dashboard/assets/app.js" in page.text
        assert (await client.get("/scalability/dashboard", headers={"Accept": "application/json"})).status_code == 401
        assert (await client.get("/scalability/dashboard/series")).status_code == 401
        assert (await client.get("/scalability/dashboard/assets/app.js")).status_code == 200
    async with served.client(served.viewer) as client:
        summary = await client.get("/scalability/dashboard", headers={"Accept": "application/json"})
        assert summary.json()["role"] == "viewer"  # the page hides its actions
    async with served.client(served.admin) as client:
        summary = await client.get("/scalability/dashboard", headers={"Accept": "application/json"})
        assert summary.json()["role"] == "admin"


async def test_no_token_is_ever_logged(served: ApiApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin_id = tokens.listed(served.state_dir)[0].id
    async with served.client(served.admin) as client:
        await client.post("/scalability/services/web/scale", json={"replicas": 99})
        await client.get("/scalability/services")
    async with served.client(served.viewer) as client:
        await client.post("/scalability/shutdown")
    async with served.client() as client:
        await client.get("/scalability/services", params={"token": served.admin})
        await client.get("/scalability/services", headers={"Authorization": f"Bearer {served.admin}x"})
    # portero's own loggers and uvicorn's (the test's httpx client logs its URLs: a token in one shows there)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("portero", "uvicorn")))
    assert served.admin not in text
    assert served.viewer not in text
    assert "prt_" not in text
    assert f"POST '/scalability/services/web/scale' by token {admin_id} (initial-admin, admin): 409" in text
    assert "denied POST '/scalability/shutdown' to token" in text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("admin.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_admin_api_off_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_spec("admin: {host: 192.0.2.1, port: 9}\nservices: {web: {command: x}}")  # TEST-NET: never bound
    with pytest.raises(StartupError):
        _bind(spec)
    assert "ADMIN API EXPOSED: admin.host is 192.0.2.1, not loopback" in caplog.text
    caplog.clear()
    _bind(parse_spec(f"admin: {{port: {free_port()}}}\nservices: {{web: {{command: x}}}}")).close()
    assert "EXPOSED" not in caplog.text


async def test_whoami_tells_a_token_its_role(served: ApiApp) -> None:
    async with served.client(served.viewer) as client:
        me = (await client.get("/scalability/auth/whoami")).json()
    assert (me["role"], me["name"]) == ("viewer", "test-viewer")
    assert set(me) == {"id", "role", "name", "created_at"}
    async with served.client(served.admin) as client:
        assert (await client.get("/scalability/auth/whoami")).json()["role"] == "admin"
    async with served.client() as client:
        assert (await client.get("/scalability/auth/whoami")).status_code == 401


async def test_answers_are_hardened_and_those_to_a_token_never_cached(served: ApiApp) -> None:
    async with served.client(served.viewer) as client:
        private = await client.get("/scalability/services")
    async with served.client() as client:
        public = await client.get("/scalability/health")
        denied = await client.get("/scalability/services")
    for response in (private, public, denied):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert private.headers["cache-control"] == "no-store"
    assert denied.headers["cache-control"] == "no-store"
    assert "cache-control" not in public.headers


async def test_a_middleware_added_later_runs_behind_auth(served: ApiApp) -> None:
    """A later `add_middleware` (the cluster's forwarding, for one) sees only requests auth let in."""
    seen: list[str] = []

    @served.app.middleware("http")
    async def answers_itself(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        seen.append(request.url.path)
        return JSONResponse({"answered": "by a later middleware"})

    async with served.client() as client:
        assert (await client.post("/scalability/services/web/scale", json={"replicas": 1})).status_code == 401
    assert seen == []
    async with served.client(served.admin) as client:
        assert (await client.post("/scalability/services/web/scale", json={"replicas": 1})).status_code == 200
    assert seen == ["/scalability/services/web/scale"]
