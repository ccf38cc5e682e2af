"""Transcripts of the router's client side, without sockets: the bytes a client sends, the bytes each side gets,
and the phases each exchange goes through (tests/unit/router/transcript.py drives the protocol objects)."""

from __future__ import annotations

import asyncio
from typing import Any

from portero.router import wire
from portero.router.client import ClientConnection
from portero.router.snapshot import RoutingSnapshot

from .transcript import FakeTransport, Harness

GET = b"GET /a HTTP/1.1\r\nHost: portal\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def forwarded(head: bytes, number: int, host: bytes = b"portal", proto: bytes = b"http") -> bytes:
    """`head` (request line and header lines, with their CRLFs) as the router forwards it from PEER."""
    return head + (
        b"x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: %b\r\nx-forwarded-host: %b\r\nx-request-id: r-%x\r\n\r\n"
        % (proto, host, number)
    )


def answered(head: bytes, number: int, body: bytes = b"", close: bool = False) -> bytes:
    """A response head (status line and kept lines) and body as the router sends them to the client."""
    connection = b"close" if close else b"keep-alive"
    return head + b"connection: %b\r\nx-request-id: r-%x\r\n\r\n" % (connection, number) + body


def own(status: int, detail: str, number: int | None = None, close: bool = True) -> bytes:
    """The router's own answer."""
    request_id = None if number is None else b"r-%x" % number
    return wire.response(status, wire.error_body(status, detail), close=close, request_id=request_id)


def test_a_get_then_another_on_the_same_connections():
    h = Harness()
    h.send(GET)
    assert h.client_bytes() == b""
    conn = h.open()
    assert conn.received() == forwarded(b"GET /a HTTP/1.1\r\nHost: portal\r\n", 1)
    conn.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    h.send(GET.replace(b"/a", b"/b"))  # the pooled connection takes it: nothing to open
    assert not h.connects
    assert conn.received().endswith(forwarded(b"GET /b HTTP/1.1\r\nHost: portal\r\n", 2))
    conn.answer(OK)
    assert h.client_bytes().endswith(answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 2, b"ok"))
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]
    assert h.phases(2) == ["sent", "responding", "done"]
    assert h.client_transport.log == []
    assert conn.transport.log == []


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    h = Harness()
    h.send(GET + GET.replace(b"/a", b"/b"))
    assert h.client_transport.log == ["pause"]  # the second waits, and nothing more is read meanwhile
    first = h.open()
    assert h.requests_seen(first) == [b"GET /a "]
    first.answer(OK)
    # The first connection goes back to the pool only once its read is parsed: the second asked for its own.
    second = h.open()
    assert second.received() == forwarded(b"GET /b HTTP/1.1\r\nHost: portal\r\n", 2)
    second.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok") + answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 2, b"ok"
    )
    assert h.client_transport.log == ["pause", "resume"]
    assert [phase for _, phase in h.trace()] == [2, 3, 4, 6, 2, 3, 4, 6]  # one after the other, never together


def test_a_pipelined_request_whose_body_comes_later_is_read_when_its_turn_comes():
    """Fix: the connection stayed paused after the request before it was answered, so its body was never read
    (found by test_transcript_splits)."""
    h = Harness()
    h.send(b"GET /a HTTP/1.1\r\nHost: portal\r\n\r\nPOST /b HTTP/1.1\r\nHost: portal\r\nContent-Length: 4\r\n\r\nda")
    first = h.open()
    first.answer(OK)
    assert h.client_transport.log == ["pause", "resume"]  # the rest of the body may come
    second = h.open()
    h.send(b"ta")
    assert h.requests_seen(second) == [b"POST /b data"]
    second.answer(OK)
    assert h.client_bytes().count(b"HTTP/1.1 200 OK") == 2


