"""The router in processes of its own: traffic never stops with the control plane, a router restart refuses no
connection, a dead worker is replaced at once.

Each test runs a real portero whose service routes to three static endpoints (the router tests' recording backend,
each a process), under 50 keep-alive clients, and counts every request that failed and every connection refused.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from portero.loadgen import LoadReport, run_load
from tests.integration.portero_cli import ROOT, Portero
from tests.integration.router.conftest import Process, backend_process_argv

pytestmark = pytest.mark.integration
CLIENTS = 50
# The p99 comparisons of slow control work hold on a machine of their own (`make bench` sets this); in `make test`
# the other test worker shares the 2 cores, so there they are measured and printed, and the rest is asserted.
STRICT_P99 = os.environ.get("PORTERO_STRICT_P99") == "1"
# Between a client's requests: the load stays "50 keep-alive clients" without taking both cores from the test that
# runs beside this one in `make test`; `make bench` (bench/resilience.py) sets 0, as fast as they go.
LOAD_PAUSE_S = float(os.environ.get("PORTERO_LOAD_PAUSE_S", "0.01"))


@pytest.fixture
def backends() -> Iterator[list[Process]]:
    started = [Process(backend_process_argv(name)) for name in ("a", "b", "c")]
    yield started
    for backend in started:
        backend.stop()


def static_service(backends: list[Process]) -> dict[str, Any]:
    return {"endpoints": [{"address": b.address, "weight": 1} for b in backends]}


def start(portero: Portero, backends: list[Process], **router: Any) -> None:
    portero.write_spec({"web": static_service(backends)}, router={"workers": 2, **router})
    portero.cli("up", "--detach")


def load(portero: Portero, duration_s: float, stop: asyncio.Event | None = None) -> asyncio.Future[LoadReport]:
    """The clients' load for `duration_s`, or until `stop` is set."""
    url = f"http://127.0.0.1:{portero.router_port}/"
    run = run_load(url, concurrency=CLIENTS, duration_s=duration_s, stop=stop, pause_s=LOAD_PAUSE_S)
    return asyncio.ensure_future(run)


def refused(report: LoadReport) -> int:
    return sum(count for error, count in report.errors.items() if "refused" in error.lower())


def router_pids(portero: Portero) -> set[int]:
    info = portero.router_processes()
    return {info["pid"], *(w["pid"] for w in info["workers"]), *info["spare"]}


@pytest.mark.timeout(300)
async def test_killing_the_control_plane_leaves_traffic_flowing_and_the_next_one_adopts_the_router(portero, backends):
    """Issue 15, acceptance 1: 50 keep-alive clients for 30 s, the control plane SIGKILLed at 10 s, `portero up` at
    15 s; the load goes on at least 2 s past the adoption (an `up` under this load took up to 15 s)."""
    start(portero, backends)
    before = router_pids(portero)
    stop = asyncio.Event()
    began = time.monotonic()
    traffic = load(portero, 120, stop)
    await asyncio.sleep(10)
    os.kill(portero.pid(), signal.SIGKILL)
    await asyncio.sleep(5)  # no control plane at all
    await asyncio.to_thread(portero.cli, "up", "--detach")
    after = await asyncio.to_thread(router_pids, portero)
    await asyncio.sleep(max(2.0, 30 - (time.monotonic() - began)))
    stop.set()
    report = await traffic
    print(f"control plane killed under load: {report.sent} requests, {report.failed} failed, {refused(report)} refused")
    assert report.sent > 3000
    assert report.failed == 0, report.errors
    assert after == before, "the new control plane started other router processes instead of adopting them"
    events = await asyncio.to_thread(portero.events)
    assert any(e["kind"] == "router.adopted" for e in events)


