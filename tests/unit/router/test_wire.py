"""Head splicing: the router forwards heads as they came and cuts only the lines it must drop."""

from __future__ import annotations

import random

import httptools
import pytest

from portero.router import wire

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: keep-alive\r\n"
)


def test_a_response_head_keeps_every_line_but_the_hop_by_hop_ones():
    head = wire.ResponseHead(NGINX)
    assert head.kept == NGINX.replace(b"Connection: keep-alive\r\n", b"")
    assert head.has_length
    assert not head.chunked
    assert head.upgrade is None


def test_a_response_head_without_lines_to_cut_is_forwarded_as_is():
    raw = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n"
    assert wire.ResponseHead(raw).kept is raw


@pytest.mark.parametrize(
    "line",
    [
        b"connection: close",
        b"CONNECTION:keep-alive",
        b"Keep-Alive: timeout=5",
        b"Proxy-Connection: keep-alive",
        b"TE: trailers",
        b"Trailer: X-Sum",
        b"Upgrade: h2c",
        b"Proxy-Authenticate: Basic",
        b"Proxy-Authorization: Basic eA==",
        b"X-Request-Id: theirs",
        b"Transfer-Encoding: chunked",
    ],
)
def test_hop_by_hop_response_lines_are_cut_whatever_their_case(line):
    raw = b"HTTP/1.1 200 OK\r\nX-Before: 1\r\n" + line + b"\r\nX-After: 2\r\n"
    assert wire.ResponseHead(raw).kept == b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nX-After: 2\r\n"


def test_headers_a_response_connection_names_are_cut_but_never_framing_ones():
    raw = (
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, content-length , keep-alive\r\nX-Secret: s\r\n"
        b"X-Secretive: kept\r\nContent-Length: 3\r\n"
    )
    head = wire.ResponseHead(raw)
    assert head.kept == b"HTTP/1.1 200 OK\r\nX-Secretive: kept\r\nContent-Length: 3\r\n"
    assert head.has_length