def test_a_post_with_content_length_streams_its_body_after_the_head():
    h = Harness()
    head = b"POST /form HTTP/1.1\r\nHost: portal\r\nContent-Length: 11\r\n"
    h.send(head + b"\r\nhello")
    conn = h.open()  # what came before the connection opened is sent with the head
    assert conn.received() == forwarded(head, 1) + b"hello"
    h.send(b" world")
    assert conn.received() == forwarded(head, 1) + b"hello world"
    conn.answer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert h.client_bytes() == answered(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n", 1)
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]


def test_a_chunked_post_is_framed_again_by_the_router():
    h = Harness()
    head = b"POST /up HTTP/1.1\r\nHost: portal\r\nTransfer-Encoding: chunked\r\n"
    h.send(head + b"\r\n5;ext=1\r\nhello\r\n")
    conn = h.open()
    h.send(b"6\r\n world\r\n0\r\nTrailer-X: 1\r\n\r\n")
    # Chunk extensions and trailers stay behind: the endpoint gets the data in the router's own framing.
    assert conn.received() == forwarded(head, 1) + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    conn.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")


def test_a_head_response_ends_at_its_head_whatever_its_content_length():
    h = Harness()
    h.send(b"HEAD /big HTTP/1.1\r\nHost: portal\r\n\r\n")
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n", 1)
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]
    h.send(GET)  # the connection went back to the pool, its parser ready for a response with a body
    conn.answer(OK)
    assert h.client_bytes().endswith(answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 2, b"ok"))
    assert len(h.conns) == 1


def test_204_and_304_have_no_body_and_get_no_chunking():
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
    h.send(GET)
    conn.answer(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")
    assert h.client_bytes() == answered(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n", 1) + answered(
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n", 2
    )
    assert h.phases(2) == ["sent", "responding", "done"]


def test_100_continue_reaches_the_client_before_it_sends_its_body():
    h = Harness()
    head = b"PUT /f HTTP/1.1\r\nHost: portal\r\nExpect: 100-continue\r\nContent-Length: 4\r\n"
    h.send(head + b"\r\n")
    conn = h.open()
    conn.answer(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert h.client_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.send(b"data")
    assert conn.received() == forwarded(head, 1) + b"data"
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert h.client_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n" + answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", 1
    )
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]  # an interim answer changes no phase


def test_103_early_hints_and_the_final_answer_in_one_read():
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK)
    assert h.client_bytes() == b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok"
    )


