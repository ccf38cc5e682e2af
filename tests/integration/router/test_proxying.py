"""What the router forwards and how: keep-alive, framing of responses, forwarded and hop-by-hop headers,
request ids, routing by host and path."""

from __future__ import annotations

import socket

import pytest

from portero.spec.models import Route
from tests.integration.router.backend import Reply
from tests.integration.router.conftest import wait_until
from tests.integration.router.rawhttp import Client, get, one

pytestmark = pytest.mark.integration


def upstream_connections(backend) -> int:
    return backend.connections - len(backend.probe_connections)


def test_keep_alive_on_both_sides(proxy, backend):
    with Client(proxy.port) as client:
        for i in range(50):
            response = client.get(f"/{i}")
            assert response.status == 200
            assert response.header("connection") == "keep-alive"
            assert response.body == b"backend"
    assert [r.target for r in backend.requests] == [f"/{i}" for i in range(50)]
    assert upstream_connections(backend) == 1


def test_head_response_has_no_body_and_does_not_hang(proxy, backend):
    backend.handler = lambda request: Reply(body=b"twelve bytes")
    with Client(proxy.port, timeout=5) as client:
        head = client.request(b"HEAD /h HTTP/1.1\r\nHost: app\r\n\r\n", head=True)
        assert head.status == 200
        assert head.header("content-length") == "12"
        after = client.get("/after")  # would read the HEAD's phantom body, or hang, if the router sent one
        assert (after.status, after.body) == (200, b"twelve bytes")
        assert client.request(b"HEAD /h2 HTTP/1.1\r\nHost: app\r\n\r\n", head=True).status == 200
        assert client.get("/again").body == b"twelve bytes"
    assert upstream_connections(backend) == 1  # the upstream connection was reused after the HEAD


def test_head_of_a_chunked_resource(proxy, backend):
    backend.handler = lambda request: Reply(chunks=[b"abc"])
    with Client(proxy.port, timeout=5) as client:
        head = client.request(b"HEAD /h HTTP/1.1\r\nHost: app\r\n\r\n", head=True)
        assert head.status == 200
        assert head.header("content-length") is None
        assert client.get("/after").body == b"abc"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(proxy, backend, status):
    backend.handler = lambda request: Reply(status=status, headers=[("ETag", '"v1"')])
    with Client(proxy.port, timeout=5) as client:
        response = client.get("/nothing")
        assert response.status == status
        assert response.header("transfer-encoding") is None
        assert response.header("etag") == '"v1"'
        backend.handler = lambda request: Reply(body=b"next")
        assert client.get("/next").body == b"next"  # nothing was left over from the bodiless response


def test_chunked_response_is_rechunked(proxy, backend):
    pieces = [b"hello ", b"world", b"x" * 70_000, b"!"]
    backend.handler = lambda request: Reply(chunks=pieces)
    with Client(proxy.port) as client:
        response = client.get("/chunks")
        assert response.framing == "chunked"
        assert response.header("transfer-encoding") == "chunked"
        assert response.body == b"".join(pieces)
        assert client.get("/again").body == b"".join(pieces)


def test_close_delimited_response_reaches_an_http11_client_whole(proxy, backend):
    body = b"read until the end " * 1000
    backend.handler = lambda request: Reply(body=body, until_close=True)
    with Client(proxy.port) as client:
        response = client.get("/until-close")
        assert response.status == 200
        assert response.body == body


def test_http10_client_gets_a_length_or_the_close(proxy, backend):
    with Client(proxy.port) as client:
        response = client.request(b"GET /old HTTP/1.0\r\n\r\n")
        assert response.status == 200
        assert response.framing in ("length", "close")
        assert response.body == b"backend"
        assert client.closed_within(5)
    request = backend.requests[0]
    assert request.target == "/old"
    assert request.header("host") is not None  # the request went upstream as HTTP/1.1: it needs a Host


