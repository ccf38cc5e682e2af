"""The portal's payments page and /metrics (examples/portal/external.py), with the Flask test client and real
loopback sockets: an unreachable provider is a refused connection, not a mock."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.portal.test_portal import PORTAL_ENV, portal

from portero.runtimes.ports import free_port


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    for name in (*PORTAL_ENV, "PAYMENTS_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_DATA_DIR", str(tmp_path / "data"))

    def make(**env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return portal.create_app({"TESTING": True}).test_client()

    return make


def test_without_a_provider_the_page_says_so_and_health_is_unchanged(make_app):
    client = make_app()
    response = client.get("/expensas/12B")
    assert response.status_code == 200
    assert "no está configurado" in response.get_data(as_text=True)
    assert set(client.get("/health").get_json()) == {"status", "version", "replica"}


def test_an_unreachable_provider_opens_the_breaker_and_the_page_degrades_at_once(make_app):
    client = make_app(PAYMENTS_URL=f"http://127.0.0.1:{free_port()}", PAYMENTS_FAIL_MAX="2", PAYMENTS_RESET_S="60")
    first = client.get("/expensas/12B?format=json").get_json()
    assert (first["degraded"], first["breaker"], first["balance"]) == (True, "open", None)  # 2 attempts: open
    began = time.perf_counter()
    again = client.get("/expensas/12B")
    took = time.perf_counter() - began
    assert again.status_code == 200
    assert again.headers["X-Degraded"] == "payments"
    assert "El sistema de pagos no responde" in again.get_data(as_text=True)
    assert took < 0.1
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert health.get_json()["dependencies"]["payments"]["breaker"] == "open"
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("resilience_breaker_open", (("breaker", "payments"),))] == 1


def test_a_long_unit_is_refused_naming_the_field(make_app):
    client = make_app(PAYMENTS_URL=f"http://127.0.0.1:{free_port()}")
    response = client.get("/expensas/" + "x" * 41)
    assert response.status_code == 400
    assert response.get_json()["field"] == "unit"
