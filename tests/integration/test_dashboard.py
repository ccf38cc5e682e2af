"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real portero.

A portal service with two replicas, steady traffic through the router, an alert rule that fires on it and one
finished deployment: the page must show all of it, update its charts without a reload, scale the service after
the operator confirms, and never send a request anywhere but portero on loopback.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.portero_cli import ROOT, portal_service
from tests.integration.test_apply_tells import up_under_the_autoscaler

pytestmark = pytest.mark.integration
RESULTS = ROOT / "test-results"


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


STORY_DEPLOY = {
    "strategy": "blue-green",
    "keep_old_s": 2,
    "progress_deadline_s": 60,
    "analysis": {"window_s": 3, "min_requests": 10, "p95_floor_s": 2},
}
ENGLISH = re.compile(
    r"\b(revision|replicas?|traffic|ready|serves|rolled|started|starting|group|step|passed|requests?|error rate|held|"
    r"stopping|takes|deployment|stay|target|cooldown|limits|burst|within|after|exited|restart|running|succeeded|"
    r"pending|firing|active|draining|blue-green|rolling|switched|done)\b"
)


def finished(portero: Any, deployment: dict[str, Any]) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = portero.get(f"/deployments/{deployment['id']}")
        return found if found["state"] != "running" else None

    result: dict[str, Any] = portero.wait("the deployment to end", ended, timeout_s=120, step_s=0.5)
    return result


@pytest.fixture
def story(portero):
    """A good blue-green deployment (v1's replicas gone), a bad one rolled back (a reason to show), then a burst
    of 404s; the traffic has stopped when the test begins."""
    service = portal_service(replicas=2, env={"WEB_CONCURRENCY": "2"}, balance={"slow_start_s": 0})
    service["health"]["start_period_s"] = 6
    portero.write_spec({"portal": service}, monitoring={"interval_s": 0.5}, deploy=STORY_DEPLOY)
    portero.cli("up", "--detach")
    portero.ready(2)
    router = f"http://127.0.0.1:{portero.router_port}"
    traffic = Traffic(f"{router}/work?ms=2", clients=3, pause_s=0.02)
    try:
        good = portero.http.post(f"{portero.url}/deploy", json={"service": "portal", "version": "v2"}).json()
        assert finished(portero, good)["state"] == "succeeded"
        body = {"service": "portal", "version": "v3", "env": {"PORTAL_ERROR_RATE": "0.5"}}
        bad = portero.http.post(f"{portero.url}/deploy", json=body).json()
        assert finished(portero, bad)["state"] == "rolled_back"
    finally:
        traffic.close()
    with httpx.Client(trust_env=False, timeout=10) as client:
        for _ in range(150):
            assert client.get(f"{router}/no-such-page").status_code == 404
    return portero


def signed_in(browser: Any, portero: Any, width: int, summaries: list[dict[str, Any]]) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": width, "height": 1000}, locale="en-US")
    page = context.new_page()

    def keep(response: Any) -> None:
        if response.url.endswith("/scalability/dashboard") and "json" in response.headers.get("content-type", ""):
            summaries.append(response.json())

    page.on("response", keep)
    log_in(page, portero)
    until(page, "the charts", "() => Number(document.querySelector('#chart-cpu').dataset.points) > 0")
    return context, page


def log_in(page: Any, portero: Any) -> None:
    """The page asks for a token (none yet): the admin's, then the page shows portero's state."""
    page.goto(f"{portero.url}/dashboard")
    page.wait_for_selector("#login[open]", timeout=15_000)
    page.fill("#token", portero.token)
    page.click("#login-submit")
    page.wait_for_selector("#status.ok", timeout=15_000)


def shot(page: Any, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / name), full_page=True)


