"""portero.resilience end to end: the real payments stub over loopback, real portal replicas (gunicorn), a real
portero scraping them and alerting, a real redis-server sharing one breaker between replicas."""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from portero.resilience import Breaker, BreakerOpen, Policy, Retry
from portero.runtimes.ports import free_port
from tests.integration.portero_cli import PORTAL, Portero, portal_service

pytestmark = pytest.mark.integration
STUB = Path(__file__).parents[2] / "examples" / "stub" / "stub.py"
RULE = "payments-breaker-open"


class Stub:
    """examples/stub/stub.py serving on a loopback port, in a thread of the test."""

    def __init__(self) -> None:
        spec = importlib.util.spec_from_file_location("payments_stub", STUB)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.server = module.serve("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.http = httpx.Client(trust_env=False, timeout=5)

    def mode(self, mode: str, **extra: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/control", json={"mode": mode, **extra})
        response.raise_for_status()
        return dict(response.json())

    def served(self) -> int:
        return sum(self.http.get(f"{self.url}/control").json()["served"].values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    instance = Stub()
    yield instance
    instance.close()


def page(client: httpx.Client, base: str) -> tuple[float, dict[str, Any]]:
    """(seconds the client waited, the JSON page) of unit 12B's balance."""
    began = time.perf_counter()
    response = client.get(f"{base}/expensas/12B", params={"format": "json"})
    took = time.perf_counter() - began
    response.raise_for_status()
    return took, dict(response.json())


def app_value(portero: Portero, name: str, **labels: str) -> float | None:
    for sample in portero.get("/monitoring/metrics")["app"]:
        if sample["name"] == name and all(sample["labels"].get(k) == v for k, v in labels.items()):
            return float(sample["value"])
    return None


def alert_state(portero: Portero) -> str | None:
    found = [a for a in portero.get("/monitoring/alerts")["alerts"] if a["name"] == RULE]
    return str(found[0]["state"]) if found else None


def test_breaker_opens_the_page_degrades_fast_portero_scrapes_alerts_and_all_recovers(portero, stub, capsys):
    env = {"WEB_CONCURRENCY": "1", "PAYMENTS_URL": stub.url, "PAYMENTS_FAIL_MAX": "2", "PAYMENTS_RESET_S": "4"}
    portero.write_spec(
        {"portal": portal_service(replicas=1, env=env, metrics={"path": "/metrics", "interval_s": 1})},
        monitoring={"interval_s": 0.5},
        alerts={
            "rules": [
                {
                    "name": RULE,
                    "metric": "resilience_breaker_open",
                    "match": {"breaker": "payments"},
                    "threshold": 0,
                    "for_s": 3,
                    "severity": "critical",
                    "summary": "payments breaker open on {replica}",
                }
            ]
        },
    )
    portero.cli("up", "--detach")
    (replica,) = portero.ready(1)
    base = f"http://127.0.0.1:{portero.router_port}"
    client = httpx.Client(trust_env=False, timeout=10)
    _, healthy = page(client, base)
    assert healthy["degraded"] is False
    assert healthy["balance"]["unit"] == "12B"
    portero.wait(
        "the breaker closed in the scraped metrics", lambda: app_value(portero, "resilience_breaker_open") == 0
    )

    stub.mode("fail")
    portero.wait("the breaker to open", lambda: page(client, base)[1]["breaker"] == "open", timeout_s=10)
    served = stub.served()
    timings = [page(client, base) for _ in range(30)]
    assert all(p["degraded"] and p["balance"] is None for _, p in timings)
    assert stub.served() == served  # while open, nothing reached the provider
    html = client.get(f"{base}/expensas/12B")
    assert html.status_code == 200
    assert html.headers["x-degraded"] == "payments"
    assert "El sistema de pagos no responde" in html.text
    client_ms = sorted(t * 1000 for t, _ in timings)
    server_ms = sorted(p["took_ms"] for _, p in timings)
    with capsys.disabled():
        print(
            f"\ndegraded page with the breaker open, 30 requests through portero's router: client median "
            f"{statistics.median(client_ms):.1f} ms, max {client_ms[-1]:.1f} ms; in the app median "
            f"{statistics.median(server_ms):.2f} ms, max {server_ms[-1]:.2f} ms"
        )
    assert statistics.median(client_ms) < 100
    assert server_ms[-1] < 100
    health = httpx.get(f"{base}/health", trust_env=False).json()
    assert health["status"] == "degraded"
    assert health["dependencies"]["payments"]["breaker"] == "open"
    assert portero.replicas()[0]["state"] == "ready"  # degraded, not unready

    portero.wait("the open breaker scraped", lambda: app_value(portero, "resilience_breaker_open") == 1, timeout_s=10)
    series = portero.get("/monitoring/metrics", name='resilience_breaker_open{breaker="payments"}')
    assert series["series"][0]["labels"]["replica"] == replica["id"]
    assert series["series"][0]["points"][-1][1] == 1
    portero.wait("the alert to fire", lambda: alert_state(portero) == "firing", timeout_s=20, step_s=0.2)
    exposition = httpx.get(f"http://127.0.0.1:{portero.admin_port}/metrics", trust_env=False).text
    assert 'portero_app_resilience_breaker_open{breaker="payments"' in exposition

    stub.mode("ok")
    portero.wait("the breaker to close", lambda: page(client, base)[1]["breaker"] == "closed", timeout_s=15, step_s=0.2)
    _, recovered = page(client, base)
    assert recovered["degraded"] is False
    portero.wait("the closed breaker scraped", lambda: app_value(portero, "resilience_breaker_open") == 0, timeout_s=10)
    moves = {
        state: app_value(portero, "resilience_breaker_transitions_total", breaker="payments", state=state)
        for state in ("open", "half-open", "closed")
    }
    assert moves["open"]
    assert moves["half-open"]
    assert moves["closed"]
    portero.wait("the alert to resolve", lambda: alert_state(portero) is None, timeout_s=15, step_s=0.2)
    kinds = [e["kind"] for e in portero.events(service="portal") if e["subject"] == RULE]
    assert kinds[-2:] == ["alert.firing", "alert.resolved"]
    rejected = app_value(portero, "resilience_calls_total", policy="payments", outcome="rejected")
    assert rejected is not None
    assert rejected >= 30


def test_a_breaker_opened_by_one_policy_is_open_for_another_sharing_redis(redis_server):
    url = redis_server.url
    first = Policy(
        "shared",
        retry=Retry(attempts=1),
        breaker=Breaker(fail_max=2, reset_s=30),
        redis_url=url,
        registry=CollectorRegistry(),
    )
    second = Policy(
        "shared",
        retry=Retry(attempts=1),
        breaker=Breaker(fail_max=2, reset_s=30),
        redis_url=url,
        registry=CollectorRegistry(),
    )

    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        first.call(down)
    with pytest.raises(ConnectionError):
        second.call(down)  # the failure count is shared: this second failure trips it
    assert (first.state, second.state) == ("open", "open")
    with pytest.raises(BreakerOpen):
        first.call(lambda: "never called")


def wait(what: str, predicate: Any, timeout_s: float = 15) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def gunicorn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "main:app"]
    full = {**os.environ, "WEB_CONCURRENCY": "2", **env}
    return subprocess.Popen(command, cwd=PORTAL, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_with_redis_a_breaker_opened_by_one_replica_is_open_in_the_others(redis_server, stub, tmp_path):
    env = {
        "PAYMENTS_URL": stub.url,
        "PAYMENTS_FAIL_MAX": "2",
        "PAYMENTS_RESET_S": "3",
        "REDIS_URL": redis_server.url,
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
    }
    ports = [free_port(), free_port()]
    replicas = [gunicorn(port, {**env, "PORTERO_REPLICA_ID": f"portal-{i}"}) for i, port in enumerate(ports)]
    client = httpx.Client(trust_env=False, timeout=10)
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for base in (a, b):
            wait(f"{base} up", lambda base=base: client.get(f"{base}/health").status_code == 200)
        assert page(client, b)[1]["breaker"] == "closed"
        stub.mode("fail")
        wait("replica a's breaker to open", lambda: page(client, a)[1]["breaker"] == "open")
        served = stub.served()
        for _ in range(4):  # every worker of replica b: none has failed a call itself
            _, seen = page(client, b)
            assert (seen["breaker"], seen["degraded"]) == ("open", True)
        assert stub.served() == served
        assert client.get(f"{b}/health").json()["dependencies"]["payments"]["breaker"] == "open"
        metrics = client.get(f"{b}/metrics").text
        assert 'resilience_breaker_open{breaker="payments"} 1.0' in metrics

        stub.mode("ok")
        time.sleep(3.2)
        assert page(client, b)[1]["breaker"] == "closed"  # b's trial call closes it for a too
        assert client.get(f"{a}/health").json()["dependencies"]["payments"]["breaker"] == "closed"
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(10)


def ready_count(portero: Portero) -> int:
    return sum(1 for r in portero.replicas() if r["state"] == "ready")


def test_the_autoscaler_scales_on_a_scraped_custom_metric(portero, stub):
    autoscale = {
        "cpu_percent": None,
        "metrics": [
            {"metric": "resilience_calls_total", "match": {"policy": "payments"}, "aggregate": "rate", "target": 2}
        ],
        "tick_s": 1,
        "stable_window_s": 4,
        "panic_s": 2,
    }
    service = portal_service(
        replicas=1,
        env={"WEB_CONCURRENCY": "1", "PAYMENTS_URL": stub.url},
        metrics={"path": "/metrics", "interval_s": 1},
        autoscale=autoscale,
    )
    service["replicas"] = {"initial": 1, "min": 1, "max": 3}
    portero.write_spec({"portal": service}, monitoring={"interval_s": 0.5}, autoscale={"enabled": True})
    portero.cli("up", "--detach")
    portero.ready(1)
    stop = threading.Event()

    def load() -> None:  # about 10 payments calls a second: 5 times the target of one replica
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                client.get(f"http://127.0.0.1:{portero.router_port}/expensas/12B")
                time.sleep(0.1)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        portero.wait("a scale-up on the custom metric", lambda: ready_count(portero) == 3, timeout_s=60, step_s=0.2)
    finally:
        stop.set()
        thread.join(15)
    decisions = portero.get("/autoscaler")["services"][0]["decisions"]
    reasons = [d["reason"] for d in decisions if d["desired"] > d["current"]]
    assert reasons
    assert reasons[0].startswith('resilience_calls_total{policy="payments"} ')
    assert 'resilience_calls_total{policy="payments"}' in decisions[0]["inputs"]


def test_an_unreachable_redis_neither_stops_the_app_nor_its_calls(redis_server):
    redis_server.stop()
    policy = Policy("lonely", retry=Retry(attempts=1), redis_url=redis_server.url, registry=CollectorRegistry())
    assert policy.call(lambda: "answered") == "answered"
    assert policy.state == "closed"
    redis_server.start()

    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        policy.call(down)
    assert policy.breaker.fail_counter == 1  # back in Redis


def test_a_replica_too_busy_to_be_scraped_holds_up_nothing_and_says_why(portero):
    service = portal_service(replicas=1, metrics={"path": "/metrics", "interval_s": 1, "timeout_s": 1})
    service["health"]["timeout_s"] = 5
    portero.write_spec({"portal": service}, monitoring={"interval_s": 0.5})
    portero.cli("up", "--detach")
    portero.ready(1)
    portero.wait("a good scrape", lambda: portero.get("/monitoring/metrics")["scrapes"][0]["ok"])
    busy = threading.Thread(  # the replica's only worker sleeps: its /metrics cannot answer
        target=lambda: httpx.get(f"http://127.0.0.1:{portero.router_port}/wait?ms=6000", trust_env=False, timeout=20),
        daemon=True,
    )
    busy.start()

    def failed() -> dict[str, Any] | None:
        scrape = portero.get("/monitoring/metrics")["scrapes"][0]
        return scrape if not scrape["ok"] else None

    scrape = portero.wait("a failed scrape", failed, timeout_s=10, step_s=0.1)
    assert "Timeout" in scrape["error"]
    snapshot = portero.get("/monitoring/metrics")
    assert snapshot["portero"]["collect_seconds"] < 0.5  # the pass did not wait for the scrape's 1 s timeout
    up = portero.get("/monitoring/metrics", name="replica_scrape_up", since=-3)["series"][0]["points"]
    assert min(value for _, value in up) < 1  # 1 s buckets average the passes: a failed scrape pulls one below 1
    busy.join(20)
