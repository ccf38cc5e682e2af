"""The router when an endpoint misbehaves or dies, and when a client sends what the router cannot vouch for.

Each misbehaving endpoint is a real process (misbehaving.py) doing what one was seen to do, behind a real router
process (run_router.py), so that the router's memory and descriptors can be read from outside: the client's answer
and its time are bounded by the configured timeouts, the router's memory stays within 50 MB of its start, the fault
shows in that endpoint's counts, and nothing is left held once the clients are gone.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.router.backend import Reply
from tests.integration.router.conftest import Process, router_process_argv, wait_until
from tests.integration.router.rawhttp import Client, get, one

HERE = Path(__file__).parent
MB = 1024 * 1024


def misbehaving_argv(mode: str) -> list[str]:
    return [sys.executable, str(HERE / "misbehaving.py"), mode]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Watched:
    """A router process with one service, its baseline of memory and descriptors taken once it is warm."""

    def __init__(self, router: Process) -> None:
        self.router = router
        self.baseline = router.ask("stats")
        self.rss_mb = rss_mb(router.pid)

    def stats(self) -> dict[str, Any]:
        return self.router.ask("stats")

    def endpoint(self, address: str) -> dict[str, Any]:
        return next(e for e in self.stats()["endpoints"] if e["address"] == address)

    def faults(self, address: str) -> dict[str, int]:
        return self.endpoint(address)["faults"]

    def settled(self, what: str) -> None:
        """Every client is gone: nothing counted in flight, no descriptor left beyond the baseline."""

        def clean() -> bool:
            now = self.stats()
            in_flight = sum(e["in_flight"] for e in now["endpoints"])
            return now["active"] == 0 and in_flight == 0 and now["fds"] <= self.baseline["fds"] + 2

        wait_until(clean, timeout=5, what=f"the router to hold nothing after {what}")
        assert rss_mb(self.router.pid) - self.rss_mb < 50, "the router's memory grew by 50 MB or more"


@pytest.fixture
def watched(processes: Callable[[list[str]], Process]) -> Callable[..., tuple[Watched, Process]]:
    def start(mode: str, **settings: Any) -> tuple[Watched, Process]:
        bad = processes(misbehaving_argv(mode))
        router = processes(router_process_argv({"app": [bad.address]}, **settings))
        return Watched(router), bad

    return start


def test_a_large_response_that_stalls_after_its_head_is_cut_and_counted_against_the_endpoint(watched):
    view, bad = watched("stall-after-head-large", stall_timeout_s=1, response_timeout_s=30)
    started = time.monotonic()
    with Client(view.router.port, timeout=10) as client:
        client.send(get("/"))
        assert client.read_line() == b"HTTP/1.1 200 OK"  # streamed as it comes: over HOLD_MAX
        while client._more():  # the head, 10 bytes of the 1,000,000, then the close
            pass
        took = time.monotonic() - started
    assert 1.0 <= took < 2.0, f"cut after {took:.2f} s; stall_timeout_s is 1"
    assert view.faults(bad.address)["stalled"] == 1
    # Clients that give up first free their slots and upstream connections at once, not at the stall timeout.
    clients = [Client(view.router.port) for _ in range(20)]
    for client in clients:
        client.send(get("/"))
    time.sleep(0.3)
    for client in clients:
        client.close()
    view.settled("20 clients left a stalled response")
    assert view.endpoint(bad.address)["errors"] >= 1


def test_a_small_response_that_stalls_after_its_head_gets_504_not_half_an_answer(watched):
    """A small response (Content-Length within HOLD_MAX) goes to the client whole or not at all: stalled, the
    client gets a clean 504 in the stall timeout rather than a head and a cut connection."""
    view, bad = watched("stall-after-head", stall_timeout_s=1, response_timeout_s=30)
    started = time.monotonic()
    response = one(view.router.port, get("/"))
    took = time.monotonic() - started
    assert response.status == 504
    assert 1.0 <= took < 2.0, f"answered after {took:.2f} s; stall_timeout_s is 1"
    assert view.faults(bad.address)["stalled"] == 1
    view.settled("a stalled small response")


def test_an_endpoint_that_never_reads_the_request_body_gets_504_in_the_stall_timeout(watched):
    view, bad = watched("never-read-body", stall_timeout_s=1)
    body = b"x" * (50 * MB)
    answers: list[bytes] = []
    started = time.monotonic()
    with Client(view.router.port, timeout=15) as client:

        def read() -> None:
            answers.append(client.read_line())

        reader = threading.Thread(target=read)
        reader.start()
        client.send_unless_closed(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % len(body))
        client.send_unless_closed(body)
        reader.join(15)
        took = time.monotonic() - started
    assert answers == [b"HTTP/1.1 504 Gateway Timeout"]
    assert took < 5, f"answered after {took:.1f} s"
    assert view.faults(bad.address)["stalled"] == 1
    view.settled("a body the endpoint never read")


def test_a_response_head_without_end_gets_502_and_no_memory(watched):
    view, bad = watched("huge-head")
    started = time.monotonic()
    response = one(view.router.port, get("/"))
    assert response.status == 502
    assert b"response head larger than 65536 bytes" in response.body
    assert time.monotonic() - started < 3
    assert view.faults(bad.address)["bad_response"] == 1
    view.settled("a 300 MB response head")


def test_a_hanging_endpoint_gets_504_after_the_response_timeout_once_not_three_times(watched):
    view, bad = watched("hang", response_timeout_s=1)
    started = time.monotonic()
    assert one(view.router.port, get("/")).status == 504
    took = time.monotonic() - started
    assert 1.0 <= took < 2.0, f"504 after {took:.2f} s: timeouts are not retried by default"
    assert view.faults(bad.address)["timeout"] == 1
    latency = view.endpoint(bad.address)["latency_p99_s"]
    assert latency is not None
    assert latency >= 1.0
    view.settled("a hanging endpoint")


def test_early_hints_reach_the_client_whole(watched):
    view, _ = watched("early-hints")
    with Client(view.router.port) as client:
        client.send(get("/"))
        assert client.read_line() == b"HTTP/1.1 103 Early Hints"
        assert client.read_line() == b"Link: </style.css>; rel=preload; as=style"
        assert client.read_line() == b""
        final = client.response()
    assert (final.status, final.body) == (200, b"hello")


def test_a_transfer_coding_other_than_chunked_gets_502(watched):
    view, bad = watched("gzip-chunked")
    response = one(view.router.port, get("/"))
    assert response.status == 502
    assert b"transfer coding" in response.body
    assert view.faults(bad.address)["bad_response"] == 1
    view.settled("a gzip-coded response")


# -- requests the router cannot vouch for never reach an endpoint ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /x HTTP/2.0", 505),
        (b"GET /x HTTP/1.2", 505),
        (b"GET /x HTTP/3.0", 505),
        (b"GET /x HTTP/0.9", 505),
        (b"GET * HTTP/1.1", 400),
        (b"POST * HTTP/1.1", 400),
    ],
)
def test_versions_and_targets_the_router_does_not_serve_reach_no_endpoint(proxy, backend, line, status):
    response = one(proxy.port, line + b"\r\nHost: app\r\nContent-Length: 0\r\n\r\n")
    assert response.status == status
    assert backend.heads == []


def test_options_asterisk_still_reaches_the_endpoint(proxy, backend):
    backend.handler = lambda request: Reply(body=b"options")
    assert one(proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n").body == b"options"
    assert [r.target for r in backend.requests] == ["*"]


REQUEST_FORMS = [
    b"GET / HTTP/1.1\r\nHost: app\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /head HTTP/1.1\r\nHost: app\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n",
    b"GET http://app/absolute?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /chunked HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"DELETE /x HTTP/1.1\r\nHost: app\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
    b"PATCH /x HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"GET /%00%ff?a=%zz HTTP/1.1\r\nHost: app\r\nCookie: " + b"c" * 4000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AA\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
    b"\r\nGET /after-blank HTTP/1.1\r\nHost: app\r\n\r\n",
    # Refused by the router itself: these must never reach the endpoint at all.
    b"GET /x HTTP/2.0\r\nHost: app\r\n\r\n",
    b"GET /x HTTP/1.2\r\nHost: app\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: app\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",
]


def test_no_request_a_client_can_send_makes_a_healthy_lenient_endpoint_look_sick(processes):
    """1,000 requests of every form, from clients without any credentials, to two endpoints running Python's own
    http.server (which answers even what it should not): no endpoint is ejected, no breaker opens, no fault is
    counted against either."""
    lenient = [processes(misbehaving_argv("lenient")) for _ in range(2)]
    breaker = {"min_requests": 5, "failure_ratio": 0.1}
    router = processes(
        router_process_argv({"app": [p.address for p in lenient]}, breaker=breaker, outlier={"consecutive_failures": 2})
    )
    view = Watched(router)
    statuses: dict[int, int] = {}
    failed: list[tuple[bytes, bytes]] = []
    for n in range(1000):
        form = REQUEST_FORMS[n % len(REQUEST_FORMS)]
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sock.sendall(form)
            first = sock.recv(64)
        code = int(first.split(b" ")[1]) if first.startswith(b"HTTP/1.1 ") else 0
        statuses[code] = statuses.get(code, 0) + 1
        if code == 0 or (500 <= code < 600 and code != 505):
            failed.append((form[:60], first))
    assert not failed, (sorted(statuses.items()), failed)
    for endpoint in view.stats()["endpoints"]:
        assert endpoint["ejections"] == 0, endpoint
        assert endpoint["breaker"] == "closed", endpoint
        assert sum(endpoint["faults"].values()) == 0, endpoint
        assert endpoint["responses"]["5xx"] == 0, endpoint


# -- an endpoint dies, again and again, under load ------------------------------------------------------------------

KILL_LOOP_S = float(__import__("os").environ.get("PORTERO_KILL_LOOP_S", "12"))  # `make bench`: 30
# Between a client's requests: the load stays "50 keep-alive clients" without taking both cores from the test that
# runs beside this one in `make test`; `make bench` (bench/resilience.py) sets 0, as fast as they go.
LOAD_PAUSE_S = float(__import__("os").environ.get("PORTERO_LOAD_PAUSE_S", "0.01"))


async def test_endpoints_killed_again_and_again_under_load_fail_no_request(processes):
    """50 keep-alive clients; one of three endpoints is killed with SIGKILL every 3-8 s and started again on its
    port 2 s later. A request in flight on the dead one, or on its pooled connections, is retried on another at
    once (it never reached a living app), and its refused connections take it out of rotation at once."""
    import asyncio
    import random

    from portero.loadgen import run_load
    from tests.integration.router.conftest import backend_process_argv

    backends = [processes(backend_process_argv(name)) for name in ("a", "b", "c")]
    ports = [b.port for b in backends]
    router = processes(router_process_argv({"app": [b.address for b in backends]}, health={"interval_s": 0.5}))
    stop = asyncio.Event()
    load = asyncio.ensure_future(
        run_load(
            f"http://127.0.0.1:{router.port}/",
            concurrency=50,
            duration_s=KILL_LOOP_S,
            stop=stop,
            pause_s=LOAD_PAUSE_S,
        )
    )
    kills = 0
    deadline = time.monotonic() + KILL_LOOP_S - 3
    rng = random.Random(16)
    await asyncio.sleep(1)
    while time.monotonic() < deadline:
        index = rng.randrange(3)
        backends[index].kill()
        kills += 1
        await asyncio.sleep(2)
        backends[index] = await asyncio.to_thread(processes, backend_process_argv("abc"[index], ports[index]))
        await asyncio.sleep(rng.uniform(1, 6))  # 3-8 s between kills, counting the 2 s down
    report = await load
    p99 = report.percentile(99)
    print(f"kill loop: {kills} kills, {report.sent} requests, {report.failed} failed, p99 {p99:.3f} s")
    assert kills >= 2
    assert report.sent > 1000
    assert report.failed == 0, (report.statuses, report.errors)
    assert p99 is not None
    assert p99 < 1.0


async def test_a_retry_storm_stays_bounded_when_every_endpoint_answers_503(start_router, backends):
    """Retries of answers (here 503, `retry_on_status`) cost budget: upstream tries stay within
    requests x (1 + retry_budget_ratio) + retry_budget_min, however many clients ask at once."""

    from portero.loadgen import run_load

    failing = [backends(f"b{n}") for n in range(3)]
    for backend in failing:
        backend.handler = lambda request: Reply(status=503, body=b"busy")
    proxy = start_router(
        {"app": failing},
        retry_on_status=[503],
        retry_budget_ratio=0.2,
        retry_budget_min=5,
        breaker={"min_requests": 100_000},  # neither breakers nor ejections: the budget alone bounds the retries
        outlier={"consecutive_failures": 1000},
    )
    report = await run_load(f"http://127.0.0.1:{proxy.port}/", concurrency=40, duration_s=3)
    tries = sum(len(b.requests) for b in failing)
    requests = sum(report.statuses.values())
    print(f"retry storm: {requests} requests, {tries} upstream tries")
    assert report.statuses.keys() == {503}
    assert requests > 200
    assert tries <= requests * 1.2 + 5
    assert tries > requests  # some were retried: the bound is not met by never retrying