def test_an_http10_client_gets_no_interim_answer():
    h = Harness()
    h.send(b"GET /a HTTP/1.0\r\nHost: portal\r\n\r\n")
    conn = h.open()
    assert conn.received() == forwarded(b"GET /a HTTP/1.1\r\nHost: portal\r\n", 1)  # rebuilt as HTTP/1.1
    conn.answer(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok", close=True)
    assert h.client_transport.log == ["close"]


def test_an_upgrade_becomes_a_tunnel_both_ways():
    h = Harness()
    h.send(b"GET /ws HTTP/1.1\r\nHost: portal\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly")
    assert h.client_transport.log == ["pause"]  # nothing more until the endpoint accepts
    conn = h.open()
    head = b"GET /ws HTTP/1.1\r\nHost: portal\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
    assert conn.received() == forwarded(head, 1) + b"early"
    conn.answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi")
    assert h.client_bytes() == (
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nx-request-id: r-1\r\n\r\nhi"
    )
    assert h.client_transport.log == ["pause", "resume"]
    h.send(b"\x81\x00 any bytes, HTTP or not: GET / HTTP/1.1\r\n\r\n")
    assert conn.received().endswith(b"early\x81\x00 any bytes, HTTP or not: GET / HTTP/1.1\r\n\r\n")
    conn.answer(b"more")
    assert h.client_bytes().endswith(b"himore")
    conn.hang_up()
    assert h.client_transport.log == ["pause", "resume", "close"]
    assert h.phases(1) == ["connecting", "sent", "tunnel", "done"]


def test_a_stale_pooled_connection_is_retried_on_a_fresh_one_at_no_cost():
    h = Harness()
    stale = h.pooled()
    h.send(GET)
    stale.hang_up()  # the endpoint had closed it while it was idle: nothing reached the app
    assert h.client_bytes() == b""
    fresh = h.open()
    assert fresh.received() == stale.received() == forwarded(b"GET /a HTTP/1.1\r\nHost: portal\r\n", 1)
    fresh.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    assert h.phases(1) == ["sent", "new", "connecting", "sent", "responding", "done"]
    assert h.router.budget.allows(h.clock)
    endpoint = next(iter(h.service.endpoints.values()))
    assert endpoint.stats.counters.retries == 1


def test_a_malformed_request_gets_400_and_the_connection_closes():
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nTransfer-Encoding: gzip\r\n\r\n" + GET)
    assert h.client_bytes() == own(400, "Transfer-Encoding must be exactly `chunked`")
    assert h.client_transport.log == ["close"]
    assert h.trace() == []
    assert not h.connects


def test_a_body_over_the_limit_gets_413_before_any_of_it_is_read():
    h = Harness(max_body_bytes=10)
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 11\r\n\r\n")
    assert h.client_bytes() == own(413, "request body larger than 10 bytes")
    assert h.client_transport.log == ["close"]


def test_a_chunked_body_over_the_limit_is_cut_with_413():
    h = Harness(max_body_bytes=10)
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    conn = h.open()
    h.send(b"6\r\nghijkl\r\n")
    assert h.client_bytes() == own(413, "request body larger than 10 bytes")
    assert conn.transport.log == ["abort"]  # the half-sent request is dropped upstream
    assert h.phases(1) == ["connecting", "sent", "done"]


def test_a_head_over_16_kib_gets_431():
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: portal\r\nX-Big: " + b"a" * 16 * 1024 + b"\r\n\r\n")
    assert h.client_bytes() == own(431, "request head larger than 16 KiB")


def test_a_head_that_never_ends_gets_431_once_it_passes_16_kib():
    h = Harness()
    start = b"GET / HTTP/1.1\r\nHost: portal\r\nX-Big: "
    h.send(start)
    for _ in range(15):
        h.send(b"a" * 1024)
    h.send(b"a" * (1024 - len(start)))  # 16 KiB
    h.send(b"aaa")  # three bytes more might have been the CRLF CR of its blank line
    assert h.client_bytes() == b""
    h.send(b"a")
    assert h.client_bytes() == own(431, "request head larger than 16 KiB")


def test_a_head_just_over_16_kib_gets_431_also_when_it_comes_in_two_reads():
    """Fix: read in pieces, a head was measured by its parsed fields without its request line, so 16 bytes more
    passed than when it came in one read."""
    head = b"GET /p HTTP/1.1\r\nHost: portal\r\nX-Big: " + b"a" * (16 * 1024 - 37) + b"\r\n\r\n"
    assert len(head) - 4 == 16 * 1024 + 1
    whole, split = Harness(), Harness()
    whole.send(head)
    split.send(head[:100], head[100:])
    assert whole.client_bytes() == split.client_bytes() == own(431, "request head larger than 16 KiB")


def test_the_body_in_the_read_that_ends_a_head_is_not_counted_as_head():
    """Fix: a read that held the head's last LF and some of the body, but not all of the blank line, had its body
    bytes counted as head: a 16,000-byte head got 431 when the network cut it between its CR and its LF."""
    head = b"POST /p HTTP/1.1\r\nHost: portal\r\nContent-Length: 2000\r\nX-Big: " + b"a" * 15_900 + b"\r\n\r\n"
    h = Harness()
    h.send(head[:-1], b"\n" + b"b" * 2000)
    conn = h.open()
    assert conn.received().endswith(b"\r\n\r\n" + b"b" * 2000)
    assert h.client_bytes() == b""


def test_an_unknown_http_version_gets_505():
    h = Harness()
    h.send(b"GET / HTTP/1.2\r\nHost: portal\r\n\r\n")
    assert h.client_bytes() == own(505, "only HTTP/1.0 and HTTP/1.1 are served here")


def test_an_endpoint_that_closes_before_answering_a_post_gives_502():
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 1\r\n\r\nx")
    conn = h.open()
    conn.hang_up()  # a fresh connection: the app may have seen the request, and POST is not retried
    assert h.client_bytes() == own(502, "the endpoint closed the connection before responding", 1, close=False)
    assert h.phases(1) == ["connecting", "sent", "done"]
    h.send(GET)  # the client's connection is still good
    assert len(h.connects) == 1


def test_a_refused_connection_is_retried_elsewhere_then_502_when_none_is_left():
    h = Harness(endpoints=2, queue_timeout_s=0)
    h.send(GET)
    h.refuse()
    assert h.client_bytes() == b""
    assert len(h.connects) == 1
    assert h.connects[0].endpoint.key == "127.0.0.1:9002"
    h.refuse()
    assert h.client_bytes() == own(502, "cannot connect to an endpoint (ConnectionRefusedError)", 1, close=False)
    assert h.phases(1) == ["connecting", "new", "connecting", "new", "done"]


def test_with_every_endpoint_refusing_a_request_waits_in_the_queue_for_one():
    h = Harness(endpoints=1, queue_timeout_s=3)
    h.send(GET)
    h.refuse()  # nothing reached any app: the request waits for an endpoint (the router probes this one)
    assert h.phases(1) == ["connecting", "new", "queued"]
    h.advance(4)
    assert h.client_bytes().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert h.phases(1) == ["connecting", "new", "queued", "done"]


def test_a_charged_retry_with_no_other_endpoint_goes_back_to_the_one_that_failed():
    """Fix: with the other replicas dead or restarting, a GET cut on a fresh connection was answered 502 at once."""
    h = Harness(endpoints=1)
    h.send(GET)
    h.open().hang_up()  # it may have reached the app: a charged retry, and this is the only endpoint
    again = h.open()
    assert again.received() == forwarded(b"GET /a HTTP/1.1\r\nHost: portal\r\n", 1)
    again.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    assert h.phases(1) == ["connecting", "sent", "new", "connecting", "sent", "responding", "done"]


def test_a_charged_retry_whose_endpoint_died_waits_in_the_queue_for_another():
    h = Harness(endpoints=1, queue_timeout_s=5)
    h.send(GET)
    h.open().hang_up()
    h.refuse()  # the endpoint has died: out of rotation, and nothing else can take the request now
    assert h.phases(1) == ["connecting", "sent", "new", "connecting", "new", "queued"]
    assert h.client_bytes() == b""
    h.route("127.0.0.1:9100")  # its replacement, on another port
    conn = h.open()
    assert conn.endpoint == "127.0.0.1:9100"
    conn.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")


def test_a_queued_retry_goes_back_to_the_endpoint_it_left_when_that_is_the_only_one():
    """Fix: a retry skipped the endpoint it had left even from the queue, and waited there until its timeout while
    that endpoint, the only one, could take it."""
    h = Harness(endpoints=1, queue_timeout_s=10)
    h.send(GET)
    h.refuse(TimeoutError())  # a connect timeout: a free retry, elsewhere, and there is no elsewhere
    assert h.phases(1) == ["connecting", "new", "queued"]
    h.advance(0.25)  # the router's sweep wakes the queue
    conn = h.open()
    conn.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    assert h.phases(1) == ["connecting", "new", "queued", "connecting", "sent", "responding", "done"]


def test_a_new_routing_snapshot_keeps_the_retry_budgets_count():
    """Fix: every snapshot (each endpoint that came or went) emptied the budget, so that a replica killed with
    more requests in flight than `retry_budget_min` could not fail over: the rest got 502."""
    h = Harness(endpoints=2, retry_budget_ratio=0, retry_budget_min=1)
    h.send(GET)
    h.open().hang_up()
    # Retried on the other endpoint, the one retry the budget has; that connection closes, so that the next
    # request goes on a fresh one, where a cut is charged.
    h.open().answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    h.route("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")
    h.send(GET)
    h.open().hang_up()
    assert h.client_bytes().endswith(own(502, "the endpoint closed the connection before responding", 2, close=False))
    assert not h.connects


def test_no_endpoint_and_no_queue_gives_503_with_the_maintenance_page():
    h = Harness(endpoints=0, queue_timeout_s=0)
    h.send(GET)
    assert h.client_bytes() == wire.response(
        503,
        wire.MAINTENANCE_PAGE,
        content_type=b"text/html; charset=utf-8",
        headers=((b"retry-after", b"5"), (b"cache-control", b"no-store")),
        request_id=b"r-1",
    )
    assert h.phases(1) == ["done"]


def test_a_request_waits_in_the_queue_then_gets_503_when_its_time_is_up():
    h = Harness(endpoints=0, queue_timeout_s=2)
    h.send(GET)
    assert h.phases(1) == ["queued"]
    h.advance(1.5)
    assert h.client_bytes() == b""
    h.advance(1.0)
    assert h.client_bytes().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert h.phases(1) == ["queued", "done"]


def test_an_endpoint_that_does_not_answer_in_time_gives_504():
    h = Harness(response_timeout_s=5)
    h.send(GET)
    conn = h.open()
    h.advance(4)
    assert h.client_bytes() == b""
    h.advance(2)
    assert h.client_bytes() == own(504, "the endpoint did not answer in time", 1, close=False)
    assert conn.transport.log == ["abort"]
    assert h.phases(1) == ["connecting", "sent", "done"]


def test_a_client_gone_mid_response_drops_the_upstream_connection_without_blaming_the_endpoint():
    h = Harness()
    h.send(GET)
    conn = h.open()
    body = b"x" * 100_000  # over HOLD_MAX: streamed as it comes
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + body[:1000])
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n", 1, body[:1000])
    h.client_gone()
    assert conn.transport.log == ["abort"]
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]
    endpoint = next(iter(h.service.endpoints.values()))
    assert sum(endpoint.stats.counters.faults) == 0
    assert h.service.stats.counters.aborted == 1
    assert h.router.active == 0


