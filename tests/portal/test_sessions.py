"""Portal logins: kept in a real Redis when REDIS_URL is set, so that another replica (another app, with its
own secret key) still knows the user; per replica without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from tests.portal.test_portal import PORTAL_ENV, portal

USER = {"name": "Ana Pérez", "unit": "Lote 42"}


def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Flask:
    """One app as a replica makes it: its own process-made secret key, the environment given."""
    for name in (*PORTAL_ENV, "REDIS_URL", "PORTAL_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_DATA_DIR", str(tmp_path / "data"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return portal.create_app({"TESTING": True})


def carry_cookie(source: FlaskClient, target: FlaskClient) -> None:
    """The browser sends the same cookie to whichever replica answers."""
    cookie = source.get_cookie("session")
    assert cookie is not None
    target.set_cookie("session", cookie.value)


def test_a_login_on_one_replica_is_known_to_another_through_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: Any
) -> None:
    one = replica(tmp_path, monkeypatch, REDIS_URL=redis_server.url).test_client()
    two = replica(tmp_path, monkeypatch, REDIS_URL=redis_server.url).test_client()

    assert one.post("/login", json=USER).get_json() == {"user": USER}
    cookie = one.get_cookie("session")
    assert cookie is not None
    assert len(cookie.value) >= 40  # a random id, not the session's content
    carry_cookie(one, two)

    assert two.get("/me").get_json() == {"user": USER}
    stored = redis.Redis.from_url(redis_server.url).get(f"portal:session:{cookie.value}")
    assert stored is not None
    assert "Lote 42" in stored.decode()

    assert two.post("/logout").status_code == 200
    assert two.get_cookie("session") is None  # deleted from the browser
    one.set_cookie("session", cookie.value)  # an old copy of the cookie is worth nothing now
    assert one.get("/me").status_code == 401
    assert redis.Redis.from_url(redis_server.url).get(f"portal:session:{cookie.value}") is None


def test_without_redis_a_login_holds_only_on_the_replica_that_made_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = replica(tmp_path, monkeypatch).test_client()
    two = replica(tmp_path, monkeypatch).test_client()

    assert one.post("/login", data=USER).status_code == 200
    assert one.get("/me").get_json() == {"user": USER}
    carry_cookie(one, two)

    assert two.get("/me").status_code == 401


def test_a_login_without_a_name_or_unit_is_refused_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = replica(tmp_path, monkeypatch).test_client()

    answer = client.post("/login", json={"name": " ", "unit": "x" * 41})

    assert answer.status_code == 422
    assert answer.get_json()["problems"] == [
        "name: required, at most 120 characters",
        "unit: required, at most 40 characters",
    ]
    assert client.get("/me").status_code == 401
