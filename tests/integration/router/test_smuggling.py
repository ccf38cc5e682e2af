"""Request smuggling and strict parsing (RFC 9112 §6, §7): whatever is ambiguous about where a request ends is
refused with 400, the connection is closed, and the recording backend proves that nothing of it went upstream."""

from __future__ import annotations

import pytest

from tests.integration.router.backend import RecordingBackend
from tests.integration.router.conftest import RouterUnderTest, wait_until
from tests.integration.router.rawhttp import Client, get, one

pytestmark = pytest.mark.integration

POST = b"POST /smuggle HTTP/1.1\r\nHost: app\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

REFUSED = {
    # Content-Length and Transfer-Encoding together: which one frames the body is for the parser to guess.
    "cl-then-te": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te-then-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
    "two-differing-cl": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "two-identical-cl": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-plus": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl-list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-negative": POST + b"Content-Length: -1\r\n\r\nhello",
    "cl-hex": POST + b"Content-Length: 0x5\r\n\r\nhello",
    "cl-space-inside": POST + b"Content-Length: 5 5\r\n\r\nhello",
    "cl-overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    # Any Transfer-Encoding other than exactly `chunked`.
    "te-gzip-chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-chunked-gzip": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-chunked-vtab": POST + b"Transfer-Encoding: chunked\x0b\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-chunked-formfeed": POST + b"Transfer-Encoding: \x0cchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-identity": POST + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
    "te-twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # Malformed chunk sizes.
    "chunk-size-5x": CHUNKED + b"5x\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x5": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-leading-space": CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED + b"3\r\nhello\r\n0\r\n\r\n",
    # Bare LF and bare CR: line ends that some parsers accept and others do not.
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: app\r\n\r\n",
    "bare-lf-header-line": b"GET / HTTP/1.1\r\nHost: app\nX-Foo: bar\r\n\r\n",
    "bare-lf-end-of-head": b"GET / HTTP/1.1\r\nHost: app\r\n\n",
    "bare-lf-chunk-size": CHUNKED + b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-after-chunk-data": CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    "bare-cr-request-line": b"GET / HTTP/1.1\rHost: app\r\n\r\n",
    "bare-cr-header-line": b"GET / HTTP/1.1\r\nHost: app\rX-Foo: bar\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo: a\rb\r\n\r\n",
    # Control bytes in header values.
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo: a\x00b\r\n\r\n",
    "soh-in-value": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo: a\x7fb\r\n\r\n",
    # Header syntax.
    "obs-fold": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo: a\r\n b\r\n\r\n",
    "obs-fold-content-length": POST + b"X-Foo: a\r\n Content-Length: 5\r\n\r\nhello",
    "space-before-colon": POST + b"Content-Length : 5\r\n\r\nhello",
    "tab-before-colon": POST + b"Transfer-Encoding\t: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: app\r\nX Foo: bar\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: app\r\nX-Foo\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nX-Foo: bar\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n",
    "bad-version": b"GET / HTTP/1.2x\r\nHost: app\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: app\r\n\r\n",
}


def settle(proxy: RouterUnderTest, backend: RecordingBackend) -> None:
    """A canary request on another connection: once the backend has it, anything dispatched before it is there."""
    assert one(proxy.port, get("/canary")).status == 200
    wait_until(lambda: any(r.target == "/canary" for r in backend.requests), what="the canary")


def targets(backend: RecordingBackend) -> list[str]:
    return [request.target for request in backend.heads if request.target != "/canary"]


@pytest.mark.parametrize("pool", ["cold", "warm"])
@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_ambiguous_request_is_refused_and_never_forwarded(proxy, backend, data, pool):
    """`warm`: an idle upstream connection is pooled, so a request the router accepts is written at once."""
    if pool == "warm":
        assert one(proxy.port, get("/canary")).status == 200
    with Client(proxy.port) as client:
        client.send(data)
        response = client.response()
        assert response.status == 400
        assert response.header("connection") == "close"
        assert client.closed_within(5), "the router kept the connection open after a 400"
    settle(proxy, backend)
    assert targets(backend) == []
    assert b"smuggle" not in backend.received()


FIRST_VALID = {
    "then-cl-and-te": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "then-bare-lf": b"GET /smuggle HTTP/1.1\nHost: app\r\n\r\n",
    "then-two-cl": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "then-bad-chunk": CHUNKED + b"5x\r\nhello\r\n0\r\n\r\n",
    "then-garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n",
}


@pytest.mark.parametrize("second", FIRST_VALID.values(), ids=FIRST_VALID.keys())
def test_valid_request_is_answered_then_the_smuggled_one_refused(proxy, backend, second):
    first = b"GET /first HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n"
    with Client(proxy.port) as client:
        client.send(first + second)  # one packet: the second is parsed before the first is answered
        answered = client.response()
        assert answered.status == 200
        assert answered.body == b"backend"
        refused = client.response()
        assert refused.status == 400
        assert client.closed_within(5)
    settle(proxy, backend)
    assert targets(backend) == ["/first"]
    request = next(r for r in backend.requests if r.target == "/first")
    assert request.body == b""
    assert b"smuggle" not in backend.received()
    assert b"garbage" not in backend.received()


def test_pipelined_requests_reach_the_backend_as_two_requests(proxy, backend):
    """A body followed by another request in the same packet: two requests, never one with the other as body."""
    data = POST + b"Content-Length: 5\r\n\r\nhello" + b"GET /second HTTP/1.1\r\nHost: app\r\n\r\n"
    with Client(proxy.port) as client:
        client.send(data)
        assert client.response().status == 200
        assert client.response().status == 200
    settle(proxy, backend)
    assert targets(backend) == ["/smuggle", "/second"]
    post, second = (r for r in backend.requests if r.target != "/canary")
    assert (post.method, post.body) == ("POST", b"hello")
    assert (second.method, second.body, second.header("content-length")) == ("GET", b"", None)


def test_pipelined_chunked_body_then_request(proxy, backend):
    data = CHUNKED + b"5\r\nhello\r\n0\r\n\r\n" + b"GET /second HTTP/1.1\r\nHost: app\r\n\r\n"
    with Client(proxy.port) as client:
        client.send(data)
        assert client.response().status == 200
        assert client.response().status == 200
    settle(proxy, backend)
    post, second = (r for r in backend.requests if r.target != "/canary")
    assert (post.target, post.body) == ("/smuggle", b"hello")
    assert (second.target, second.method, second.body) == ("/second", "GET", b"")


def test_chunk_extensions_and_trailers_end_where_they_should(proxy, backend):
    data = CHUNKED + b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n" + get("/second")
    with Client(proxy.port) as client:
        client.send(data)
        assert client.response().status == 200
        assert client.response().status == 200
    post, second = backend.requests
    assert (post.target, post.body) == ("/smuggle", b"hello")
    assert second.target == "/second"


def test_head_split_across_packets_is_forwarded_whole(proxy, backend):
    """The request line in one packet, the rest of the head in the next: the backend gets the whole head."""
    with Client(proxy.port) as client:
        client.send(b"POST /split HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n")
        wait_until(lambda: proxy.call(lambda: any(c.head_received for c in proxy.router.connections)))
        client.send(b"X-Late: header\r\n\r\nhello")
        assert client.response().status == 200
    request = backend.requests[-1]
    assert (request.method, request.target, request.body) == ("POST", "/split", b"hello")
    assert request.header("x-late") == "header"
    assert request.header("host") == "app"
