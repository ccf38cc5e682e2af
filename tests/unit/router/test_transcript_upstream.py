"""Transcripts of the router's upstream side, without sockets: what an endpoint answers, split and framed every way,
and what the client and the endpoint's connection get for it (tests/unit/router/transcript.py)."""

from __future__ import annotations

import pytest

from portero.router import stats

from .test_transcript_client import GET, OK, answered, forwarded, own
from .transcript import Harness


def test_a_response_head_in_pieces_is_forwarded_as_one():
    h = Harness()
    h.send(GET)
    conn = h.open()
    response = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
    for at in range(len(response)):
        conn.answer(response[at : at + 1])
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n", 1, b"hello")
    assert conn.protocol in conn.protocol.pool.idle  # whole, framed, keep-alive: back to the pool


def test_a_chunked_response_is_framed_again_and_its_trailers_stay_behind():
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    conn.answer(b"2;x=y\r\nde\r\n0\r\nX-Sum: 1\r\n\r\n")
    assert h.client_bytes() == answered(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n", 1, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]


def test_a_body_that_ends_with_the_connection_is_chunked_for_an_http11_client():
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\n\r\nsome")
    conn.answer(b" more")
    conn.hang_up()
    assert h.client_bytes() == answered(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n", 1, b"4\r\nsome\r\n5\r\n more\r\n0\r\n\r\n"
    )
    assert h.client_transport.log == []  # the client keeps its connection
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]


def test_a_body_that_ends_with_the_connection_ends_the_http10_clients_too():
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\n\r\n")
    conn = h.open()
    assert conn.received().startswith(b"GET / HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n")  # its Host: where it came to
    conn.answer(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    conn.hang_up()
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\n", 1, b"all of it", close=True)
    assert h.client_transport.log == ["close"]


def test_bytes_after_a_complete_response_end_that_connection_not_the_next_request():
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmore")
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    assert "abort" in conn.transport.log
    assert conn.protocol not in conn.protocol.pool.idle
    h.send(GET)  # on a connection of its own
    assert len(h.connects) == 1


def test_an_idle_pooled_connection_that_speaks_is_closed():
    h = Harness()
    conn = h.pooled()
    conn.answer(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert conn.transport.log == ["abort"]
    h.send(GET)
    assert len(h.connects) == 1  # not handed out


def test_junk_where_the_answer_should_begin_on_a_pooled_connection_is_a_stale_connection():
    h = Harness()
    stale = h.pooled()
    h.send(GET)
    stale.answer(b"garbage\r\n\r\n")
    fresh = h.open()
    fresh.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    endpoint = next(iter(h.service.endpoints.values()))
    assert sum(endpoint.stats.counters.faults) == 0  # the connection failed, not the endpoint
    assert h.phases(1) == ["sent", "new", "connecting", "sent", "responding", "done"]


def test_junk_on_a_fresh_connection_is_the_endpoints_fault_and_gives_502():
    h = Harness(queue_timeout_s=0)
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 0\r\n\r\n")
    conn = h.open()
    conn.answer(b"garbage\r\n\r\n")
    assert h.client_bytes().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    endpoint = next(iter(h.service.endpoints.values()))
    assert endpoint.stats.counters.faults[stats.BAD_RESPONSE] == 1


def test_a_response_head_over_the_limit_gives_502_before_it_ends():
    h = Harness(max_response_head_bytes=1024, queue_timeout_s=0)
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 0\r\n\r\n")
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 1100)
    assert h.client_bytes() == own(502, "response head larger than 1024 bytes", 1, close=False)
    assert conn.transport.log == ["abort"]


def test_a_transfer_coding_the_client_cannot_be_given_gives_502():
    h = Harness(queue_timeout_s=0)
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 0\r\n\r\n")
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert h.client_bytes() == own(502, "response with a transfer coding other than chunked", 1, close=False)


def test_an_answer_the_policy_retries_is_never_shown_to_the_client():
    h = Harness(endpoints=2, retry_on_status=(503,))
    h.send(GET)
    first = h.open()
    first.answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    second = h.open()
    assert second.endpoint != first.endpoint
    assert second.received() == forwarded(b"GET /a HTTP/1.1\r\nHost: portal\r\n", 1)
    second.answer(OK)
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 1, b"ok")
    assert h.phases(1) == ["connecting", "sent", "new", "connecting", "sent", "responding", "done"]


def test_an_endpoint_that_dies_inside_a_small_response_costs_no_request():
    h = Harness(endpoints=2)
    h.send(GET)
    first = h.open()
    first.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")  # held until whole: nothing went out
    first.hang_up()
    assert h.client_bytes() == b""
    second = h.open()
    second.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf whole")
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n", 1, b"half whole")


def test_an_endpoint_that_dies_inside_a_streamed_response_cuts_the_client():
    h = Harness(endpoints=2)
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    conn.hang_up()
    assert h.client_bytes() == answered(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n", 1, b"x" * 10)
    assert h.client_transport.log == ["close"]  # the client must see the body end short
    endpoint = h.service.endpoints[conn.endpoint]
    assert endpoint.stats.counters.faults[stats.RESET] == 1
    assert h.phases(1) == ["connecting", "sent", "responding", "done"]


@pytest.mark.parametrize("side", ["client", "endpoint"])
def test_back_pressure_pauses_the_other_side(side):
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: portal\r\nContent-Length: 100000\r\n\r\n")
    conn = h.open()
    if side == "client":  # the client does not read its response: stop reading the endpoint
        conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 70_000)
        h.client.pause_writing()
        h.client.resume_writing()
        assert conn.transport.log == ["pause", "resume"]
    else:  # the endpoint does not read the request body: stop reading the client
        conn.protocol.pause_writing()
        conn.protocol.resume_writing()
        assert h.client_transport.log == ["pause", "resume"]


def test_an_endpoint_that_stops_sending_its_response_is_cut_after_the_stall_timeout():
    h = Harness(stall_timeout_s=10)
    h.send(GET)
    conn = h.open()
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    h.advance(6)
    h.advance(6)  # a sweep sees no new byte since the one before
    assert h.client_transport.log == []
    h.advance(6)
    assert h.client_transport.log == ["close"]
    assert h.service.endpoints[conn.endpoint].stats.counters.faults[stats.STALLED] == 1


@pytest.mark.parametrize("blank", [b"\r\n", b"\r\n\r\n", b"\n"])
def test_blank_lines_an_endpoint_sends_before_its_response_are_not_forwarded(blank):
    """llhttp skips empty lines before a response (as servers skip them before a request); the head forwarded and
    its status start where the parser's did. They were kept: the head went out as `HTTP/1.1` followed by the status
    line's tail, and two of them ended the head before its status line."""
    h = Harness()
    h.send(GET)
    conn = h.open()
    conn.answer(blank + b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert h.client_bytes() == answered(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n", 1, b"ok")
    h.send(GET.replace(b"/a", b"/b"))
    conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + blank)  # after a response, before the next
    h.send(GET.replace(b"/a", b"/c"))
    conn.answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    assert h.client_bytes().endswith(answered(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n", 3, b"no"))
