"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real portero.

A portal service with two replicas, steady traffic through the router, an alert rule that fires on it and one
finished deployment: the page must show all of it, update its charts without a reload, scale the service after
the operator confirms, and never send a request anywhere but portero on loopback.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import require_tool
from tests.integration.portero_cli import ROOT, portal_service

pytestmark = pytest.mark.integration
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULTS = ROOT / "test-results"


@pytest.fixture
def browser():
    path = require_tool("chromium", "the dashboard's real-browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Traffic:
    """A couple of clients GETting the router until stopped: the charts' data."""

    def __init__(self, url: str, clients: int = 2, pause_s: float = 0.05) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(url, pause_s), daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self, url: str, pause_s: float) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(url)
                time.sleep(pause_s)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def until(page: Any, what: str, script: str, timeout_s: float = 20) -> Any:
    """Poll `script` (a JS function) in the page until it returns something truthy; evaluated by the debugger
    protocol, so the page's Content-Security-Policy (no eval) stays in force."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = page.evaluate(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def points(page: Any, chart: str) -> int:
    return int(page.evaluate(f"() => document.querySelector('#chart-{chart}').dataset.points || 0"))


@pytest.fixture
def house(portero):
    """portero with traffic, a firing alert and one finished deployment."""
    service = portal_service(replicas=2, balance={"slow_start_s": 0})
    service["health"]["start_period_s"] = 6
    portero.write_spec(
        {"portal": service},
        monitoring={"interval_s": 0.5},
        deploy={"strategy": "rolling", "progress_deadline_s": 60},
        alerts={
            "rules": [
                {
                    "name": "portal-has-traffic",
                    "metric": "service_requests_per_second",
                    "aggregate": "avg",
                    "window_s": 2,
                    "threshold": 0.5,
                    "for_s": 1,
                    "summary": "{service} answers {value} requests/s",
                }
            ]
        },
    )
    portero.cli("up", "--detach")
    portero.ready(2)
    traffic = Traffic(f"http://127.0.0.1:{portero.router_port}/work?ms=5")
    try:
        started = portero.http.post(f"{portero.url}/deploy", json={"service": "portal", "version": "v2"}).json()

        def finished() -> bool:
            return portero.get(f"/deployments/{started['id']}")["state"] != "running"

        portero.wait("the deployment to finish", finished, timeout_s=90, step_s=0.5)
        assert portero.get(f"/deployments/{started['id']}")["state"] == "succeeded"
        portero.wait(
            "the traffic alert to fire",
            lambda: any(a["state"] == "firing" for a in portero.get("/monitoring/alerts")["alerts"]),
            timeout_s=30,
            step_s=0.2,
        )
        yield portero
    finally:
        traffic.close()


def test_the_json_summary_the_page_and_its_assets_are_served_by_portero(house):
    page = house.http.get(f"{house.url}/dashboard", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "/scalability/dashboard/assets/app.js" in page.text
    summary = house.http.get(f"{house.url}/dashboard", headers={"Accept": "application/json"}).json()
    (portal,) = summary["services"]
    assert portal["name"] == "portal"
    assert portal["desired"] == 2
    assert len(portal["replicas"]) >= 2
    assert summary["traffic"]["portal"]["requests_total"] > 0
    assert {e["address"] for e in summary["endpoints"]} >= {
        r["address"] for r in portal["replicas"] if r["state"] == "ready"
    }
    assert any(a["name"] == "portal-has-traffic" for a in summary["alerts"])
    assert summary["deployments"]["current"]["state"] == "succeeded"
    assert summary["deployments"]["current"]["steps"]
    assert summary["autoscaler"]["services"][0]["service"] == "portal"
    assert summary["events"]
    assert summary["events"][0]["at"] >= summary["events"][-1]["at"]
    for name in ("app.js", "api.js", "charts.js", "i18n.js", "style.css"):
        asset = house.http.get(f"{house.url}/dashboard/assets/{name}")
        assert asset.status_code == 200, name
        again = house.http.get(f"{house.url}/dashboard/assets/{name}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
    for bad in ("../app.py", "missing.js", "index.html.bak", "%2e%2e%2fdaemon.py"):
        assert house.http.get(f"{house.url}/dashboard/assets/{bad}").status_code == 404, bad
    charts = house.http.get(f"{house.url}/dashboard/series", params={"window_s": 3600, "max_points": 20}).json()
    assert charts["series"]["service_requests_per_second"]
    assert all(len(s["points"]) <= 20 for group in charts["series"].values() for s in group)
    day = house.get("/monitoring/metrics", name="replica_cpu_percent", since=-86_400, max_points=50)
    assert all(len(s["points"]) <= 50 for s in day["series"])


def test_the_dashboard_logs_in_updates_live_scales_and_stays_on_loopback(house, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{house.url}/dashboard")

    # No token yet: the data answers 401 and the page asks for one; a wrong one is refused and asked again.
    page.wait_for_selector("#login[open]", timeout=15_000)
    page.fill("#token", "prt_not-a-token")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])", timeout=15_000)
    page.fill("#token", house.token)
    page.click("#login-submit")
    page.wait_for_selector("#status.ok", timeout=15_000)
    assert page.evaluate("() => sessionStorage.getItem('portero.token')") == house.token
    assert page.locator("#readonly").is_hidden()

    # The charts draw, then grow without a reload.
    until(page, "the requests chart to draw", "() => Number(document.querySelector('#chart-rps').dataset.points) > 0")
    before = points(page, "rps")
    until(
        page,
        "the requests chart to grow",
        f"() => Number(document.querySelector('#chart-rps').dataset.points) > {before}",
    )
    until(page, "the CPU chart to draw", "() => Number(document.querySelector('#chart-cpu').dataset.points) > 0")
    # The log stream follows: a request made now shows up in it.
    marker = f"/work?ms=1&dashboard-test={time.time_ns()}"
    house.http.get(f"http://127.0.0.1:{house.router_port}{marker}")
    logged = f"() => document.querySelector('#logs').textContent.includes({marker!r})"
    until(page, "the request in the log stream", logged)
    assert page.locator("#alerts li.alert.firing").count() >= 1
    assert "succeeded" in page.locator("#deployment").inner_text()
    assert page.locator(".service[data-service=portal] tbody tr").count() >= 2

    # Scale from the page: a dialog asks first; cancelling changes nothing.
    portal = page.locator(".service[data-service=portal]")
    portal.locator("#scale-portal").fill("3")
    portal.locator("button.scale").click()
    assert page.locator("#confirm").is_visible()
    assert "2" in page.locator("#confirm-text").inner_text()
    assert "3" in page.locator("#confirm-text").inner_text()
    page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert house.get("/services")["services"][0]["desired"] == 2
    portal.locator("#scale-portal").fill("3")
    portal.locator("button.scale").click()
    page.click("#confirm-ok")
    until(
        page,
        "the page to show 3 of 3 replicas ready",
        "() => document.querySelector('.service[data-service=portal] .replica-count').textContent === '3/3'",
        timeout_s=60,
    )
    assert house.get("/services")["services"][0]["desired"] == 3

    # Drain one replica: its endpoint stops taking requests (the router says so), and its button goes.
    row = portal.locator("tbody tr").first
    drained = row.get_attribute("data-replica")
    row.locator("button.drain").click()
    assert drained in page.locator("#confirm-text").inner_text()
    page.click("#confirm-ok")

    def drained_out() -> bool:
        # Idle, it may leave the router's list within a sweep, so "draining" alone can be missed.
        servers = house.get("/load-balancer/servers", service="portal")["servers"]
        active = any(s["replica"] == drained and s["state"] == "active" for s in servers)
        return not active and any(e["kind"] == "server.draining" for e in house.events())

    house.wait("the replica to drain", drained_out, timeout_s=15, step_s=0.2)

    # Deploy a version from the page: a deployment by the API starts.
    before_deploys = len(house.get("/deployments", service="portal")["deployments"])
    portal.locator("#version-portal").fill("v3")
    portal.locator("button.deploy").click()
    assert "v3" in page.locator("#confirm-text").inner_text()
    page.click("#confirm-ok")
    house.wait(
        "a second deployment",
        lambda: len(house.get("/deployments", service="portal")["deployments"]) == before_deploys + 1,
        timeout_s=15,
        step_s=0.2,
    )
    until(page, "the page to show it", "() => document.querySelector('#deployment').textContent.includes('2 → 3')")
    assert portal.locator("#version-portal").input_value() == ""

    # Spanish on the toggle.
    page.click("#lang")
    assert page.locator("figcaption").first.inner_text() == "Peticiones por segundo"
    page.click("#lang")
    until(page, "the memory chart to draw", "() => Number(document.querySelector('#chart-memory').dataset.points) > 0")
    time.sleep(2.5)  # one more poll: the new replica's lines

    # A viewer sees everything and can change nothing: the page says so and shows no action.
    created = subprocess.run(  # Portero.cli adds --file, which `token` does not take
        [sys.executable, "-m", "portero", "--state-dir", str(house.state), "token", "create", "--role", "viewer"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    viewer = created.stdout.strip()
    read_only = context.new_page()
    read_only.on("request", lambda request: requests.append(request.url))
    read_only.goto(f"{house.url}/dashboard")
    read_only.wait_for_selector("#login[open]", timeout=15_000)
    read_only.fill("#token", viewer)
    read_only.click("#login-submit")
    read_only.wait_for_selector("#status.ok", timeout=15_000)
    read_only.wait_for_selector("#readonly:not([hidden])", timeout=15_000)
    assert read_only.locator(".service[data-service=portal] tbody tr").count() >= 3
    assert read_only.locator("button.scale").is_hidden()
    assert read_only.locator("button.drain").first.is_hidden()
    read_only.close()

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(shot, RESULTS / "dashboard.png")
    context.close()

    assert requests
    outside = [url for url in requests if urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    assert outside == [], outside
    assert all(urlsplit(url).port == house.admin_port for url in requests)