def test_the_dashboard_tells_one_story_in_both_languages_and_fits_a_phone(story, browser):
    summaries: list[dict[str, Any]] = []
    context, page = signed_in(browser, story, 1440, summaries)
    card = page.locator(".kpi[data-service=portal]")

    # One definition of p95 and of the error rates, with its window said: cards, legends and the endpoints table
    # show the page's last summary, whose figures are the monitor's last 60 s; the endpoints' faults and ejections
    # are the router's counts.
    def agree() -> bool:
        p95, errors = card.locator(".p95").inner_text(), card.locator(".errors-5xx").inner_text()
        client = card.locator(".errors-4xx").inner_text()
        legend_p95 = page.locator("#legend-p95 li").all_inner_texts()
        legend_errors = page.locator("#legend-errors li").all_inner_texts()
        last = summaries[-1]
        cells = page.evaluate(
            """(s) => [...document.querySelectorAll('#endpoints tbody tr')].map((row) => {
                const v = s.endpoint_traffic[row.dataset.address]?.latency_p95_s;
                const want = v == null ? '–' : (v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(2)} s`);
                const e = s.endpoints.find((x) => x.address === row.dataset.address);
                const faults = String(Object.values(e.faults).reduce((a, b) => a + b, 0));
                return row.querySelector('td.p95').textContent === want
                    && row.querySelector('td.faults').textContent === faults
                    && row.querySelector('td.ejections').textContent.startsWith(String(e.ejections));
            })""",
            last,
        )
        return (
            legend_p95 == [f"portal {p95}"]
            and f"portal 5xx {errors}" in legend_errors
            and f"portal 4xx {client}" in legend_errors
            and bool(cells)
            and all(cells)
        )

    deadline = time.monotonic() + 20
    while not agree():
        assert time.monotonic() < deadline, "cards, legends and the endpoints table disagree"
        time.sleep(0.3)
    assert summaries[-1]["window_s"] == 60
    assert "60 s" in page.locator("#caption-p95").inner_text()
    assert "60 s" in page.locator("#caption-errors").inner_text()
    assert "60 s" in page.locator("#endpoints thead").inner_text()
    assert "60 s" in card.inner_text()
    # The burst of 404s shows: a 4xx share on the card and a 4xx line.
    client = card.locator(".errors-4xx").inner_text()
    assert client not in ("–", "0.0%"), client
    assert summaries[-1]["traffic"]["portal"]["client_error_ratio"] > 0

    # Legends of live replicas only; the retired ones' lines stay in the chart.
    live = {r["id"] for r in story.replicas()}
    for chart in ("cpu", "memory"):
        labels = set(page.locator(f"#legend-{chart} li").evaluate_all("(items) => items.map((i) => i.dataset.label)"))
        assert labels == live, chart
    assert page.locator("#chart-cpu path.line").count() > len(live)

    # The scale box follows the desired count, whoever changed it.
    assert page.locator("#scale-portal").input_value() == "2"
    story.cli("scale", "portal", "3")
    until(page, "the scale box to follow", "() => document.querySelector('#scale-portal').value === '3'", 15)
    shot(page, "dashboard-1440-en.png")

    # Spanish: states, deployment steps and reasons, event kinds, captions.
    page.click("#lang")
    time.sleep(0.5)
    states = page.locator(".state").all_inner_texts()
    assert states
    assert not [s for s in states if ENGLISH.search(s)], states
    for where in ("#deployment", "#kpis", ".charts", "#services thead", "#endpoints thead", "#autoscaler"):
        text = page.locator(where).first.inner_text()
        assert not ENGLISH.search(text), (where, ENGLISH.search(text), text)
    assert "revertido a la revisión 2" in page.locator("#deployment").inner_text()
    kinds = [e["kind"] for e in summaries[-1]["events"][:30]]
    events = page.locator("#events").inner_text()
    english = [k for k in kinds if k in events or re.sub(r"[._]", " ", k) in events]  # as sent, or as words
    assert not english, f"event kinds left in English: {english}"
    shot(page, "dashboard-1440-es.png")

    # Every reason the autoscaler writes, through the page's own translation.
    reasons = autoscaler_reasons()
    translated = page.evaluate(
        "async (reasons) => { const m = await import('/scalability/dashboard/assets/i18n.js');"
        " return reasons.map((r) => m.message(r)); }",
        reasons,
    )
    untranslated = [(r, t) for r, t in zip(reasons, translated, strict=True) if ENGLISH.search(t)]
    assert any(ENGLISH.search(r) for r in reasons)  # there was English to translate
    assert untranslated == []
    context.close()

    # A phone, 390 px wide: the page is no wider than the screen, in either language.
    context, page = signed_in(browser, story, 390, summaries)
    for language in ("en", "es"):
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{language}: the page is {width} px wide on a 390 px screen"
        shot(page, f"dashboard-390-{language}.png")
        page.click("#lang")
        time.sleep(0.5)
    context.close()


