"""The OpenAPI document is complete: summaries, auth, errors and examples on every operation of the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api_app import ApiApp, api_app

READS = {"get", "head"}
PUBLIC = {
    ("get", "/scalability/health"),
    ("get", "/scalability/dashboard"),
    ("get", "/scalability/dashboard/assets/{name}"),
}


@pytest.fixture
async def document(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with api_app(tmp_path) as served:
        async with served.client(served.viewer) as client:
            response = await client.get("/openapi.json")
        assert response.status_code == 200
        yield response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_the_bearer_scheme_is_declared_and_applies_to_all_but_the_public_routes(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "prt_<43 url-safe characters>",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert document["security"] == [{"bearer": []}]
    for method, path, op in operations(document):
        if (method, path) in PUBLIC:
            assert {} in op["security"] or op["security"] == [], (method, path)
            continue
        assert "security" not in op or op["security"] == [{"bearer": []}], (method, path)
        assert "401" in op["responses"], (method, path)
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert ("403" in op["responses"]) is (method not in READS), (method, path)


def test_every_operation_has_a_summary_tags_and_documented_errors(document: dict[str, Any]) -> None:
    found = operations(document)
    assert len(found) >= 26
    for method, path, op in found:
        assert op.get("summary"), (method, path)
        assert op["summary"] != op["operationId"].replace("_", " ").title(), (method, path)
        assert op.get("tags"), (method, path)
        for status in ("400", "404", "409", "422"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


def test_every_request_body_and_path_parameter_has_an_example(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if "requestBody" in op:
            schema = resolve(document, op["requestBody"]["content"]["application/json"]["schema"])
            assert schema.get("examples"), (method, path)
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["schema"].get("examples"), (method, path, parameter["name"])
    for name in ("ErrorResponse", "HealthOut", "ReplicaOut"):
        assert document["components"]["schemas"][name]["examples"]


async def test_the_document_needs_a_token(tmp_path: Path) -> None:
    served: ApiApp
    async with api_app(tmp_path) as served, served.client() as client:
        assert (await client.get("/openapi.json")).status_code == 401
