"""Deployments end to end on the process runtime, under continuous keep-alive load through the router."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from portero.loadgen import LoadReport, run_load
from tests.integration.portero_cli import Portero, portal_service

pytestmark = pytest.mark.integration
DEPLOY = {
    "strategy": "blue-green",
    "keep_old_s": 2,
    "progress_deadline_s": 12,
    "canary_pause_s": 2.5,
    # Latency gates off (a floor of 2 s): on a loaded 2-core machine a cold canary may be slow; errors still gate.
    "analysis": {"window_s": 3, "min_requests": 10, "p95_floor_s": 2},
}


@pytest.fixture
def portero(tmp_path):
    instance = Portero(tmp_path)
    service = portal_service(replicas=2, env={"WEB_CONCURRENCY": "2"}, balance={"slow_start_s": 0})
    service["health"]["start_period_s"] = 6
    instance.write_spec({"portal": service}, deploy=DEPLOY)
    instance.cli("up", "--detach")
    instance.ready(2)
    yield instance
    instance.stop()


async def deploy_under_load(
    portero: Portero, body: dict[str, Any], deadline_s: float = 60
) -> tuple[dict[str, Any], LoadReport, float]:
    """Start a deployment while 6 keep-alive clients load the router; wait for its end; stop the load."""
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{portero.router_port}/work?ms=1"  # a cheap page that PORTAL_ERROR_RATE reaches
    load = asyncio.ensure_future(run_load(url, concurrency=6, duration_s=deadline_s + 30, stop=stop, pause_s=0.005))
    await asyncio.sleep(1.0)
    started_wall = time.time() - 1.0
    async with httpx.AsyncClient(trust_env=False, auth=portero.auth) as client:
        started = (await client.post(f"{portero.url}/deploy", json={"service": "portal", **body})).json()
        assert "id" in started, started
        deadline = time.monotonic() + deadline_s
        while True:
            d = (await client.get(f"{portero.url}/deployments/{started['id']}")).json()
            if d["state"] != "running":
                break
            assert time.monotonic() < deadline, d
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    stop.set()
    return d, await load, started_wall


def version_served(portero: Portero) -> str:
    return httpx.get(f"http://127.0.0.1:{portero.router_port}/", trust_env=False).headers["x-app-version"]


def step_at(d: dict[str, Any], text: str) -> float:
    return next(s["at"] for s in d["steps"] if text in s["message"])


async def test_blue_green_switches_with_no_failed_request_then_bad_revisions_roll_back(portero):
    # v1 -> v2: zero failures, and every request sent after the switch is answered by v2.
    d, report, t0 = await deploy_under_load(portero, {"version": "v2"})
    assert d["state"] == "succeeded", [s["message"] for s in d["steps"]]
    assert report.failed == 0, (dict(report.statuses), dict(report.errors))
    switch = step_at(d, "switched") - t0
    after = [version for sent, _, version, _ in report.timeline if sent > switch + 0.01]
    assert after
    assert set(after) == {"v2"}
    assert d["finished_at"] - d["started_at"] < 15  # the goal on the process runtime

    # v3 never passes its health check: abandoned, v2 keeps serving, nothing fails.
    d, report, _ = await deploy_under_load(portero, {"version": "v3", "env": {"PORTAL_FAIL_HEALTH": "1"}})
    assert d["state"] == "rolled_back", d
    assert "ready replica(s) after" in d["reason"]
    assert report.failed == 0, (dict(report.statuses), dict(report.errors))
    assert set(report.versions) == {"v2"}

    # v4 answers 500 to half its requests after the switch: rolled back within the analysis window.
    d, report, t0 = await deploy_under_load(portero, {"version": "v4", "env": {"PORTAL_ERROR_RATE": "0.5"}})
    assert d["state"] == "rolled_back", d
    assert "error rate" in d["reason"]
    assert step_at(d, "rolled back") - step_at(d, "switched") <= DEPLOY["analysis"]["window_s"] + 1
    failed_v4 = sum(1 for _, status, version, _ in report.timeline if status == 500 and version == "v4")
    assert failed_v4 > 0
    assert abs(d["failed_requests"] - failed_v4) <= 3  # counted by the router, reported by the deployment
    assert report.timeline[-1][2] == "v2"
    assert version_served(portero) == "v2"

    # Rollback to any kept revision is itself a deployment.
    out = portero.cli("rollback", "portal", "1")
    assert "rolled back" not in out.stderr
    deployments = portero.get("/deployments", service="portal")["deployments"]
    assert deployments[0]["kind"] == "rollback"
    assert deployments[0]["state"] == "succeeded"
    assert deployments[0]["to_revision"] == 1
    assert version_served(portero) == "v1"
    history = portero.cli("history", "portal").stdout
    assert "serving" in history
    assert "rollback" in history


async def test_canary_moves_traffic_in_steps_matching_their_weights(portero):
    d, report, t0 = await deploy_under_load(portero, {"version": "v2", "strategy": "canary"})
    assert d["state"] == "succeeded", (d.get("reason"), [s["message"] for s in d["steps"]])
    assert report.failed == 0
    starts = [s["at"] - t0 for s in d["steps"] if "canary step" in s["message"] and "% of traffic" in s["message"]]
    shares = [10, 50]
    for begin, share in zip(starts, shares, strict=False):
        window = [v for sent, _, v, _ in report.timeline if begin + 0.3 < sent < begin + 2.3]
        measured = 100 * window.count("v2") / len(window)
        assert len(window) > 100
        assert abs(measured - share) <= 3, (share, measured, len(window))


async def test_a_second_deploy_of_the_same_service_is_refused_while_one_runs(portero):
    async with httpx.AsyncClient(trust_env=False, auth=portero.auth) as client:
        first = await client.post(f"{portero.url}/deploy", json={"service": "portal", "version": "v2"})
        assert first.status_code == 202
        second = await client.post(f"{portero.url}/deploy", json={"service": "portal", "version": "v3"})
        assert second.status_code == 409
        assert "still running" in second.json()["error"]["message"]
