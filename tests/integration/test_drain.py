"""Draining the last endpoint of a service (#19 case 6): refused unless forced (API, CLI, dashboard), and once
forced the outage is said everywhere: `/scalability/health` degraded with the reason, the `service-unroutable`
alert firing; undrain puts it back and the alert resolves."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.integration.portero_cli import Portero, portal_service
from tests.integration.test_dashboard import until

pytestmark = pytest.mark.integration
UNROUTABLE = "service-unroutable"


def start(portero: Portero) -> dict[str, Any]:
    service = portal_service(replicas=1, balance={"slow_start_s": 0})
    service["health"]["start_period_s"] = 6
    portero.write_spec({"portal": service}, monitoring={"interval_s": 0.5})
    portero.cli("up", "--detach")
    return portero.ready(1)[0]


def health(portero: Portero) -> dict[str, Any]:
    response = httpx.get(f"{portero.url}/health", trust_env=False, timeout=10)  # public: no token
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def firing(portero: Portero) -> list[dict[str, Any]]:
    alerts = portero.get("/monitoring/alerts", rule=UNROUTABLE)["alerts"]
    return [a for a in alerts if a["state"] == "firing"]


def test_the_last_endpoint_drains_only_when_forced_and_the_outage_shows_in_health_and_an_alert(portero):
    replica = start(portero)
    address = replica["address"]
    assert health(portero)["status"] == "ok"
    assert health(portero)["services"]["portal"]["routable"] == 1

    refused = portero.cli("drain", "portal", replica["id"], check=False)
    assert refused.returncode == 1, refused
    assert "last endpoint" in refused.stderr
    assert "stops the service" in refused.stderr
    assert "`portero drain --force`" in refused.stderr  # what to do, in the CLI's words
    assert health(portero)["status"] == "ok"

    drained = portero.cli("drain", "portal", replica["id"], "--force", "--timeout-s", "600")
    assert f"{address} (replica {replica['id']}): draining" in drained.stdout
    state = health(portero)
    assert state["status"] == "degraded", state
    portal = state["services"]["portal"]
    assert (portal["ready"], portal["routable"]) == (1, 0)  # ready, and yet down
    assert any("no endpoint takes requests" in p for p in portal["problems"]), portal
    alert = portero.wait(f"the {UNROUTABLE} alert to fire", lambda: firing(portero), timeout_s=15)[0]
    assert alert["labels"]["service"] == "portal"
    assert alert["labels"]["severity"] == "critical"
    assert "portero undrain" in alert["annotations"]["summary"]

    undrained = portero.cli("undrain", "portal", address)
    assert "back in rotation" in undrained.stdout
    assert health(portero)["status"] == "ok"
    assert health(portero)["services"]["portal"]["routable"] == 1
    portero.wait(f"the {UNROUTABLE} alert to resolve", lambda: not firing(portero), timeout_s=15)
    told = [e["kind"] for e in portero.events() if e["data"].get("labels", {}).get("alertname") == UNROUTABLE]
    assert told == ["alert.firing", "alert.resolved"], told
    answer = httpx.get(f"http://127.0.0.1:{portero.router_port}/", trust_env=False, timeout=10)
    assert answer.status_code == 200


def test_the_dashboard_forces_a_drain_of_the_last_replica_only_after_a_second_confirmation(portero, browser):
    replica = start(portero)
    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    page.goto(f"{portero.url}/dashboard")
    page.wait_for_selector("#login[open]", timeout=15_000)
    page.fill("#token", portero.token)
    page.click("#login-submit")
    page.wait_for_selector("#status.ok", timeout=15_000)
    row = page.locator(f"tr[data-replica={replica['id']}]")
    row.locator("button.drain").wait_for(timeout=15_000)

    def second_question() -> str:
        until(
            page,
            "the second question",
            "() => document.querySelector('#confirm').open"
            " && document.querySelector('#confirm-text').textContent.includes('STOPS THE SERVICE')",
            timeout_s=10,
        )
        return str(page.locator("#confirm-text").inner_text())

    # The first confirmation alone sends nothing: the second says what a drain of the last replica does.
    row.locator("button.drain").click()
    assert replica["id"] in page.locator("#confirm-text").inner_text()
    page.click("#confirm-ok")
    assert "portal" in second_question()
    page.click("#confirm button[value=cancel]")
    time.sleep(1.0)
    assert health(portero)["services"]["portal"]["routable"] == 1
    assert not [e for e in portero.events() if e["kind"] == "server.draining"]

    # Both confirmed: drained with `force`; the page then offers to undrain it.
    row.locator("button.drain").click()
    page.click("#confirm-ok")
    second_question()
    page.click("#confirm-ok")
    portero.wait("the drain", lambda: health(portero)["services"]["portal"]["routable"] == 0, timeout_s=10)
    assert health(portero)["status"] == "degraded"
    row.locator("button.undrain").wait_for(timeout=15_000)
    row.locator("button.undrain").click()
    assert replica["id"] in page.locator("#confirm-text").inner_text()
    page.click("#confirm-ok")
    portero.wait("the undrain", lambda: health(portero)["services"]["portal"]["routable"] == 1, timeout_s=10)
    row.locator("button.drain").wait_for(timeout=15_000)
    page.context.close()
