"""Input past any limit gets a 422 naming the field and the limit from the API, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api_app import ApiApp, api_app


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ApiApp]:
    async with api_app(tmp_path) as app:
        yield app


async def test_a_spec_with_a_4400_digit_number_is_a_422_naming_the_field(served: ApiApp) -> None:
    spec = f"services: {{web: {{command: [python3], stop_grace_s: {'9' * 4400}}}}}"
    async with served.client(served.admin) as client:
        response = await client.put("/scalability/spec", json={"yaml": spec})
    assert response.status_code == 422
    assert response.json()["error"]["problems"] == [
        "services.web.stop_grace_s: Input should be less than or equal to 86400 (got a number of 4400 characters)"
    ]


async def test_a_spec_over_the_size_limit_is_a_422_naming_the_limit(served: ApiApp) -> None:
    async with served.client(served.admin) as client:
        response = await client.put("/scalability/spec", json={"yaml": "services: {}\n#" + "x" * 1_000_000})
    assert response.status_code == 422
    assert response.json()["error"]["problems"] == ["body.yaml: String should have at most 1000000 characters"]
