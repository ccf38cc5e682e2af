"""The router in front of real portal replicas: failover without a failed request when a replica dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime

import pytest

from portero.loadgen import run_load
from tests.integration.portero_cli import Portero, portal_service

pytestmark = pytest.mark.integration
KILL_LOOP_S = float(os.environ.get("PORTERO_KILL_LOOP_S", "15"))  # `make bench`: 30
# Between a client's requests: the load stays keep-alive clients without taking both cores from the test that
# runs beside this one in `make test`; `make bench` (bench/resilience.py) sets 0, as fast as they go.
LOAD_PAUSE_S = float(os.environ.get("PORTERO_LOAD_PAUSE_S", "0.01"))


def in_rotation(portero: Portero, address: str) -> bool:
    servers = portero.get("/load-balancer/servers")["servers"]
    return any(s["address"] == address and s["state"] == "active" for s in servers)


async def test_kill_9_under_load_fails_no_request_and_leaves_rotation_within_a_second(portero):
    service = portal_service(replicas=3, env={"WEB_CONCURRENCY": "2"}, balance={"slow_start_s": 0})
    service["health"]["healthy_threshold"] = 2  # back in rotation after two passing checks
    portero.write_spec({"portal": service})
    portero.cli("up", "--detach")
    victim = portero.ready(3)[0]
    address = f"127.0.0.1:{victim['port']}"
    assert in_rotation(portero, address)
    app_pid = portero.get(f"/containers/{victim['id']}/stats")["app_pid"]

    stop = asyncio.Event()
    load = asyncio.ensure_future(
        run_load(
            f"http://127.0.0.1:{portero.router_port}/",
            concurrency=8,
            duration_s=30,
            stop=stop,
            pause_s=LOAD_PAUSE_S,
        )
    )
    await asyncio.sleep(1.5)
    os.kill(app_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while in_rotation(portero, address):
        assert time.monotonic() - killed_at < 1.0, "the dead endpoint stayed in rotation for more than 1 s"
        await asyncio.sleep(0.02)
    left_after = time.monotonic() - killed_at
    print(f"out of rotation {left_after:.3f} s after the kill")

    def back() -> dict | None:
        replica = next(r for r in portero.replicas() if r["id"] == victim["id"])
        return replica if replica["state"] == "ready" and replica["restarts"] == 1 else None

    restarted = await asyncio.to_thread(portero.wait, "the replica to be ready again", back, 15)
    assert await asyncio.to_thread(
        portero.wait, "the restarted replica in rotation", lambda: in_rotation(portero, restarted["address"]), 5
    )
    await asyncio.sleep(1.0)
    stop.set()
    report = await load
    assert report.sent > 200
    assert report.failed == 0, (report.statuses, report.errors)
    assert left_after < 1.0


async def test_replicas_killed_again_and_again_under_load_fail_no_request(portero):
    """50 keep-alive clients through the router to three supervised replicas; one replica's app is killed with
    SIGKILL every 3-8 s and the supervisor starts it again: no request fails and the p99 stays under 1 s."""
    import random

    service = portal_service(replicas=3, env={"WEB_CONCURRENCY": "2"}, balance={"slow_start_s": 0})
    portero.write_spec({"portal": service})
    portero.cli("up", "--detach")
    portero.ready(3)
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{portero.router_port}/"
    # 50 clients at up to 10 requests/s each: what three two-worker portal replicas serve with room to spare, so
    # the p99 measures failover, not a queue at the replicas while one of three restarts.
    load = asyncio.ensure_future(run_load(url, concurrency=50, duration_s=KILL_LOOP_S, stop=stop, pause_s=0.1))
    rng = random.Random(16)
    kills = 0
    deadline = time.monotonic() + KILL_LOOP_S - 2
    await asyncio.sleep(1)
    while time.monotonic() < deadline:
        # The API is asked from a thread: a blocking call on this loop would hold the clients up and show as latency.
        ready = [r for r in await asyncio.to_thread(portero.replicas) if r["state"] == "ready"]
        victim = rng.choice(ready) if ready else None
        stats = await asyncio.to_thread(portero.get, f"/containers/{victim['id']}/stats") if victim else {}
        if stats.get("app_pid"):
            os.kill(stats["app_pid"], signal.SIGKILL)
            kills += 1
        await asyncio.sleep(rng.uniform(3, 8))
    report = await load
    p99 = report.percentile(99)
    print(f"kill loop (supervised): {kills} kills, {report.sent} requests, {report.failed} failed, p99 {p99:.3f} s")
    assert kills >= 2
    assert report.failed == 0, (
        report.statuses,
        report.errors,
        report.failures(),
        f"load began {datetime.fromtimestamp(time.time() - time.monotonic() + report.started_at):%H:%M:%S.%f}",
    )
    assert p99 is not None
    assert p99 < 1.0
