"""Every route of the real app, walked from its route table: a route added tomorrow is covered without a word here.

Without a token everything but the public routes is 401; a viewer token is refused (403) every method that is
not a read; an admin token passes auth everywhere. The public set is written out by hand, on purpose: it is
the rule under test, not something read back from the code that enforces it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Mount

from tests.api_app import ApiApp, api_app

PUBLIC = {("GET", "/scalability/health"), ("HEAD", "/scalability/health")}
PUBLIC_HTML = "/scalability/dashboard"  # public only as the HTML shell
PUBLIC_PREFIX = "/scalability/dashboard/assets/"
READS = {"GET", "HEAD"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ApiApp]:
    async with api_app(tmp_path) as app:
        yield app


def concrete(path: str) -> str:
    """A path a request can take: each `{param}` filled with a value no real object has."""
    return re.sub(r"\{([^}:]+)(:path)?\}", lambda m: "assets-x1.js" if m[2] else "x1", path)


def operations(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, included routers flattened (FastAPI keeps them as `_IncludedRouter`)."""
    for context in iter_route_contexts(routes):
        route, path = context.original_route, context.path or ""
        if isinstance(route, Mount):
            if route.routes:
                yield from operations(route.routes, prefix + path)
            else:  # an app mounted whole (static files): one request under it stands for all
                yield "GET", prefix + path + "/x1.js"
        else:
            assert context.methods, f"{path}: a route without methods (a websocket?) needs a look at auth"
            for method in sorted(context.methods):
                yield method, prefix + concrete(path)


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method in READS and (path == PUBLIC_HTML or path.startswith(PUBLIC_PREFIX)))


async def test_the_route_table_is_walked_whole(served: ApiApp) -> None:
    walked = set(operations(served.app.routes))
    documented = {
        (method.upper(), concrete(path)) for path, ops in served.app.openapi()["paths"].items() for method in ops
    }
    assert documented <= walked  # two ways of listing the routes agree
    assert len(walked) >= 28
    for expected in [
        ("POST", "/scalability/services/x1/scale"),
        ("PUT", "/scalability/spec"),
        ("POST", "/scalability/shutdown"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ]:
        assert expected in walked


async def test_without_a_token_every_route_but_the_public_ones_is_401(served: ApiApp) -> None:
    async with served.client() as client:
        for method, path in operations(served.app.routes):
            response = await client.request(method, path, json={})
            if is_public(method, path):
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert response.json()["error"]["status"] == 401
    assert not served.shutdowns


async def test_a_viewer_token_reads_and_is_refused_every_change(served: ApiApp) -> None:
    async with served.client(served.viewer) as client:
        for method, path in operations(served.app.routes):
            response = await client.request(method, path, json={})
            if method in READS:
                assert response.status_code not in (401, 403), (method, path, response.text)
            else:
                assert response.status_code == 403, (method, path, response.status_code)
                assert response.json()["error"]["message"].endswith(f"{method} needs admin")
    assert not served.shutdowns


async def test_an_admin_token_passes_auth_on_every_route(served: ApiApp) -> None:
    async with served.client(served.admin) as client:
        for method, path in operations(served.app.routes):
            response = await client.request(method, path, json={})
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)
    assert served.shutdowns == [True]  # POST /shutdown was reached, and did its work


async def test_unknown_paths_tell_a_stranger_nothing(served: ApiApp) -> None:
    async with served.client() as client:
        for path in ["/scalability/no-such-route", "/nothing", "/scalability/health/", "/docs", "/redoc"]:
            assert (await client.get(path)).status_code == 401, path
    async with served.client(served.admin) as client:
        assert (await client.get("/scalability/no-such-route")).status_code == 404
        assert (await client.get("/docs")).status_code == 404  # Swagger UI needs a CDN; the schema is served


async def test_head_answers_wherever_get_does_with_the_same_head_and_no_body(served: ApiApp) -> None:
    async with served.client(served.admin) as client:
        gets = [path for method, path in operations(served.app.routes) if method == "GET"]
        assert len(gets) >= 20
        for path in gets:
            got, head = await client.get(path), await client.head(path)
            assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            assert ("content-length" in head.headers) == ("content-length" in got.headers), path  # values vary
    async with served.client() as client:  # and HEAD is a read for the auth rule: public where GET is
        assert (await client.head("/scalability/health")).status_code == 200
        assert (await client.head("/scalability/services")).status_code == 401
