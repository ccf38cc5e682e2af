"""A small built-in load generator: keep-alive clients that record every outcome, for tests, benchmarks and
demos. Not a replacement for wrk: it measures correctness under load (every failed request counted, with its
reason and the app version that answered), not peak speed.

Each client is one keep-alive connection driven by callbacks (an asyncio protocol and llhttp's parser), not an
HTTP library: httpx's pool spent about 7 ms of CPU per request at 50 connections (100 requests/s on this machine),
so a load of 50 clients measured the load generator rather than the router. A request is never retried: a
connection that fails under a request fails that request, as a user would see it. A connection that the server
closed while idle is replaced before the next request (as every HTTP client does), and one that a response says
is closing (`Connection: close`) after it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


@dataclass
class LoadReport:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)  # X-App-Version of the responses
    latencies_s: list[float] = field(default_factory=list)
    # (seconds since start when sent, status or 0 for an error, version, seconds since start when answered)
    timeline: list[tuple[float, int, str, float]] = field(default_factory=list)
    answered_by: list[str] = field(default_factory=list)  # X-Replica of each answer of `timeline` ("" if none)
    duration_s: float = 0.0
    started_at: float = 0.0  # time.monotonic() at the start
    connections: int = 0  # opened, over the run

    @property
    def rate(self) -> float:
        return self.sent / self.duration_s if self.duration_s else 0.0

    def failures(self) -> list[tuple[float, int, float]]:
        """When each failed request was sent and answered (seconds since the start), and its status (0: an error):
        what a test prints beside its counts, to line a failure up with the logs."""
        return [
            (round(sent, 3), status, round(done, 3)) for sent, status, _, done in self.timeline if not 0 < status < 500
        ]

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass
class _Answer:
    status: int = 0
    version: str = ""
    replica: str = ""
    close: bool = False
    body: bytes = b""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request at a time, its response parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[_Answer] | None = None
        self.answer = _Answer()
        self.header = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"malformed response: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection closed before the response" if exc is None else f"{type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"x-app-version":
            self.answer.version = value.decode("latin-1")
        elif lower == b"x-replica":
            self.answer.replica = value.decode("latin-1")
        elif lower == b"connection" and value.lower() == b"close":
            self.answer.close = True

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if len(self.answer.body) < 200:
            self.answer.body += body[:200]

    def on_message_complete(self) -> None:
        if 100 <= self.answer.status < 200:  # an interim response: the final one follows
            self.answer = _Answer()
            return
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.answer)

    async def exchange(self, request: bytes, timeout_s: float) -> _Answer:
        assert self.transport is not None
        self.answer = _Answer()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await asyncio.wait_for(self.waiter, timeout_s)
        except TimeoutError:
            self._fail("timed out")
            raise


async def run_load(
    url: str,
    *,
    concurrency: int = 8,
    duration_s: float = 5.0,
    stop: asyncio.Event | None = None,
    timeout_s: float = 10.0,
    pause_s: float = 0.0,
    ssl_context: ssl.SSLContext | None = None,
    connect_to: tuple[str, int] | None = None,
) -> LoadReport:
    """`concurrency` keep-alive clients GET `url` until `duration_s` passes or `stop` is set. `connect_to`: the
    address to connect to instead of the URL's (its host still named by SNI and `Host`, as curl's --connect-to)."""
    target = _Target.of(url, ssl_context, timeout_s, connect_to)
    report = LoadReport()
    start = report.started_at = time.monotonic()
    end = start + duration_s

    def going() -> bool:
        return time.monotonic() < end and not (stop is not None and stop.is_set())

    await asyncio.gather(*(_client(target, report, going, pause_s) for _ in range(concurrency)))
    report.duration_s = time.monotonic() - start
    return report


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    request: bytes
    context: ssl.SSLContext | None
    timeout_s: float
    name: str  # the URL's host: SNI and the name its certificate is checked for

    @classmethod
    def of(
        cls, url: str, ssl_context: ssl.SSLContext | None, timeout_s: float, connect_to: tuple[str, int] | None = None
    ) -> _Target:
        parts = urlsplit(url)
        name = parts.hostname or "127.0.0.1"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        request = f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: portero-load\r\n\r\n".encode()
        secure = parts.scheme == "https"
        host, port = connect_to or (name, parts.port or (443 if secure else 80))
        context = (ssl_context or ssl.create_default_context()) if secure else None
        return cls(host, port, request, context, timeout_s, name)

    async def connect(self, report: LoadReport) -> _Connection:
        loop = asyncio.get_running_loop()
        hostname = self.name if self.context else None
        connecting = loop.create_connection(
            _Connection, self.host, self.port, ssl=self.context, server_hostname=hostname
        )
        _, conn = await asyncio.wait_for(connecting, self.timeout_s)
        report.connections += 1
        return conn


async def _client(target: _Target, report: LoadReport, going: Callable[[], bool], pause_s: float) -> None:
    """One client: a request at a time on its connection, a new connection when the last one failed or closed."""
    start = report.started_at
    conn: _Connection | None = None
    while going():
        sent_at = time.monotonic()
        report.sent += 1
        try:
            if conn is None or conn.closed:
                conn = await target.connect(report)
            answer = await conn.exchange(target.request, target.timeout_s)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            conn = None
            report.failed += 1
            report.errors[str(exc) or type(exc).__name__] += 1
            report.timeline.append((sent_at - start, 0, "", time.monotonic() - start))
            report.answered_by.append("")
            continue
        _count(report, answer, sent_at)
        if answer.close:
            assert conn.transport is not None
            conn.transport.close()
            conn = None
        if pause_s:
            await asyncio.sleep(pause_s)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


def _count(report: LoadReport, answer: _Answer, sent_at: float) -> None:
    start, done_at = report.started_at, time.monotonic()
    report.latencies_s.append(done_at - sent_at)
    report.statuses[answer.status] += 1
    report.versions[answer.version] += 1
    report.timeline.append((sent_at - start, answer.status, answer.version, done_at - start))
    report.answered_by.append(answer.replica)
    if answer.status < 500:
        report.ok += 1
    else:
        report.failed += 1
        report.errors[answer.body[:120].decode(errors="replace").strip()] += 1  # the router says why