def test_http10_client_gets_a_chunked_response_dechunked(proxy, backend):
    backend.handler = lambda request: Reply(chunks=[b"one ", b"two"])
    with Client(proxy.port) as client:
        response = client.request(b"GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
        assert response.framing == "close"
        assert response.header("transfer-encoding") is None
        assert response.body == b"one two"


def test_http10_keep_alive_is_not_assumed(proxy, backend):
    with Client(proxy.port) as client:
        assert client.request(b"GET /a HTTP/1.0\r\nHost: app\r\n\r\n").header("connection") == "close"
        assert client.closed_within(5)


def test_client_connection_close_is_honoured(proxy, backend):
    with Client(proxy.port) as client:
        response = client.request(b"GET /bye HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        assert response.header("connection") == "close"
        assert client.closed_within(5)


FORWARDED_IN = (
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "public.example"),
)


def test_forwarded_headers_from_an_untrusted_peer_are_replaced(proxy, backend):
    assert one(proxy.port, get("/", host="app.example", headers=FORWARDED_IN)).status == 200
    request = backend.requests[0]
    assert request.all("x-forwarded-for") == ["127.0.0.1"]
    assert request.all("x-forwarded-proto") == ["http"]
    assert request.all("x-forwarded-host") == ["app.example"]


def test_forwarded_headers_are_added(proxy, backend):
    assert one(proxy.port, get("/", host="app.example")).status == 200
    request = backend.requests[0]
    assert request.all("x-forwarded-for") == ["127.0.0.1"]
    assert request.all("x-forwarded-proto") == ["http"]
    assert request.all("x-forwarded-host") == ["app.example"]
    assert request.all("host") == ["app.example"]


def test_forwarded_headers_from_a_trusted_proxy_are_appended_to(start_router, backend):
    proxy = start_router({"app": [backend]}, trusted_proxies=["127.0.0.0/8"])
    assert one(proxy.port, get("/", host="app.example", headers=FORWARDED_IN)).status == 200
    request = backend.requests[0]
    assert request.all("x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    assert request.all("x-forwarded-proto") == ["https"]
    assert request.all("x-forwarded-host") == ["public.example"]


def test_every_hop_of_a_trusted_chain_is_kept(start_router, backend):
    proxy = start_router({"app": [backend]}, trusted_proxies=["127.0.0.0/8"])
    chain = (("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("X-Forwarded-For", "3.3.3.3"))
    assert one(proxy.port, get("/", headers=chain)).status == 200
    assert backend.requests[0].all("x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"]


def test_request_id_is_added_to_request_and_response(proxy, backend):
    with Client(proxy.port) as client:
        first, second = client.get("/1"), client.get("/2")
    ids = [r.all("x-request-id") for r in backend.requests]
    assert [len(i) for i in ids] == [1, 1]
    assert first.all("x-request-id") == ids[0]
    assert second.all("x-request-id") == ids[1]
    assert ids[0] != ids[1]


def test_valid_incoming_request_id_is_kept(proxy, backend):
    response = one(proxy.port, get("/", headers=(("X-Request-Id", "abc-123-DEF"),)))
    assert response.all("x-request-id") == ["abc-123-DEF"]
    assert backend.requests[0].all("x-request-id") == ["abc-123-DEF"]


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "x" * 129, "new\tline"])
def test_invalid_incoming_request_id_is_replaced(proxy, backend, bad):
    response = one(proxy.port, get("/", headers=(("X-Request-Id", bad),)))
    sent = backend.requests[0].all("x-request-id")
    assert len(sent) == 1
    assert sent[0] != bad
    assert response.all("x-request-id") == sent


def test_hop_by_hop_request_headers_are_removed(proxy, backend):
    headers = (
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "for the next hop only"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
        ("Trailer", "X-Checksum"),
        ("X-End-To-End", "kept"),
    )
    assert one(proxy.port, get("/", headers=headers)).status == 200
    request = backend.requests[0]
    names = {name.lower() for name, _ in request.headers}
    for name, _ in headers[:-1]:
        assert name.lower() not in names, f"{name} was forwarded"
    assert request.header("x-end-to-end") == "kept"
    assert request.header("host") == "app"


def test_connection_cannot_remove_framing_or_host(proxy, backend):
    """`Connection: Content-Length` must not strip the length the router frames the body by (a desync)."""
    data = b"POST /p HTTP/1.1\r\nHost: app\r\nConnection: Content-Length, Host\r\nContent-Length: 5\r\n\r\nhello"
    with Client(proxy.port) as client:
        client.send(data + get("/next"))
        assert client.response().status == 200
        assert client.response().status == 200
    post, after = backend.requests
    assert (post.target, post.body, post.header("content-length"), post.header("host")) == ("/p", b"hello", "5", "app")
    assert after.target == "/next"


def test_hop_by_hop_response_headers_are_removed(proxy, backend):
    backend.handler = lambda request: Reply(
        headers=[
            ("Connection", "X-Resp-Secret"),
            ("X-Resp-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "Basic"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
        ]
    )
    response = one(proxy.port, get("/"))
    names = {name.lower() for name, _ in response.headers}
    assert names.isdisjoint({"x-resp-secret", "keep-alive", "proxy-authenticate", "upgrade"})
    assert response.all("connection") == ["keep-alive"]
    assert response.header("x-kept") == "yes"


@pytest.fixture
def routed(start_router, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    routes = [
        Route(host="a.example", service="a"),
        Route(host="*", prefix="/api", service="b"),
        Route(host="*.c.example", service="c"),
    ]
    proxy = start_router({"a": [a], "b": [b], "c": [c]}, routes=[r.model_dump() for r in routes])
    return proxy, a, b, c


@pytest.mark.parametrize(
    ("host", "path", "served_by"),
    [
        ("a.example", "/", "a"),
        ("A.Example:8080", "/x", "a"),
        ("a.example", "/api/v1", "a"),  # an exact host outranks a prefix on any host
        ("other.example", "/api/v1", "b"),
        ("other.example", "/api", "b"),
        ("x.c.example", "/", "c"),
        ("deep.x.c.example", "/api", "c"),  # a wildcard host outranks a prefix on any host
    ],
)
def test_routing_by_host_and_path_prefix(routed, host, path, served_by):
    proxy, *_ = routed
    response = one(proxy.port, get(path, host=host))
    assert (response.status, response.body.decode()) == (200, served_by)


def test_no_route_gets_404_and_reaches_no_backend(routed):
    proxy, a, b, c = routed
    for host, path in [("other.example", "/"), ("c.example", "/"), ("other.example", "/apx")]:
        response = one(proxy.port, get(path, host=host))
        assert response.status == 404
    assert a.heads == b.heads == c.heads == []


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_an_absolute_form_target_is_routed_by_its_authority_not_by_host(routed, version):
    """RFC 9112 §3.2.2: the target's authority wins; the endpoint gets the origin form and that authority."""
    proxy, a, b, _ = routed
    request = f"GET http://A.example/x?q=1 HTTP/{version}\r\nHost: other.example\r\nConnection: keep-alive\r\n\r\n"
    response = one(proxy.port, request.encode())
    assert (response.status, response.body) == (200, b"a")
    seen = a.requests[-1]
    assert (seen.target, seen.all("host")) == ("/x?q=1", ["A.example"])
    assert seen.header("x-forwarded-host") == "A.example"
    response = one(proxy.port, b"GET https://other.example/api?x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert (response.status, response.body) == (200, b"b")  # by the target's host and path, not Host's
    assert b.requests[-1].target == "/api?x"


@pytest.mark.parametrize(
    "target",
    [b"ftp://a.example/", b"http://user@a.example/", b"http:///nohost", b"a.example:443"],
)
def test_an_unusable_request_target_is_refused(routed, target):
    proxy, a, b, c = routed
    response = one(proxy.port, b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert response.status == 400
    assert a.heads == b.heads == c.heads == []


def test_expect_100_continue_is_relayed(proxy, backend):
    with Client(proxy.port) as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert client.read_line() == b"HTTP/1.1 100 Continue"  # the interim response, before any body was sent
        assert client.read_line() == b""
        client.send(b"hello")
        response = client.response()
        assert (response.status, response.body) == (200, b"backend")
    assert backend.requests[0].body == b"hello"


@pytest.mark.parametrize(
    "leftover",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nEVIL", b"GARBAGE\r\n\r\n"],
    ids=["half-a-response", "garbage"],
)
def test_unsolicited_bytes_from_an_endpoint_never_reach_the_next_request(proxy, backend, leftover):
    """A backend that sends more than it was asked for (half of a second response, or garbage) loses that
    connection; the client keeps its own, and its next request, on a fresh upstream connection, gets its own
    answer, not the leftover."""
    replies = iter([Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + leftover), Reply(body=b"good")])
    backend.handler = lambda request: next(replies)
    with Client(proxy.port) as client:
        assert client.get("/1").body == b"ok"
        second = client.get("/2")
    assert (second.status, second.body) == (200, b"good")


def test_unsolicited_response_never_answers_a_pipelined_request(proxy, backend):
    """The next request was waiting (pipelined) when the leftover came: it must not be handed the connection
    the leftover is still being read from."""
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nEVIL"
    replies = iter([Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil), Reply(body=b"good")])
    backend.handler = lambda request: next(replies)
    with Client(proxy.port) as client:
        client.send(get("/1") + get("/2"))
        assert client.response().body == b"ok"
        second = client.response()
    assert (second.status, second.body) == (200, b"good")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        b"not http at all\r\n\r\n",
    ],
    ids=["two-lengths", "length-and-chunked", "nul-in-header", "bad-status", "garbage"],
)
def test_malformed_response_becomes_502(proxy, backend, raw):
    backend.handler = lambda request: Reply(raw=raw)
    with Client(proxy.port) as client:
        response = client.get("/")
        assert response.status == 502
        backend.handler = lambda request: Reply(body=b"fine")
        if response.header("connection") == "close":
            assert client.closed_within(5)
            return
        assert client.get("/").body == b"fine"


def test_endpoint_that_never_answers_gets_504(start_router, backend):
    backend.handler = lambda request: Reply(delay_s=30)
    proxy = start_router({"app": [backend]}, response_timeout_s=0.5, retry_attempts=1)
    with Client(proxy.port, timeout=15) as client:
        response = client.get("/stuck")
        assert response.status == 504
        backend.handler = lambda request: Reply(body=b"fine")
        assert client.get("/").body == b"fine"


def test_underscore_spellings_of_forwarded_headers_are_replaced_too(proxy, backend):
    """WSGI servers map X_Forwarded_For and X-Forwarded-For to the same HTTP_X_FORWARDED_FOR: a client must
    not slip its own forwarded-for past the router under the underscore spelling."""
    spoof = (("X_Forwarded_For", "6.6.6.6"), ("X_Forwarded_Host", "evil.example"), ("X-Kept_Header", "yes"))
    assert one(proxy.port, get("/", headers=spoof)).status == 200
    request = backend.requests[0]
    names = [name.lower() for name, _ in request.headers]
    assert "x_forwarded_for" not in names
    assert "x_forwarded_host" not in names
    assert request.all("x-forwarded-for") == ["127.0.0.1"]
    assert request.header("x-kept_header") == "yes"


def test_blank_lines_before_a_request_are_not_forwarded(proxy, backend):
    """RFC 9112 §2.2: a server ignores a CRLF before the request line (old clients send one after a POST body);
    the router must not pass it on for the endpoint to judge."""
    with Client(proxy.port) as client:
        assert client.request(b"\r\n" + get("/after-blank")).status == 200
        body = b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi\r\n"  # an extra CRLF after the body
        assert client.request(body).status == 200
        assert client.request(get("/next")).status == 200
    assert [r.target for r in backend.requests] == ["/after-blank", "/p", "/next"]


def test_many_pipelined_requests_are_answered_in_order(proxy, backend):
    backend.handler = lambda request: Reply(body=request.target.encode(), delay_s=0.01 if request.target == "/3" else 0)
    with Client(proxy.port) as client:
        client.send(b"".join(get(f"/{i}") for i in range(50)))
        bodies = [client.response().body for _ in range(50)]
    assert bodies == [f"/{i}".encode() for i in range(50)]
    assert [r.target for r in backend.requests] == [f"/{i}" for i in range(50)]


def test_response_carries_one_request_id_when_the_backend_echoes_it(proxy, backend):
    backend.handler = lambda request: Reply(headers=[("X-Request-Id", request.header("x-request-id"))])
    response = one(proxy.port, get("/", headers=(("X-Request-Id", "echoed-1"),)))
    assert response.all("x-request-id") == ["echoed-1"]


def test_a_client_that_half_closes_after_its_request_still_gets_the_response(proxy, backend):
    backend.handler = lambda request: Reply(body=b"late answer", delay_s=0.3)
    with Client(proxy.port, timeout=5) as client:
        client.send(get("/slow") + get("/slow2"))
        client.sock.shutdown(socket.SHUT_WR)  # "no more requests", as `curl --no-keepalive`-style clients may do
        first, second = client.response(), client.response()
        assert (first.status, first.body) == (200, b"late answer")
        assert (second.status, second.body) == (200, b"late answer")
        assert not client._more()  # then the router closes
    assert [r.target for r in backend.requests] == ["/slow", "/slow2"]


def test_a_half_close_in_the_middle_of_a_request_ends_the_connection(proxy, backend):
    with Client(proxy.port, timeout=5) as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc")
        client.sock.shutdown(socket.SHUT_WR)
        assert not client._more()
    assert backend.requests == []


def test_a_burst_of_new_clients_is_accepted_and_served(proxy, backend):
    """Hundreds of clients connecting at once (the router accepts them in bursts, not one per loop iteration)."""
    clients = [Client(proxy.port, timeout=10) for _ in range(400)]
    try:
        for i, client in enumerate(clients):
            client.send(get(f"/{i}"))
        statuses = [client.response().status for client in clients]
    finally:
        for client in clients:
            client.close()
    assert statuses == [200] * 400
    assert len(backend.requests) == 400


def test_a_client_that_leaves_during_the_response_time_frees_its_slot_and_upstream_connection_at_once(proxy, backend):
    """As nginx does by default: a client that closes (or half-closes: the two look the same) abandons its
    request; the endpoint's slot and the connection to it are given up at once, not when the answer comes."""
    backend.handler = lambda request: Reply(body=b"slow", delay_s=3)
    with Client(proxy.port) as client:
        client.send(get("/abandoned"))
        wait_until(lambda: len(backend.heads) > 0, what="the request upstream")
    endpoint = proxy.endpoint(backend)
    wait_until(lambda: proxy.call(lambda: endpoint.target.in_flight) == 0, timeout=1, what="the slot to be free")
    wait_until(lambda: proxy.call(lambda: endpoint.pool.opened) == 0, timeout=1, what="the upstream connection closed")
    assert proxy.call(lambda: proxy.service().stats.counters.aborted) == 1
    backend.handler = lambda request: Reply(body=b"next")
    assert one(proxy.port, get("/next")).body == b"next"


def test_an_interim_and_a_final_response_in_one_packet_are_both_forwarded(proxy, backend):
    backend.handler = lambda request: Reply(
        raw=b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\nok"
    )
    with Client(proxy.port) as client:
        client.send(get("/both"))
        assert client.read_line() == b"HTTP/1.1 100 Continue"
        assert client.read_line() == b""
        response = client.response()
        assert (response.status, response.body, response.header("x-a")) == (200, b"ok", "1")
        assert response.all("connection") == ["keep-alive"]


def test_a_response_head_split_over_several_packets_is_forwarded_whole(start_router, backend):
    proxy = start_router({"app": [backend]}, max_response_head_bytes=512 * 1024)
    # Larger than one read of the loop (256 KiB), so the head arrives in two chunks at least.
    head = (
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 300_000 + b"\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody"
    )
    backend.handler = lambda request: Reply(raw=head)
    response = one(proxy.port, get("/split"))
    assert (response.status, response.body, response.header("x-long")) == (200, b"body", "v" * 300_000)
    assert response.all("connection") == ["keep-alive"]