def test_a_response_is_chunked_only_when_chunked_is_its_last_coding():
    assert wire.ResponseHead(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked \r\n").chunked
    assert not wire.ResponseHead(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n").chunked


def test_an_http10_status_line_goes_out_as_http11_and_upgrade_is_kept_apart():
    head = wire.ResponseHead(b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n")
    assert head.kept == b"HTTP/1.1 101 Switching Protocols\r\n"
    assert head.upgrade == b"WebSocket"


def test_a_value_that_looks_like_a_name_is_not_a_line():
    raw = b"HTTP/1.1 200 OK\r\nX-Note: connection: close\r\nContent-Length: 0\r\n"
    assert wire.ResponseHead(raw).kept == raw


BROWSER = (
    b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\nConnection: keep-alive\r\n"
    b"Cookie: s=1\r\nUpgrade-Insecure-Requests: 1\r\n"
)


def test_a_browser_head_loses_only_its_connection_line():
    spliced = wire.splice_request_head(BROWSER, [b"Connection"], [b"keep-alive"])
    assert spliced == BROWSER.replace(b"Connection: keep-alive\r\n", b"")


@pytest.mark.parametrize(
    ("dropped", "connection"),
    [([b"X-Request-Id"], None), ([b"connection"], [b"Keep-Alive"]), ([b"connection"], [b"close"])],
)
def test_a_head_with_one_line_to_cut_loses_that_line_only(dropped, connection):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + dropped[0] + b": x\r\nAccept: */*\r\n"
    assert wire.splice_request_head(raw, dropped, connection) == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n"
    assert wire.splice_request_head(raw, [b"X-Absent"], connection) == raw


@pytest.mark.parametrize(
    "line",
    [
        b"X-Forwarded-For: 6.6.6.6",
        b"x_forwarded_for: 6.6.6.6",
        b"X-Forwarded_Proto: https",
        b"x-forwarded-host: evil",
        b"Forwarded: for=6.6.6.6",
        b"X-Request-Id: mine",
        b"X_Request_Id: mine",
        b"Keep-Alive: 5",
        b"TE: trailers",
        b"Proxy-Authorization: Basic eA==",
    ],
)
def test_request_lines_the_router_sets_or_that_are_hop_by_hop_are_cut(line):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\nAccept: */*\r\n" + line + b"\r\n"
    name = line.split(b":")[0]  # as the parser hands it to on_header
    assert wire.splice_request_head(raw, [name, name], None) == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n"


def test_the_router_drops_every_request_line_the_parser_reports():
    class Recorder:
        def __init__(self):
            self.names = []

        def on_header(self, name, value):
            self.names.append(name)

    raw = BROWSER + b"x_forwarded_for: 1\r\nX-Forwarded-For: 2\r\n"
    recorder = Recorder()
    httptools.HttpRequestParser(recorder).feed_data(raw + b"\r\n")
    dropped = [n for n in recorder.names if wire.rewritten_name(n.lower()) in wire.REWRITTEN]
    assert dropped == [b"Connection", b"x_forwarded_for", b"X-Forwarded-For"]
    assert wire.splice_request_head(raw, dropped, [b"keep-alive"]) == BROWSER.replace(
        b"Connection: keep-alive\r\n", b""
    )


def test_request_headers_named_by_connection_are_cut_except_framing():
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Token\r\nX-Token: t\r\nContent-Length: 0\r\nX-Tok: k\r\n"
    spliced = wire.splice_request_head(raw, [b"Connection"], [b"close, X-Token"])
    assert spliced == b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Tok: k\r\n"
    framing = wire.splice_request_head(
        raw.replace(b"X-Token\r\n", b"Content-Length\r\n"), [b"Connection"], [b"Content-Length"]
    )
    assert b"Content-Length: 0\r\n" in framing


def test_a_spliced_head_still_parses_as_the_same_request():
    class Recorder:
        def __init__(self):
            self.headers = []

        def on_header(self, name, value):
            self.headers.append((name.lower(), value))

    spliced = wire.splice_request_head(BROWSER, [b"Connection"], [b"keep-alive"])
    recorder = Recorder()
    httptools.HttpRequestParser(recorder).feed_data(spliced + b"\r\n")
    assert (b"connection", b"keep-alive") not in recorder.headers
    assert (b"cookie", b"s=1") in recorder.headers


def test_a_line_spelled_in_another_case_than_the_connection_token_is_still_cut():
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-SECRET: 1\r\nx-Secret: 2\r\nAccept: */*\r\n"
    spliced = wire.splice_request_head(raw, [b"Connection"], [b"x-secret"])
    assert spliced == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n"


def test_a_hop_by_hop_header_is_dropped_even_when_connection_also_names_it():
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nKeep-Alive: 5\r\nUpgrade: h2c\r\n"
    spliced = wire.splice_request_head(raw, [b"Connection", b"Keep-Alive", b"Upgrade"], [b"keep-alive, Upgrade"])
    assert spliced == b"GET / HTTP/1.1\r\nHost: a\r\n"


def test_watched_names_are_recognised_in_any_spelling_and_the_memo_stays_bounded():
    assert wire.watched(b"HoSt") == b"host"
    assert wire.watched(b"Connection") == b"connection"
    assert wire.watched(b"X_Forwarded_For") == b"x_forwarded_for"  # any underscore: rewritten_name judges it
    assert wire.watched(b"Accept-Language") == b""
    assert wire.watched(b"HoSt") == b"host"  # remembered, same answer
    for i in range(10_000):  # a client inventing header names, each shaped like X-Request-Id (12 bytes, an x)
        assert wire.watched(b"X-Junk-%05d" % i) == b""
    assert len(wire._SPELLINGS) <= 4096
    assert wire.watched(b"Transfer-Encoding") == b"transfer-encoding"


def test_watched_answers_what_its_definition_says_for_every_spelling_and_random_names():
    """The shape check (length and first letter) only skips names no watched name could be."""

    def definition(name: bytes) -> bytes:
        lower = name.lower()
        return lower if lower in wire.REQUEST_WATCHED or b"_" in lower else b""

    for name in wire.REQUEST_WATCHED:
        for spelling in (name, name.upper(), name.title(), name.swapcase(), name.replace(b"-", b"_")):
            assert wire.watched(spelling) == definition(spelling), spelling
    rng = random.Random(15)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~"
    for _ in range(50_000):
        name = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        assert wire.watched(name) == definition(name), name
    browser = [b"User-Agent", b"Accept", b"Accept-Language", b"Accept-Encoding", b"Cookie", b"Referer"]
    assert [wire.watched(name) for name in browser] == [b""] * len(browser)


def test_response_heads_are_remembered_whole_and_within_bounds():
    first = wire.response_head(NGINX)
    assert wire.response_head(NGINX) is first
    other = NGINX.replace(b"Content-Length: 12\r\n", b"Transfer-Encoding: chunked\r\n")
    assert wire.response_head(other) is not first  # one byte apart is another head
    assert wire.response_head(other).chunked
    assert not first.chunked
    for i in range(2_000):  # heads that never repeat (a fresh cookie in each)
        wire.response_head(NGINX + b"Set-Cookie: s=%d\r\n" % i)
    assert len(wire._HEADS) <= 512
    big = NGINX + b"X-Big: " + b"a" * 2_000 + b"\r\n"
    assert wire.response_head(big) is not wire.response_head(big)  # too big to keep
