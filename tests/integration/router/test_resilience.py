"""Failures and degradation: retries and passive ejection when a backend dies, the circuit breaker, draining,
and the bounded queue with its maintenance page when a service has no endpoint."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from portero.router.breaker import BreakerState
from portero.router.service import EndpointState
from portero.router.stats import REFUSED
from tests.integration.router.backend import Reply
from tests.integration.router.conftest import backend_process_argv, wait_until
from tests.integration.router.rawhttp import Client, get, one

pytestmark = pytest.mark.integration


def test_killed_backend_fails_no_request_and_leaves_rotation(start_router, processes):
    a, b = processes(backend_process_argv("a")), processes(backend_process_argv("b"))
    proxy = start_router({"app": [a.address, b.address]})
    stop = threading.Event()
    served: list[Counter[str]] = []
    failures: list[str] = []

    def load() -> None:
        counts: Counter[str] = Counter()
        served.append(counts)
        client = Client(proxy.port)
        try:
            while not stop.is_set():
                try:
                    response = client.get("/")
                except OSError as exc:  # only a router that drops a request gets here
                    failures.append(repr(exc))
                    client.close()
                    client = Client(proxy.port)
                    continue
                if response.status != 200:
                    failures.append(f"{response.status} {response.body[:80]!r}")
                counts[response.body.decode()] += 1
                if response.header("connection") == "close":
                    client.close()
                    client = Client(proxy.port)
        finally:
            client.close()

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(c["b"] for c in served) > 100, what="b to serve under load")
        b.kill()  # SIGKILL: the kernel resets its connections, new ones are refused
        endpoint = proxy.endpoint(b.address)
        wait_until(
            lambda: proxy.call(lambda: endpoint.state) is EndpointState.DOWN,  # its refusal took it out at once
            timeout=5,
            what="the dead endpoint to be taken out of rotation",
        )
        tries_then = proxy.call(lambda: endpoint.stats.counters.requests)
        served_a = sum(c["a"] for c in served)
        wait_until(lambda: sum(c["a"] for c in served) > served_a + 300, what="more load after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == []
    assert proxy.call(lambda: endpoint.stats.counters.requests) == tries_then, "the dead endpoint was still tried"
    endpoint_a = proxy.endpoint(a.address)
    assert proxy.call(lambda: endpoint_a.stats.counters.retries) == 0
    assert proxy.call(lambda: endpoint.stats.counters.retries) > 0  # requests that hit b were retried on a


def test_idempotent_request_is_retried_but_a_post_that_was_sent_is_not(start_router, backends):
    """A reset before any response byte: a GET goes to another endpoint; a POST the endpoint may have acted on
    gets 502 instead (RFC 9110 §9.2.2), and is never sent twice."""
    broken, good = backends("broken"), backends("good")
    broken.handler = lambda request: Reply(reset=True)
    proxy = start_router({"app": [broken, good]})
    with Client(proxy.port) as client:
        assert [client.get(f"/get{i}").body for i in range(2)] == [b"good", b"good"]
    assert [r.target for r in broken.requests] == ["/get0"]  # round robin: the first try went to `broken`
    post = b"POST /p%d HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi"
    statuses = [one(proxy.port, post % i).status for i in range(2)]
    posts = [r.target for r in broken.requests + good.requests if r.method == "POST"]
    assert sorted(posts) == ["/p0", "/p1"], "a POST reached two endpoints"
    assert sorted(statuses) == [200, 502]


def test_post_is_retried_when_nothing_was_sent(start_router, backends, processes):
    """A connect failure sends nothing: even a POST may go to another endpoint."""
    dead = processes(backend_process_argv("dead"))
    good = backends("good")
    proxy = start_router({"app": [dead.address, good]})
    dead.kill()
    for i in range(2):
        response = one(proxy.port, b"POST /p%d HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi" % i)
        assert (response.status, response.body) == (200, b"good")
    assert [r.body for r in good.requests] == [b"hi", b"hi"]


def test_circuit_breaker_opens_on_5xx_and_half_opens_later(start_router, backend):
    backend.handler = lambda request: Reply(status=500, body=b"boom")
    breaker = {"min_requests": 5, "failure_ratio": 0.5, "window_s": 30, "open_s": 1.5, "half_open_probes": 2}
    proxy = start_router({"app": [backend]}, breaker=breaker, queue_timeout_s=0)
    endpoint = proxy.endpoint(backend)
    with Client(proxy.port) as client:
        assert [client.get().status for _ in range(5)] == [500] * 5
        opened_at = time.monotonic()
        assert proxy.call(lambda: endpoint.breaker.state) is BreakerState.OPEN
        refused = client.get()
        assert refused.status == 503
        assert refused.header("retry-after") is not None
        assert len(backend.requests) == 5, "an open breaker let a request through"

        backend.handler = lambda request: Reply(body=b"healed")
        statuses = []
        while time.monotonic() - opened_at < 10:
            response = client.get()
            statuses.append(response.status)
            if response.status == 200:
                break
            time.sleep(0.1)
        waited = time.monotonic() - opened_at
        assert statuses[-1] == 200
        assert set(statuses[:-1]) <= {503}
        assert waited > 1.0, f"the breaker let a probe through after {waited:.2f} s; open_s is 1.5"
        assert proxy.call(lambda: endpoint.breaker.state) is BreakerState.HALF_OPEN
        assert client.get().status == 200  # the second probe closes it
        assert proxy.call(lambda: endpoint.breaker.state) is BreakerState.CLOSED
        assert [client.get().body for _ in range(5)] == [b"healed"] * 5


def test_draining_endpoint_finishes_its_request_and_gets_no_new_one(start_router, backends):
    a, b = backends("a"), backends("b")
    for backend in (a, b):
        backend.handler = lambda request: Reply(delay_s=1.5 if request.target == "/slow" else 0.0)
    proxy = start_router({"app": [a, b]})
    with Client(proxy.port, timeout=15) as slow, Client(proxy.port) as fast:
        slow.send(get("/slow"))
        wait_until(lambda: any(r.target == "/slow" for r in a.heads + b.heads), what="the slow request upstream")
        draining, other = (a, b) if a.heads else (b, a)
        proxy.drain(draining)
        during = Counter(fast.get("/fast").body.decode() for _ in range(20))
        finished = slow.response()
    assert (finished.status, finished.body.decode()) == (200, draining.name)
    assert during == Counter({other.name: 20})
    assert [r.target for r in draining.heads] == ["/slow"]
    service = proxy.service()
    wait_until(lambda: proxy.call(lambda: draining.address not in service.endpoints), what="the drained endpoint to go")


def test_drain_deadline_cuts_what_is_left(start_router, backends):
    a, b = backends("a"), backends("b")
    a.handler = lambda request: Reply(delay_s=5.0)
    proxy = start_router({"app": [a, b]})
    started = time.monotonic()
    with Client(proxy.port, timeout=15) as client:
        client.send(b"POST /slow HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi")  # round robin: to a
        wait_until(lambda: bool(a.requests), what="the request at a")
        proxy.drain(a, 0.5)
        response = client.response()
    assert response.status == 502  # sent, so not retried: the deadline ends it
    assert time.monotonic() - started < 4.5
    assert b.requests == []


def test_no_endpoint_gets_503_with_retry_after_and_the_maintenance_page(start_router):
    proxy = start_router({"app": []}, queue_timeout_s=0.5)
    response = one(proxy.port, get("/"))
    assert response.status == 503
    assert response.header("retry-after") is not None
    assert response.header("content-type").startswith("text/html")
    assert b"Under maintenance" in response.body
    assert b"We'll be right back" in response.body


def test_queued_request_is_served_once_an_endpoint_registers(start_router, backend):
    proxy = start_router({"app": []}, queue_timeout_s=10)
    with Client(proxy.port, timeout=15) as client:
        client.send(get("/waiting"))
        wait_until(lambda: proxy.call(lambda: len(proxy.service().queue)) == 1, what="the request to queue")
        assert backend.heads == []
        proxy.register(backend)
        response = client.response()
    assert (response.status, response.body) == (200, b"backend")
    assert [r.target for r in backend.requests] == ["/waiting"]


def test_full_queue_answers_503_at_once(start_router, backend):
    proxy = start_router({"app": []}, queue_timeout_s=10, queue_max=1)
    with Client(proxy.port, timeout=15) as first:
        first.send(get("/first"))
        wait_until(lambda: proxy.call(lambda: len(proxy.service().queue)) == 1, what="the request to queue")
        started = time.monotonic()
        assert one(proxy.port, get("/second")).status == 503
        assert time.monotonic() - started < 5
        proxy.register(backend)
        assert first.response().status == 200


def test_body_beyond_the_replay_buffer_survives_a_connect_failure(start_router, backends, processes):
    """Nothing went upstream when the first connect failed, so the whole body (past what a retry could replay
    once sent) is still the router's to send to the next endpoint."""
    dead = processes(backend_process_argv("dead"))
    good = backends("good")
    proxy = start_router({"app": [dead.address, good]})  # round robin: the first try goes to `dead`
    dead.kill()
    body = bytes(range(256)) * 800  # 200 KiB: more than the 64 KiB a retry may replay
    for head in (b"Content-Length: %d\r\n\r\n" % len(body), b"Transfer-Encoding: chunked\r\n\r\n"):
        payload = body if b"Length" in head else b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        with Client(proxy.port, timeout=15) as client:
            response = client.request(b"POST /upload HTTP/1.1\r\nHost: app\r\n" + head + payload)
        assert (response.status, response.body) == (200, b"good")
        assert good.requests[-1].body == body
    assert proxy.call(lambda: proxy.endpoint(dead.address).stats.counters.faults[REFUSED]) >= 1


