"""Monitoring end to end: a real portero, real portal replicas burning CPU, a real webhook receiver on loopback.

Bounded and tolerant of a loaded 2-core machine: thresholds are low, windows short, and every wait has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool
from tests.integration.portero_cli import Portero, portal_service
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration
TINY = Path(__file__).parents[1] / "fixtures" / "tiny_app.py"


class Load:
    """`clients` threads GETting `url` until stopped, `pause_s` between requests: a steady load."""

    def __init__(self, url: str, clients: int, pause_s: float = 0.0) -> None:
        self.url = url
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.done = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    client.get(self.url)
                    self.done += 1
                except httpx.HTTPError:
                    time.sleep(0.05)
                if self.pause_s:
                    time.sleep(self.pause_s)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(35)


@pytest.fixture
def receiver():
    instance = Receiver()
    yield instance
    instance.close()


def monitoring_spec(portero: Portero, receiver: Receiver) -> None:
    portero.write_spec(
        {"portal": portal_service(replicas=1)},
        monitoring={"interval_s": 0.5},
        alerts={
            "rules": [
                {
                    "name": "replica-busy",
                    "metric": "replica_cpu_percent",
                    "aggregate": "avg",
                    "window_s": 2,
                    "threshold": 10,
                    "for_s": 2,
                    "summary": "{replica} busy at {value}%",
                }
            ],
            "webhooks": [{"url": receiver.url, "group_wait_s": 0, "group_interval_s": 0, "repeat_interval_s": 3600}],
        },
    )


def payloads(receiver: Receiver, alertname: str) -> list[dict[str, Any]]:
    return [b for b in list(receiver.bodies) if b["groupLabels"].get("alertname") == alertname]


def test_a_busy_replica_raises_the_cpu_alert_and_the_receiver_gets_firing_then_resolved(portero, receiver):
    monitoring_spec(portero, receiver)
    portero.cli("up", "--detach")
    (replica,) = portero.ready(1)
    seen: set[str] = set()

    def state() -> str | None:
        found = [a for a in portero.get("/monitoring/alerts")["alerts"] if a["name"] == "replica-busy"]
        if found:
            seen.add(found[0]["state"])
            return str(found[0]["state"])
        return None

    load = Load(f"http://127.0.0.1:{portero.router_port}/work?ms=100", clients=3)
    try:
        portero.wait("the alert to fire", lambda: state() == "firing", timeout_s=40, step_s=0.1)
        (alert,) = [a for a in portero.get("/monitoring/alerts")["alerts"] if a["name"] == "replica-busy"]
        assert "pending" in seen  # it waited out for_s first
        assert alert["labels"]["replica"] == replica["id"]
        assert alert["annotations"]["summary"].startswith(f"{replica['id']} busy at ")
        firing = portero.wait("the firing notification", lambda: payloads(receiver, "replica-busy"), timeout_s=10)
    finally:
        load.close()
    assert load.done > 0
    portero.wait(
        "the resolved notification",
        lambda: any(b["status"] == "resolved" for b in payloads(receiver, "replica-busy")),
        timeout_s=40,
        step_s=0.2,
    )
    first, last = firing[0], payloads(receiver, "replica-busy")[-1]
    for body, status in ((first, "firing"), (last, "resolved")):
        assert body["version"] == "4"
        assert body["status"] == status
        assert body["receiver"] == "webhook-1"
        assert body["groupKey"] == '{}:{alertname="replica-busy"}'
        assert body["externalURL"] == f"http://127.0.0.1:{portero.admin_port}"
        assert body["commonLabels"]["alertname"] == "replica-busy"
        (item,) = body["alerts"]
        assert item["status"] == status
        assert item["labels"] == {
            "alertname": "replica-busy",
            "severity": "warning",
            "service": "portal",
            "replica": replica["id"],
        }
        assert set(item) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert first["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert last["alerts"][0]["endsAt"] > last["alerts"][0]["startsAt"]
    kinds = [e["kind"] for e in portero.events(service="portal") if e["subject"] == "replica-busy"]
    assert kinds[-2:] == ["alert.firing", "alert.resolved"]
    assert [a for a in portero.get("/monitoring/alerts")["alerts"] if a["name"] == "replica-busy"] == []


def tree(pid: int) -> list[psutil.Process]:
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def test_replica_memory_and_cpu_agree_with_psutil_under_steady_load(portero, receiver):
    monitoring_spec(portero, receiver)
    portero.cli("up", "--detach")
    (replica,) = portero.ready(1)
    processes = tree(replica["pid"])
    # Half a core's demand: below a fair share even on a busy 2-core machine, so the load itself stays steady.
    load = Load(f"http://127.0.0.1:{portero.router_port}/work?ms=25", clients=1, pause_s=0.025)
    try:
        time.sleep(2)  # steady state
        start_wall, start_cpu = time.time(), cpu_seconds(processes)
        time.sleep(10)
        end_wall, end_cpu = time.time(), cpu_seconds(processes)
        rss = sum(p.memory_info().rss for p in processes)
        snapshot = portero.get("/monitoring/metrics")
        series = portero.get("/monitoring/metrics", name="replica_cpu_percent", since=start_wall)["series"]
    finally:
        load.close()
    expected_cpu = 100 * (end_cpu - start_cpu) / (end_wall - start_wall)
    (points,) = [s["points"] for s in series if s["labels"]["replica"] == replica["id"]]
    # 1 s buckets of 0.5 s samples: those that start within the window cover as long a span as psutil's.
    inside = [v for t, v in points if start_wall <= t <= end_wall - 1]
    measured_cpu = sum(inside) / len(inside)
    (sample,) = [r for r in snapshot["replicas"] if r["id"] == replica["id"]]
    print(f"cpu: monitor {measured_cpu:.1f} vs psutil {expected_cpu:.1f}; memory {sample['memory_bytes']} vs {rss}")
    assert len(inside) >= 8
    assert abs(measured_cpu - expected_cpu) <= 5.0
    assert abs(sample["memory_bytes"] - rss) <= 0.10 * rss
    assert sample["processes"] == len(processes)


def test_metrics_endpoint_parses_and_every_metric_has_help_and_type(portero, receiver):
    monitoring_spec(portero, receiver)
    portero.cli("up", "--detach")
    portero.ready(1)
    httpx.get(f"http://127.0.0.1:{portero.router_port}/", trust_env=False)
    curl = require_tool("curl", "the acceptance check scrapes /metrics with it")
    metrics_url = f"http://127.0.0.1:{portero.admin_port}/metrics"

    def scraped() -> str | None:
        command = [curl, "-sf", "-H", f"Authorization: Bearer {portero.token}", metrics_url]
        text = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        return text if "portero_service_requests_total" in text else None

    text = portero.wait("a scrape with router traffic", scraped, timeout_s=10, step_s=0.2)
    families = list(text_string_to_metric_families(text))
    assert len(families) > 25
    for family in families:
        assert family.name.startswith("portero_")
        exposed = family.name + ("_total" if family.type == "counter" else "")  # the parser drops the suffix
        assert f"# HELP {exposed} " in text
        assert f"# TYPE {exposed} {family.type}" in text
    names = {f.name for f in families}
    assert {"portero_replica_cpu_usage_ratio", "portero_service_request_duration_seconds"} <= names
    assert 'portero_service_requests_total{code="2xx",service="portal"}' in text


def test_monitoring_off_is_clean_and_logs_follow_new_replicas_and_keep_crashed_ones(portero, monkeypatch):
    tiny = {
        "command": [sys.executable, str(TINY)],
        "health": {"interval_s": 1},
        "replicas": {"initial": 1, "min": 0, "max": 3},
    }
    crashing = {**tiny, "env": {"TINY_EXIT": "3"}, "replicas": {"initial": 1}}
    portero.write_spec({"tiny": tiny, "broken": crashing})
    monkeypatch.setenv("MONITORING_ENABLED", "false")
    portero.cli("up", "--detach", "--wait-s", "3", check=False)  # `broken` never gets ready
    portero.wait("tiny to be ready", lambda: [r for r in portero.replicas() if r["state"] == "ready"])
    for path in ("/monitoring/metrics", "/monitoring/alerts"):
        response = portero.http.get(portero.url + path)
        assert response.status_code == 409
        assert "monitoring is disabled" in response.json()["error"]["message"]
    scrape = portero.http.get(f"http://127.0.0.1:{portero.admin_port}/metrics")
    assert scrape.status_code == 200
    assert "portero_monitoring_enabled 0.0" in scrape.text

    # A crashed replica's output stays readable while it waits to restart.
    def crashed_lines() -> list[dict[str, Any]]:
        lines = portero.get("/logs", service="broken")["lines"]
        return [x for x in lines if x["text"] == "exiting at once"]

    assert portero.wait("two crashes' output", lambda: len(crashed_lines()) >= 2, timeout_s=15, step_s=0.2)

    # A replica that appears after `follow` began is followed from its first line.
    old = {r["id"] for r in portero.replicas() if r["service"] == "tiny"}
    params = {"service": "tiny", "follow": "true", "limit": 1}
    with portero.http.stream("GET", f"{portero.url}/logs", params=params, timeout=30) as stream:
        portero.cli("scale", "tiny", "2")
        deadline = time.monotonic() + 20
        first_new = None
        for raw in stream.iter_lines():  # health checks keep lines coming: the deadline is looked at often
            line = json.loads(raw[6:]) if raw.startswith("data: ") else {}
            if line.get("replica") not in (None, *old):
                first_new = line
                break
            assert time.monotonic() < deadline, "no line of the new replica within 20 s"
    assert first_new is not None
    assert first_new["text"].startswith("listening on")  # its very first line


def test_crash_loop_alerts_of_retired_replicas_resolve_at_once(portero):
    broken = {
        "command": [sys.executable, str(TINY)],
        "env": {"TINY_EXIT": "3"},
        "replicas": {"initial": 2, "min": 0, "max": 2},
        "restart": {"initial_backoff_s": 0.2, "max_backoff_s": 0.5},
    }
    portero.write_spec({"broken": broken}, monitoring={"interval_s": 0.5})
    portero.cli("up", "--detach", "--wait-s", "2", check=False)  # never ready

    def firing() -> list[dict[str, Any]]:
        alerts = portero.get("/monitoring/alerts")["alerts"]
        return [a for a in alerts if a["name"] == "crash-loop" and a["state"] == "firing"]

    looping = portero.wait("both replicas' crash-loop alerts", lambda: len(found := firing()) == 2 and found, 40, 0.2)
    portero.cli("scale", "broken", "0")
    portero.wait("the replicas to be retired", lambda: portero.replicas() == [], timeout_s=15, step_s=0.2)
    # Their restart counts stay in the 10-minute window, and the rule keeps firing 5 minutes after: without
    # knowing the replicas are gone, these alerts would fire on for 15 minutes.
    portero.wait("the alerts to resolve", lambda: firing() == [], timeout_s=10, step_s=0.2)
    resolved = {
        e["data"]["labels"]["replica"]
        for e in portero.events()
        if e["kind"] == "alert.resolved" and e["subject"] == "crash-loop"
    }
    assert resolved == {a["labels"]["replica"] for a in looping}


def test_alerts_are_pushed_to_a_real_alertmanager_firing_then_resolved(portero, alertmanager):
    tiny = {
        "command": [sys.executable, str(TINY)],
        "health": {"interval_s": 0.5},
        "replicas": {"initial": 1, "min": 0, "max": 2},
    }
    rule = {
        "name": "tiny-serving",
        "metric": "service_ready_replicas",
        "threshold": 0,
        "for_s": 0,
        "summary": "{service} has {value} ready",
    }
    portero.write_spec(
        {"tiny": tiny},
        monitoring={"interval_s": 0.5},
        alerts={"rules": [rule], "alertmanager": {"urls": [alertmanager.url], "resend_interval_s": 2}},
    )
    portero.cli("up", "--detach")
    portero.ready(1)

    def listed() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if a["labels"]["alertname"] == "tiny-serving"]

    (alert,) = portero.wait("Alertmanager to list the alert", listed, timeout_s=20, step_s=0.2)
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {"alertname": "tiny-serving", "severity": "warning", "service": "tiny"}
    assert alert["annotations"]["summary"] == "tiny has 1 ready"
    assert (
        alert["generatorURL"]
        == f"http://127.0.0.1:{portero.admin_port}/scalability/monitoring/alerts?rule=tiny-serving"
    )
    (ours,) = [a for a in portero.get("/monitoring/alerts")["alerts"] if a["name"] == "tiny-serving"]
    assert alert["startsAt"] == ours["fired_at"]
    assert alert["endsAt"] > alert["startsAt"]  # ahead of now: held active by the resends
    time.sleep(3)  # a resend later it is the same alert, still active
    (again,) = listed()
    assert (again["fingerprint"], again["startsAt"]) == (alert["fingerprint"], alert["startsAt"])

    portero.cli("scale", "tiny", "0")
    portero.wait("Alertmanager to drop the resolved alert", lambda: listed() == [], timeout_s=20, step_s=0.2)

    def told(status: str) -> list[dict[str, Any]]:
        return [
            a
            for body in list(alertmanager.received)
            for a in body["alerts"]
            if a["labels"]["alertname"] == "tiny-serving" and a["status"] == status
        ]

    assert told("firing")  # Alertmanager's own notifications: it took both as real alerts
    (resolved,) = portero.wait("Alertmanager's resolved notification", lambda: told("resolved"), timeout_s=20)
    event = next(e for e in portero.events() if e["kind"] == "alert.resolved" and e["subject"] == "tiny-serving")
    assert resolved["endsAt"][:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event["at"]))


def test_the_5xx_of_an_endpoint_gone_between_two_monitor_passes_are_counted(portero):
    """#19 case 1: the monitor samples the router once a pass; an endpoint that served errors and left between two
    passes took its counts along, so `/metrics` never showed them. Here both replicas answer every request with
    500, one of them is retired, and all of it happens between two passes of a 10-s monitor: `/metrics` must show
    every 5xx the clients saw. Before (6f33af1, service totals summed from the endpoints): 20 of the 40."""
    service = portal_service(replicas=2, env={"PORTAL_ERROR_RATE": "1"}, balance={"slow_start_s": 0})
    # Neither ejection nor the breaker takes an endpoint that answers 500 out: both answer every request.
    router = {"outlier": {"consecutive_failures": 1000}, "breaker": {"min_requests": 100_000}}
    portero.write_spec({"portal": service}, router=router, monitoring={"interval_s": 10})
    portero.cli("up", "--detach")
    portero.ready(2)

    def sampled_at() -> float | None:
        response = portero.http.get(portero.url + "/monitoring/metrics")
        return float(response.json()["at"]) if response.status_code == 200 else None

    def next_pass(after: float | None) -> float:
        def new() -> float | None:
            at = sampled_at()
            return at if at is not None and at != after else None

        at: float = portero.wait("a monitor pass", new, timeout_s=30, step_s=0.05)
        return at

    passed = next_pass(sampled_at())
    began = time.monotonic()  # just after a pass: about 10 s to the next one
    with httpx.Client(trust_env=False, timeout=10) as client:
        statuses = [client.get(f"http://127.0.0.1:{portero.router_port}/").status_code for _ in range(40)]
    assert statuses == [500] * 40  # PORTAL_ERROR_RATE=1: every answer but /health's is a 500, from both replicas
    seen = len(statuses)
    portero.cli("scale", "portal", "1")

    def one_endpoint() -> bool:
        return len(portero.get("/load-balancer/servers", service="portal")["servers"]) == 1

    portero.wait("the retired replica's endpoint to leave the router", one_endpoint, timeout_s=8, step_s=0.05)
    took = time.monotonic() - began
    assert sampled_at() == passed, f"a monitor pass came in between ({took:.1f} s): this run tests nothing"
    next_pass(next_pass(passed))  # the pass after the departure, and one more
    text = portero.http.get(portero.url.rsplit("/", 1)[0] + "/metrics").text
    counted = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "portero_service_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels == {"service": "portal", "code": "5xx"}
    )
    print(f"\n5xx: clients saw {seen}, /metrics {counted:g} (the endpoint left {took:.1f} s after a pass)")
    assert counted == seen


def test_an_endpoints_faults_show_in_metrics_status_and_the_servers_list(portero, receiver):
    """A registered server that answers with a transfer coding the router cannot forward (`gzip, chunked`) while
    its health check passes: each such answer is a 502 to its client and a `bad_response` fault of that endpoint,
    counted the same in the API's servers list, in /metrics and in `portero status`."""
    monitoring_spec(portero, receiver)
    portero.cli("up", "--detach")
    portero.ready(1)
    argv = [sys.executable, "-m", "tests.integration.router.misbehaving", "gzip-chunked"]
    bad = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert bad.stdout is not None
        address = f"127.0.0.1:{bad.stdout.readline().strip()}"
        body = {"service": "portal", "address": address}
        assert portero.http.post(f"{portero.url}/load-balancer/register", json=body).status_code == 201

        def server() -> dict[str, Any]:
            servers = portero.http.get(f"{portero.url}/load-balancer/servers").json()["servers"]
            return next(s for s in servers if s["address"] == address)

        portero.wait("the registered server in rotation", lambda: server()["health"] == "up", timeout_s=15)
        codes: list[int] = []
        with httpx.Client(trust_env=False, timeout=10) as client:
            while len(codes) < 2000 and 502 not in codes:  # it is in slow start: a small share at first
                codes += [client.get(f"http://127.0.0.1:{portero.router_port}/").status_code for _ in range(20)]
    finally:
        bad.kill()
        bad.wait()
    assert set(codes) == {200, 502}, codes
    faults = portero.wait("the counts", lambda: server()["faults"]["bad_response"] or None, timeout_s=5)
    assert faults == codes.count(502)
    where = f'endpoint="{address}",kind="bad_response",replica="",service="portal"'

    def scraped() -> float | None:
        text = portero.http.get(f"http://127.0.0.1:{portero.admin_port}/metrics").text
        found = [line for line in text.splitlines() if line.startswith(f"portero_endpoint_faults_total{{{where}}}")]
        return float(found[0].rsplit(" ", 1)[1]) if found and float(found[0].rsplit(" ", 1)[1]) == faults else None

    assert portero.wait("the fault in /metrics", scraped, timeout_s=10) == faults
    shown = portero.cli("status").stdout
    print(shown)
    row = next(line for line in shown.splitlines() if address in line)
    assert f"bad_response {faults}" in row, row