async def test_a_router_restart_under_load_fails_and_refuses_nothing(portero, backends):
    start(portero, backends)
    before = router_pids(portero)
    traffic = load(portero, 20)
    await asyncio.sleep(5)
    result = await asyncio.to_thread(portero.cli, "router", "restart", "--json")
    report = await traffic
    after = await asyncio.to_thread(router_pids, portero)
    print(f"router restarted under load: {report.sent} requests, {report.failed} failed; {result.stdout[:200]}")
    assert report.sent > 2000
    assert report.failed == 0, report.errors
    workers_before = before - {min(before)}
    assert not (after & workers_before), "old workers still serve after the restart"
    spares = portero.router_processes()["spare"]
    assert len(spares) == 1, f"one spare after a restart, not {spares}"
    assert spares[0] not in before


async def test_a_killed_worker_costs_at_most_its_requests_in_flight_and_is_replaced_within_a_second(portero, backends):
    start(portero, backends)
    info = portero.router_processes()
    victim = info["workers"][0]["pid"]
    stop = asyncio.Event()
    traffic = load(portero, 120, stop)  # until 2 s after the new worker serves
    await asyncio.sleep(3)  # every client has its connection and sends
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    def replaced() -> dict[str, Any] | None:
        now = portero.router_processes()
        fresh = [w for w in now["workers"] if w["pid"] != victim and w["version"] >= info["applied"]]
        return now if len(fresh) == len(info["workers"]) else None

    await asyncio.to_thread(portero.wait, "a new worker serving", replaced, 5, 0.02)
    took = time.monotonic() - killed_at
    await asyncio.sleep(2)  # and on, with the new worker
    stop.set()
    report = await traffic
    print(f"worker killed: {report.failed} failed of {report.sent}, replaced in {took:.2f} s; {dict(report.errors)}")
    assert refused(report) == 0
    assert report.failed <= CLIENTS  # at most one request in flight per client, on the killed worker's connections
    assert took < 1.0

    def told() -> bool:
        return any(e["kind"] == "router.worker_died" for e in portero.events())

    # recorded by the time the test's load used to end (a fixed 12 s): 8 s after the kill
    await asyncio.to_thread(
        portero.wait, "the router.worker_died event", told, max(0.1, 8 - (time.monotonic() - killed_at))
    )


# -- slow control work never slows traffic ---------------------------------------------------------------------------

TINY = str(Path(__file__).parents[1] / "fixtures" / "tiny_app.py")


@dataclass(frozen=True)
class Measured:
    p99_ms: float
    failed: int


PACED_LUA = Path(__file__).parent / "paced.lua"