def test_client_that_leaves_releases_its_endpoint_and_its_queue_place(start_router, backend):
    backend.handler = lambda request: Reply(delay_s=1.0)
    proxy = start_router({"app": [backend]})
    for _ in range(3):
        with Client(proxy.port) as client:
            client.send(get("/abandoned"))
            wait_until(lambda: len(backend.heads) > 0, what="the request upstream")
        backend.heads.clear()
    endpoint = proxy.endpoint(backend)
    wait_until(lambda: proxy.call(lambda: endpoint.target.in_flight) == 0, what="the endpoint released")
    assert proxy.call(lambda: endpoint.breaker.state) is BreakerState.CLOSED
    assert proxy.call(lambda: endpoint.outlier.consecutive_failures) == 0  # the client left: not the endpoint's fault

    empty = start_router({"app": []}, queue_timeout_s=10)
    with Client(empty.port) as client:
        client.send(get("/queued"))
        wait_until(lambda: empty.call(lambda: len(empty.service().queue)) == 1, what="the request to queue")
    wait_until(lambda: empty.call(lambda: len(empty.service().queue)) == 0, what="the queue place freed")
    # Its wait counts all the same, and nothing of it is kept.
    assert empty.call(lambda: (empty.service().stats.waits.count, len(empty.service().queued_at))) == (1, 0)


def test_concurrency_limit_per_endpoint_queues_the_rest(start_router, backend):
    backend.handler = lambda request: Reply(delay_s=1.0)
    proxy = start_router({"app": [backend]}, balance={"max_in_flight": 2}, queue_timeout_s=10)
    results: list[int] = []

    def call() -> None:
        with Client(proxy.port, timeout=15) as client:
            results.append(client.get("/limited").status)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: backend.answering == 2, what="two requests at the endpoint")
    wait_until(lambda: proxy.call(lambda: len(proxy.service().queue)) == 2, what="the other two to queue")
    for thread in threads:
        thread.join(15)
    assert results == [200] * 4
    assert backend.most_answering == 2
    # The two that queued waited about a second each for a slot: the service's queue waits, apart from latency.
    waits = proxy.call(lambda: proxy.service().stats.waits)
    assert waits.count == 2
    assert 1.5 < waits.sum < 10, waits.sum
    assert proxy.call(lambda: proxy.service().queued_at) == {}
