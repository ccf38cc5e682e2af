"""Limits: oversize heads (431), slow heads and slow bodies (cut at their deadlines while others are served),
body size (413), idle keep-alive connections."""

from __future__ import annotations

import select
import threading
import time

import pytest

from tests.integration.router.backend import Reply
from tests.integration.router.conftest import wait_until
from tests.integration.router.rawhttp import Client, get, one

pytestmark = pytest.mark.integration


def test_head_over_16_kib_gets_431_and_is_never_forwarded(proxy, backend):
    with Client(proxy.port) as client:
        client.send_unless_closed(get("/big", headers=(("X-Big", "a" * 17 * 1024),)))
        response = client.response()
        assert response.status == 431
        assert client.closed_within(5)
    assert one(proxy.port, get("/after")).status == 200
    assert [r.target for r in backend.heads] == ["/after"]


def test_many_headers_over_16_kib_get_431(proxy, backend):
    headers = tuple((f"X-H{i}", "b" * 100) for i in range(200))  # ~21 KiB in 200 lines
    with Client(proxy.port) as client:
        client.send_unless_closed(get("/many", headers=headers))
        assert client.response().status == 431
        assert client.closed_within(5)
    assert backend.heads == []


def test_head_just_under_16_kib_is_served(proxy, backend):
    assert one(proxy.port, get("/fits", headers=(("X-Big", "a" * 15 * 1024),))).status == 200
    assert backend.requests[0].header("x-big") == "a" * 15 * 1024


def test_head_that_never_ends_is_cut_at_16_kib(proxy, backend):
    with Client(proxy.port) as client:
        client.send(b"GET /endless HTTP/1.1\r\nHost: app\r\nX-Endless: ")
        for _ in range(8):
            if not client.send_unless_closed(b"c" * 4096):
                break
        assert client.response().status == 431
        assert client.closed_within(5)
    assert backend.heads == []


def test_pipelined_head_that_never_ends_is_cut_while_the_first_request_waits(proxy, backend):
    """The next request's head starts while the first is being answered: it is bounded all the same."""
    backend.handler = lambda request: Reply(delay_s=1.0)
    endless = get("/slow") + b"GET /next HTTP/1.1\r\nHost: app\r\nX-Endless: " + b"d" * (1024 * 1024)
    with Client(proxy.port) as client:
        sender = threading.Thread(target=client.send_unless_closed, args=(endless,), daemon=True)
        sender.start()
        assert client.response().status == 200
        assert client.response().status in (408, 431)
        assert client.closed_within(10)
        sender.join(10)
    assert [r.target for r in backend.heads] == ["/slow"]


def test_slowloris_is_cut_at_the_header_timeout_while_others_are_served(start_router, backend):
    proxy = start_router({"app": [backend]}, header_timeout_s=1)
    head = get("/slowloris", headers=(("X-Pad", "p" * 200),))  # 230 bytes: 23 s at one byte per 100 ms
    served = 0
    started = time.monotonic()
    with Client(proxy.port) as slow, Client(proxy.port) as normal:
        cut = False
        for byte in head:
            if not slow.send_unless_closed(bytes([byte])):
                cut = True
                break
            readable, _, _ = select.select([slow.sock], [], [], 0.1)
            if readable:
                cut = True
                break
            assert normal.get("/normal").status == 200
            served += 1
        elapsed = time.monotonic() - started
        assert cut, "the slow head was never cut"
        assert 0.9 < elapsed < 8, f"cut after {elapsed:.1f} s; header_timeout_s is 1"
        if not slow.eof:
            response = slow.response()  # what the router said as it cut
            assert response.status == 408
            assert slow.closed_within(5)
    assert served >= 5
    assert all(r.target == "/normal" for r in backend.heads)


def test_slow_post_body_is_cut_with_408_while_others_are_served(start_router, backend):
    proxy = start_router({"app": [backend]}, body_grace_s=1, min_body_rate_bytes_s=1000)
    served = 0
    started = time.monotonic()
    with Client(proxy.port) as slow, Client(proxy.port) as normal:
        slow.send(b"POST /slow-post HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n")
        cut = False
        for _ in range(1000):  # 10 bytes/s: 100 s for the whole body
            if not slow.send_unless_closed(b"x"):
                cut = True
                break
            readable, _, _ = select.select([slow.sock], [], [], 0.1)
            if readable:
                cut = True
                break
            assert normal.get("/normal").status == 200
            served += 1
        elapsed = time.monotonic() - started
        assert cut
        assert 0.9 < elapsed < 8, f"cut after {elapsed:.1f} s; body_grace_s is 1"
        response = slow.response()
        assert response.status == 408
        assert slow.closed_within(5)
    assert served >= 5
    assert not any(r.target == "/slow-post" for r in backend.requests), "the cut body reached the backend whole"


def test_fast_post_body_is_not_cut(start_router, backend):
    proxy = start_router({"app": [backend]}, body_grace_s=1, min_body_rate_bytes_s=1000)
    with Client(proxy.port) as client:
        client.send(b"POST /ok HTTP/1.1\r\nHost: app\r\nContent-Length: 3000\r\n\r\n")
        for _ in range(3):  # 1000 bytes every 0.3 s: above the rate, and past the grace
            time.sleep(0.3)
            client.send(b"y" * 1000)
        assert client.response().status == 200
    assert backend.requests[0].body == b"y" * 3000


@pytest.fixture
def limited(start_router, backend):
    return start_router({"app": [backend]}, max_body_bytes=1000)


def test_content_length_over_the_limit_gets_413(limited, backend):
    with Client(limited.port) as client:
        client.send(b"POST /big HTTP/1.1\r\nHost: app\r\nContent-Length: 1001\r\n\r\n")
        response = client.response()
        assert response.status == 413
        assert client.closed_within(5)
    assert backend.heads == []


def test_chunked_body_over_the_limit_gets_413(limited, backend):
    with Client(limited.port) as client:
        client.send(b"POST /big HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # 2500 bytes in all, unless the router refuses (and closes) sooner
            if not client.send_unless_closed(b"1f4\r\n" + b"z" * 500 + b"\r\n"):
                break
        client.send_unless_closed(b"0\r\n\r\n")
        response = client.response()
        assert response.status == 413
        assert client.closed_within(5)
    time.sleep(0.2)
    assert not any(r.target == "/big" for r in backend.requests), "a cut body reached the backend whole"


def test_body_at_the_limit_is_served(limited, backend):
    body = b"w" * 1000
    response = one(limited.port, b"POST /fits HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n" + body)
    assert response.status == 200
    chunked = b"POST /fits HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + body + b"\r\n0\r\n\r\n"
    assert one(limited.port, chunked).status == 200
    assert [r.body for r in backend.requests] == [body, body]


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(start_router, backend):
    proxy = start_router({"app": [backend]}, idle_timeout_s=1)
    with Client(proxy.port) as client:
        assert client.get("/one").status == 200
        time.sleep(0.3)
        assert client.get("/two").status == 200  # still open: keep-alive works
        idle_from = time.monotonic()
        assert client.closed_within(8), "the idle connection was never closed"
        assert time.monotonic() - idle_from > 0.9
    wait_until(lambda: proxy.call(lambda: len(proxy.router.connections)) == 0, what="the router to forget it")