def test_a_snapshot_that_changes_the_trusted_proxies_is_heeded_for_peers_seen_before():
    """Fix: whether a peer is trusted was remembered across snapshots, so that a proxy no longer trusted still was."""
    h = Harness(trusted_proxies=("192.0.2.0/24",))
    assert h.router.is_trusted(b"192.0.2.7")
    settings = h.router.settings.model_copy(update={"trusted_proxies": ()})
    h.router.load(RoutingSnapshot(2, settings, ()))
    assert not h.router.is_trusted(b"192.0.2.7")


def test_a_held_write_that_fails_leaves_the_other_connections_writes_to_go_out():
    """Every connection's writes of one pass go out in the router's flush; one that raises must not keep the
    others' held, which no later pass would send: their clients would wait for their timeouts."""
    h = Harness()
    scheduled: list[Any] = []

    class Loop(asyncio.AbstractEventLoop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
            scheduled.append(callback)

    h.router._loop = Loop()
    broken, fine = ClientConnection(h.router), ClientConnection(h.router)
    broken_transport, fine_transport = FakeTransport(), FakeTransport()
    broken.connection_made(broken_transport)
    fine.connection_made(fine_transport)
    for conn in (broken, fine):
        conn.hold(h.router)
        conn.write(b"answer")
    broken_transport.closed = True  # its write now raises (FakeTransport asserts), as a closed handle's does
    [flush] = scheduled
    flush()
    assert fine_transport.bytes() == b"answer"
