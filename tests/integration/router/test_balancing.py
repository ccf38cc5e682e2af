"""Balancing end to end: weighted round robin shares, least requests, sticky hashing, and `peek` (next-server)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.integration.router.backend import Reply
from tests.integration.router.conftest import wait_until
from tests.integration.router.rawhttp import Client, get

pytestmark = pytest.mark.integration


def served_by(client: Client, path: str = "/", headers: tuple[tuple[str, str], ...] = ()) -> str:
    response = client.get(path, headers=headers)
    assert response.status == 200
    return response.body.decode()


def test_weights_3_to_1_over_10000_requests(start_router, backends):
    a, b = backends("a"), backends("b")
    proxy = start_router({"app": [(a, 3), (b, 1)]}, balance={"algorithm": "round_robin"})
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def load(requests: int) -> None:
        local: Counter[str] = Counter()
        with Client(proxy.port) as client:
            for _ in range(requests):
                local[served_by(client)] += 1
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=load, args=(2500,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts.values()) == 10_000
    share = counts["a"] / 10_000
    assert abs(share - 0.75) <= 0.02, f"a served {share:.2%}, weight says 75%"
    assert len(a.requests) + len(b.requests) == 10_000
    assert a.connections + b.connections - len(a.probe_connections) - len(b.probe_connections) <= 16  # keep-alive


def test_smooth_round_robin_interleaves(start_router, backends):
    a, b = backends("a"), backends("b")
    proxy = start_router({"app": [(a, 2), (b, 1)]})
    with Client(proxy.port) as client:
        order = "".join(served_by(client) for _ in range(9))
    assert order == "abaabaaba"


def test_least_requests_avoids_the_busy_endpoint(start_router, backends):
    a, b = backends("a"), backends("b")
    for backend in (a, b):
        backend.handler = lambda request: Reply(delay_s=3.0 if request.target == "/slow" else 0.0)
    proxy = start_router({"app": [a, b]}, balance={"algorithm": "least_requests"})
    with Client(proxy.port) as idle:
        spread = Counter(served_by(idle) for _ in range(200))
    assert min(spread["a"], spread["b"]) > 40, f"without load both should serve: {spread}"

    with Client(proxy.port, timeout=15) as slow, Client(proxy.port) as fast:
        slow.send(get("/slow"))
        wait_until(lambda: any(r.target == "/slow" for r in a.heads + b.heads), what="the slow request upstream")
        busy = "a" if any(r.target == "/slow" for r in a.heads) else "b"
        during = Counter(served_by(fast, "/fast") for _ in range(30))
        assert slow.response().body.decode() == busy
    assert during == Counter({"b" if busy == "a" else "a": 30}), f"one request in flight at {busy}: {during}"


def test_hash_by_cookie_is_sticky(start_router, backends):
    a, b = backends("a"), backends("b")
    proxy = start_router({"app": [a, b]}, balance={"algorithm": "hash", "hash_cookie": "session"})
    owners: dict[str, set[str]] = {}
    with Client(proxy.port) as client:
        for round_ in range(5):
            for user in range(40):
                cookie = (("Cookie", f"theme=dark; session=user-{user}"),)
                owners.setdefault(f"user-{user}", set()).add(served_by(client, f"/{round_}", cookie))
        without = [served_by(client) for _ in range(4)]
    assert all(len(backends_seen) == 1 for backends_seen in owners.values()), owners
    spread = Counter(next(iter(seen)) for seen in owners.values())
    assert set(spread) == {"a", "b"}, f"40 sessions all on one endpoint: {spread}"
    assert sorted(without) == ["a", "a", "b", "b"]  # no cookie: round robin


def test_hash_by_header_is_sticky(start_router, backends):
    a, b = backends("a"), backends("b")
    proxy = start_router({"app": [a, b]}, balance={"algorithm": "hash", "hash_header": "X-User"})
    with Client(proxy.port) as client:
        seen = {user: {served_by(client, headers=(("X-User", f"u{user}"),)) for _ in range(5)} for user in range(30)}
    assert all(len(s) == 1 for s in seen.values())
    assert {next(iter(s)) for s in seen.values()} == {"a", "b"}


def test_peek_names_the_next_pick(start_router, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    proxy = start_router({"app": [(a, 3), (b, 2), (c, 1)]})
    names = {a.address: "a", b.address: "b", c.address: "c"}
    service = proxy.service()
    with Client(proxy.port) as client:
        for _ in range(18):
            peeked = proxy.call(lambda: service.peek(proxy.router.now()).key)
            again = proxy.call(lambda: service.peek(proxy.router.now()).key)
            assert peeked == again, "peek took a turn"
            assert served_by(client) == names[peeked]
