"""The autoscaler with real replicas and the built-in load generator."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from portero.loadgen import run_load
from tests.integration.portero_cli import Portero, portal_service

pytestmark = pytest.mark.integration
AUTOSCALE = {
    "cpu_percent": None,
    "in_flight": 1,
    "tick_s": 1,
    "stabilization_s": 8,
    "scale_down_cooldown_s": 3,
    "idle_to_zero_s": 3,
    "stable_window_s": 6,
    "panic_s": 4,
}


def start(portero: Portero, minimum: int) -> None:
    service = portal_service(replicas=1, env={"WEB_CONCURRENCY": "1"}, autoscale=AUTOSCALE, balance={"slow_start_s": 0})
    service["replicas"] = {"initial": 1, "min": minimum, "max": 10}
    service["health"]["start_period_s"] = 30
    portero.write_spec({"portal": service}, autoscale={"enabled": True})
    portero.cli("up", "--detach")


def ready_count(portero: Portero) -> int:
    return sum(1 for r in portero.replicas() if r["state"] == "ready")


async def test_a_spike_takes_the_service_from_1_to_10_and_back_with_no_failed_request(portero):
    start(portero, minimum=1)
    portero.ready(1)
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{portero.router_port}/wait?ms=400"
    load = asyncio.ensure_future(run_load(url, concurrency=10, duration_s=60, stop=stop))
    began = time.monotonic()
    first_new = full = None
    while time.monotonic() - began < 30 and full is None:
        count = await asyncio.to_thread(ready_count, portero)
        if count >= 2 and first_new is None:
            first_new = time.monotonic() - began
        if count >= 10:
            full = time.monotonic() - began
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)
    stop.set()
    report = await load
    assert full is not None, "the service did not reach 10 ready replicas within 30 s"
    assert first_new is not None
    assert first_new < 10
    assert report.failed == 0, (dict(report.statuses), dict(report.errors))
    decisions = portero.get("/autoscaler")["services"][0]["decisions"]
    ups = [d for d in decisions if d["changed"] and d["desired"] > d["current"]]
    assert ups, decisions
    assert ups[0]["current"] == 1
    assert "in-flight" in ups[0]["reason"]  # explained: the signal, its value and target, the counts
    assert "→" in ups[0]["reason"]
    assert ups[-1]["desired"] == 10
    # After the load: back down to 1, but only after the stabilization window.
    ended = time.monotonic()
    await asyncio.to_thread(
        portero.wait, "the scale-down to 1", lambda: portero.get("/services")["services"][0]["desired"] == 1, 40
    )
    assert time.monotonic() - ended >= AUTOSCALE["stabilization_s"] - 1
    print(f"first new replica ready {first_new:.1f} s after the step, 10 ready after {full:.1f} s")


async def test_from_zero_the_first_request_waits_and_succeeds(portero):
    start(portero, minimum=0)
    await asyncio.to_thread(
        portero.wait, "the scale to zero", lambda: portero.get("/services")["services"][0]["desired"] == 0, 30
    )
    await asyncio.to_thread(portero.wait, "no replica left", lambda: not portero.replicas(), 20)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        sent = time.monotonic()
        response = await client.get(f"http://127.0.0.1:{portero.router_port}/")
        waited = time.monotonic() - sent
    assert response.status_code == 200
    assert waited < 10
    status = portero.get("/autoscaler")["services"][0]
    await asyncio.to_thread(
        portero.wait,
        "the cold start to be reported",
        lambda: portero.get("/autoscaler")["services"][0]["cold_starts_s"],
        5,
    )
    cold = portero.get("/autoscaler")["services"][0]["cold_starts_s"]
    assert 0 < cold[0] <= waited + 1
    assert status["desired"] >= 1


async def test_a_request_that_waited_with_the_autoscaler_off_is_no_cold_start(portero):
    """#19 case 4: a cold start is a scale from zero that requests waited for, nothing else. Before, a request
    that had waited while the autoscaler was off made it log a "cold start" of that age once switched on."""
    service = portal_service(replicas=0, autoscale=AUTOSCALE, balance={"slow_start_s": 0})
    service["replicas"] = {"initial": 0, "min": 0, "max": 3}
    portero.write_spec({"portal": service}, autoscale={"enabled": False})
    portero.cli("up", "--detach")
    async with httpx.AsyncClient(trust_env=False, timeout=1) as client:
        with pytest.raises(httpx.TimeoutException):  # it waits in the router's queue: no replica to take it
            await client.get(f"http://127.0.0.1:{portero.router_port}/")
    portero.cli("scale", "portal", "1")
    portero.ready(1)
    await asyncio.sleep(2)  # a cold start of the old code would have been ~3 s old by now
    service["replicas"] = {"initial": 1, "min": 1, "max": 3}
    portero.write_spec({"portal": service}, autoscale={"enabled": True})
    portero.cli("apply")
    await asyncio.to_thread(
        portero.wait, "the autoscaler's first decisions", lambda: portero.get("/autoscaler")["services"][0]["signals"]
    )
    await asyncio.sleep(3 * AUTOSCALE["tick_s"])
    status = portero.get("/autoscaler")["services"][0]
    assert status["cold_starts_s"] == [], status
    assert not [e for e in portero.events() if e["kind"] == "autoscaler.cold_start"]


async def test_a_wake_up_from_zero_starts_the_signal_window_afresh(portero):
    """#19 case 4: the load before an idle period says nothing about the one request that wakes the service.
    Before, its readings stayed in the 60-s window and the next pass went 1 → 3."""
    policy = {**AUTOSCALE, "stable_window_s": 60, "stabilization_s": 4, "scale_down_cooldown_s": 2, "panic_s": 2}
    service = portal_service(replicas=1, env={"WEB_CONCURRENCY": "1"}, autoscale=policy, balance={"slow_start_s": 0})
    service["replicas"] = {"initial": 1, "min": 0, "max": 6}
    service["health"]["start_period_s"] = 30
    portero.write_spec({"portal": service}, autoscale={"enabled": True})
    portero.cli("up", "--detach")
    portero.ready(1)
    url = f"http://127.0.0.1:{portero.router_port}"
    report = await run_load(f"{url}/wait?ms=300", concurrency=4, duration_s=8)
    assert report.failed == 0, (dict(report.statuses), dict(report.errors))
    decisions = portero.get("/autoscaler")["services"][0]["decisions"]
    assert max(d["desired"] for d in decisions) >= 3, decisions  # the load took it up
    await asyncio.to_thread(
        portero.wait, "the scale to zero", lambda: portero.get("/services")["services"][0]["desired"] == 0, 30
    )
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        assert (await client.get(f"{url}/")).status_code == 200  # one request wakes it
    await asyncio.sleep(2 * policy["tick_s"])  # the passes after the wake-up (idle_to_zero_s is 3 s)
    decisions = portero.get("/autoscaler")["services"][0]["decisions"]
    woke = max(i for i, d in enumerate(decisions) if d["current"] == 0 and d["desired"] > 0)
    assert decisions[woke]["desired"] == 1, decisions[woke]
    after = [d for d in decisions[woke + 1 :] if d["changed"]]
    assert all(d["desired"] < d["current"] for d in after), after  # never up: nothing but that request came