async def measured(portero: Portero, seconds: float) -> Measured:
    """Light load (50 keep-alive clients, each waiting 20 ms after each response): the p99 then measures how soon
    the router gets to a request, not a queue of the machine's own making. Where the p99 is compared (`make
    bench`), wrk sends it: the Python load generator's own event loop is most of a p99 of 5 ms (wrk's is 3.5)."""
    url = f"http://127.0.0.1:{portero.router_port}/"
    if not STRICT_P99:
        report = await run_load(url, concurrency=CLIENTS, duration_s=seconds, pause_s=0.02)
        p99 = report.percentile(99)
        assert p99 is not None
        return Measured(p99 * 1000, report.failed)
    wrk = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{seconds:g}s", "--latency", "--timeout", "5s", "-s", str(PACED_LUA), url]
    done = await asyncio.to_thread(subprocess.run, wrk, capture_output=True, text=True, check=True)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", done.stdout, re.M)
    assert p99 is not None, done.stdout
    errors = re.findall(r"(?:connect|read|write|timeout|Non-2xx or 3xx responses:) (\d+)", done.stdout)
    return Measured(float(p99[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99[2]], sum(map(int, errors)))


@pytest.mark.timeout(300)
async def test_reading_40_mb_of_logs_and_following_them_leaves_the_routers_p99_alone(portero, backends):
    services = {"web": static_service(backends), "chatty": {"command": ["python3", TINY], "replicas": {"initial": 1}}}
    portero.write_spec(services, router={"workers": 2})
    portero.cli("up", "--detach")
    replica = next(r for r in portero.replicas() if r["service"] == "chatty")
    fill_logs(portero, replica["id"], 40)
    before = await measured(portero, 6)
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.log_reader",
        portero.url,
        "chatty",
        cwd=ROOT,
        env={**os.environ, "PORTERO_TOKEN": portero.token},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    during = await measured(portero, 6)
    reads = int((await asyncio.wait_for(reader.communicate(b"stop\n"), 120))[0])
    # Alone again: the p99 alone is the mean of before and after, so that the machine's drift over the test (its
    # neighbours on the host) is not counted as the reads'.
    after = await measured(portero, 6) if STRICT_P99 else before
    alone = (before.p99_ms + after.p99_ms) / 2
    started = time.monotonic()
    tail = portero.get("/logs", service="chatty", limit=200)["lines"]
    tail_s = time.monotonic() - started
    print(
        f"router p99 {alone:.1f} ms alone ({before.p99_ms:.1f} before, {after.p99_ms:.1f} after), "
        f"{during.p99_ms:.1f} ms during {reads} log reads of 40 MB; the last 200 lines in {tail_s * 1000:.0f} ms"
    )
    assert before.failed == during.failed == after.failed == 0
    assert reads >= 4
    assert len(tail) == 200
    assert tail_s < 2.0  # it costs what it returns (all 40 MB took 5-7 s)
    if STRICT_P99:  # `make bench`, on a machine of its own: in `make test` another test shares the 2 cores
        assert during.p99_ms <= 1.2 * alone + 1.0  # 1 ms: what a p99 of a few ms moves by itself


def fill_logs(portero: Portero, replica: str, megabytes: int) -> None:
    """A replica that has run for long: its rotated log files full, as the shim leaves them (10 MiB each)."""
    folder = portero.state / "replicas" / replica
    line = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 3600)) + " stdout " + "x" * 90 + "\n"
    block = (line * ((1 << 20) // len(line))).encode()
    for index in range(megabytes // 10, 0, -1):
        with (folder / f"replica.log.{index}").open("wb") as handle:
            for _ in range((10 << 20) // len(block)):
                handle.write(block)
    assert sum(p.stat().st_size for p in folder.glob("replica.log*")) >= (megabytes - 10) << 20


# -- a deployment on two workers: the switch holds everywhere, every error is counted once --------------------------

BLUE_GREEN = {
    "strategy": "blue-green",
    "keep_old_s": 2,
    "progress_deadline_s": 30,
    "analysis": {"window_s": 3, "min_requests": 10, "p95_floor_s": 2},
}


async def deploy(portero: Portero, body: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, auth=portero.auth, timeout=10) as client:
        started = (await client.post(f"{portero.url}/deploy", json={"service": "portal", **body})).json()
        assert "id" in started, started
        deadline = time.monotonic() + timeout_s
        while True:
            d = (await client.get(f"{portero.url}/deployments/{started['id']}")).json()
            if d["state"] != "running":
                return d
            assert time.monotonic() < deadline, d
            await asyncio.sleep(0.2)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


@pytest.mark.timeout(300)
async def test_blue_green_on_two_workers_switches_everywhere_and_counts_every_error_once(portero):
    from tests.integration.portero_cli import portal_service

    service = portal_service(replicas=2, env={"WEB_CONCURRENCY": "2"}, balance={"slow_start_s": 0})
    portero.write_spec({"portal": service}, router={"workers": 2}, deploy=BLUE_GREEN)
    portero.cli("up", "--detach")
    portero.ready(2)
    url = f"http://127.0.0.1:{portero.router_port}/work?ms=1"
    started = time.time()
    traffic = asyncio.ensure_future(run_load(url, concurrency=CLIENTS, duration_s=45, pause_s=0.01))
    await asyncio.sleep(2)
    switched = await deploy(portero, {"version": "v2"})
    assert switched["state"] == "succeeded", [s["message"] for s in switched["steps"]]
    switch_at = next(s["at"] for s in switched["steps"] if "switched" in s["message"]) - started
    await asyncio.sleep(1)
    failing = await deploy(portero, {"version": "v3", "env": {"PORTAL_ERROR_RATE": "0.5"}})
    assert failing["state"] == "rolled_back", failing["reason"]
    report = await traffic
    after = [version for sent, _, version, _ in report.timeline if sent > switch_at and version]
    print(f"after the switch: {len(after)} answers, {set(after)}")
    assert len(after) >= 5000
    assert "v1" not in after

    seen_5xx = sum(count for status, count in report.statuses.items() if status >= 500)
    assert seen_5xx > 0
    await asyncio.sleep(2.5)  # the monitor's next passes
    metrics = (await asyncio.to_thread(portero.http.get, portero.url.rsplit("/", 1)[0] + "/metrics")).text
    in_metrics = metric(metrics, "portero_service_requests_total", service="portal", code="5xx")
    print(f"5xx: clients saw {seen_5xx}, /metrics {in_metrics:g}, the deployment {failing['failed_requests']}")
    assert in_metrics == seen_5xx
    assert failing["failed_requests"] == seen_5xx

    pushes = [
        seconds
        for at, seconds in portero.router_processes()["pushes"]
        if any(d["started_at"] <= at <= (d["finished_at"] or at) for d in (switched, failing))
    ]
    p99 = sorted(pushes)[min(len(pushes) - 1, int(0.99 * len(pushes)))]
    print(f"snapshots during the deployments: {len(pushes)}, every worker served each within {p99 * 1000:.1f} ms (p99)")
    assert len(pushes) >= 4
    assert p99 <= 0.1


SLOWLORIS = """
import socket, sys
held = []
for _ in range(int(sys.argv[2])):
    sock = socket.socket()
    sock.setblocking(False)
    if sock.connect_ex(("127.0.0.1", int(sys.argv[1]))) not in (0, 115):
        sock.close()
        continue
    held.append(sock)
for sock in held:
    try:
        sock.send(b"GET /scalability/health HTTP/1.1\\r\\nHost: x\\r\\n")  # and never the blank line
    except OSError:
        pass
print(len(held), flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(300)
async def test_20000_half_sent_requests_to_the_admin_api_leave_the_router_alone_and_time_out(portero, backends):
    """Slowloris at the admin port, from two processes of 10,000 connections each (a process may hold 20,000
    descriptors here): every connection sends half a request head and waits. The API keeps at most
    `admin.max_connections` of them, closes the rest at once, and answers again once the kept ones time out; the
    router, in processes of its own, does not notice."""
    timeout_s = 25  # long enough for a busy machine to open 20,000 connections and to measure while they are held
    portero.write_spec(
        {"web": static_service(backends)},
        router={"workers": 2},
        admin={"port": portero.admin_port, "request_timeout_s": timeout_s, "max_connections": 200},
    )
    portero.cli("up", "--detach")
    before = await measured(portero, 5)
    argv = [sys.executable, "-c", SLOWLORIS, str(portero.admin_port), "10000"]
    attackers = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220 - returns at once
        for _ in range(2)
    ]
    try:
        attacked_at = time.monotonic()
        opened = [int(await asyncio.to_thread(a.stdout.readline)) for a in attackers if a.stdout is not None]
        held_for = time.monotonic() - attacked_at
        during = await measured(portero, 4)  # while they are held (making them is the attackers' CPU, not theirs)
        assert time.monotonic() - attacked_at < timeout_s, "the measurement outlasted the half-open connections"
        answered = await asyncio.to_thread(
            portero.wait, "the API to answer again", lambda: portero.get("/health")["status"], timeout_s * 3 + 10, 0.2
        )
        took = time.monotonic() - attacked_at
    finally:
        for attacker in attackers:
            attacker.kill()
            attacker.wait(10)
    print(
        f"router p99 {before.p99_ms:.1f} ms before, {during.p99_ms:.1f} ms with {sum(opened)} half-open admin "
        f"connections (opened in {held_for:.1f} s); the API answered again {took:.1f} s after they began"
    )
    assert sum(opened) >= 19_000
    assert answered
    assert before.failed == during.failed == 0
    if STRICT_P99:
        assert during.p99_ms <= 1.2 * before.p99_ms + 1.0