def autoscaler_reasons() -> list[str]:
    """What the autoscaler's pure decision writes, from a few traces (up, burst, held, idle, at zero)."""
    from portero.autoscale.decide import History, Limits, Signals, decide
    from portero.spec.models import ServiceAutoscale

    reasons: set[str] = set()
    for policy, limits, readings in (
        (ServiceAutoscale(), Limits(min=1, max=10), [90, 90, 500, 5, 5, 5]),
        (ServiceAutoscale(cpu_percent=None, in_flight=10), Limits(min=2, max=3), [40, 40, 40, 1, 1]),
        (ServiceAutoscale(mode="threshold"), Limits(min=1, max=4), [95, 50, 5, 5]),
    ):
        history, current, now = History(), 2, 1000.0
        for value in readings:
            field = "in_flight" if policy.in_flight else "cpu_percent"
            decision = decide(current, Signals(ready=current, **{field: value}), policy, limits, history, now)
            reasons.add(decision.reason)
            history, current, now = decision.history, decision.desired, now + 5
    idle = ServiceAutoscale(idle_to_zero_s=10)
    zero = Limits(min=0, max=4)
    for current, signals in ((2, Signals(ready=2, cpu_percent=1, idle_s=60)), (0, Signals(ready=0, queued=3))):
        reasons.add(decide(current, signals, idle, zero, History(), 1000.0).reason)
    reasons.add(decide(0, Signals(ready=0), idle, zero, History(), 1000.0).reason)
    return sorted(reasons)


def test_a_scale_from_the_page_under_the_autoscaler_shows_the_refusal_and_the_box_follows_the_count(portero, browser):
    # Issue 19, case 7: with autoscaling on, a manual scale from the page showed "Done" and was undone in under a
    # second. The API refuses it (409) with the reason: the page must show that reason, in either language, and
    # its scale box the desired count (the autoscaler's), also when the count moves while the page is open.
    service, autoscale = up_under_the_autoscaler(portero)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    log_in(page, portero)
    page.locator(".service[data-service=portal] button.scale").wait_for(timeout=15_000)
    box = page.locator("#scale-portal")
    toast = "document.querySelector('#toast')"

    def refused(words: str) -> str:
        box.fill("3")
        page.locator(".service[data-service=portal] button.scale").click()
        page.click("#confirm-ok")
        shown = until(
            page,
            "the refusal in the toast",
            # the toast in the language asked for: the previous one may still show (5 s)
            f"() => !{toast}.hidden && {toast}.classList.contains('bad')"
            f" && {toast}.textContent.startsWith('{words.split(':')[0]}:') && {toast}.textContent",
            timeout_s=15,
        )
        assert words in shown, shown
        until(page, "the box to show the desired count", "() => document.querySelector('#scale-portal').value === '2'")
        return str(shown)

    shown = refused("Failed: portal: the autoscaler sets its count (autoscale.enabled)")
    assert "Done" not in shown
    assert "services.portal.autoscale.enabled: false" in shown
    page.click("#lang")
    shown = refused("Falló: portal: el autoescalado fija su número de réplicas (autoscale.enabled)")
    assert "autoscaler" not in shown, shown  # no English left in the reason
    time.sleep(2)  # the autoscaler's next passes: nothing was scaled
    assert next(s for s in portero.get("/services")["services"] if s["name"] == "portal")["desired"] == 2
    # The count moves by another hand (an apply raises it): the box follows, without a reload.
    service["replicas"] = {"initial": 3, "min": 3, "max": 4}
    portero.write_spec({"portal": service}, autoscale=autoscale)
    portero.cli("apply")
    until(page, "the box to follow the count", "() => document.querySelector('#scale-portal').value === '3'")
    context.close()
