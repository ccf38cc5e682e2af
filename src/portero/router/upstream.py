"""Connections to endpoints: a protocol that hands response events to the exchange it serves, and a
bounded pool of idle keep-alive connections per endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import httptools

from portero.router.burst import BurstWriter

_CR: Final = 13
_LF: Final = 10

if TYPE_CHECKING:
    from portero.router.exchange import Exchange


class Upstream(BurstWriter):
    __slots__ = (
        "chunk",
        "exchange",
        "feeding",
        "head_bytes",
        "head_chunk",
        "head_parts",
        "head_start",
        "idle_since",
        "lost",
        "parser",
        "pool",
        "pooled_at",
        "reads",
        "reused",
        "start",
        "write_paused",
    )

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.lost = False
        self.feeding = False
        self.pooled_at: float | None = None
        self.reads = 0  # reads from the endpoint, ever: the exchange's stall check compares it between sweeps
        self.reused = False  # it has served a response before: a close before answering may be a stale connection
        self.write_paused = False  # the endpoint is not reading what the router sends (its buffer is full)
        self.head_bytes = 0  # of the response head being received, while it is incomplete
        # The response head is forwarded from the endpoint's own bytes (only hop-by-hop lines cut), so the parser
        # has no per-header callbacks: where the head starts is tracked here instead.
        self.chunk = b""  # the bytes being parsed
        self.start = 0  # where in `chunk` a response beginning now begins
        self.head_chunk: bytes | None = None  # the chunk the current head began in, until the head is complete
        self.head_start = 0
        self.head_parts: list[bytes] | None = None  # chunks after head_chunk, while the head is incomplete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # an idle connection has nothing to say; whatever it says ends it
            self.close()
            return
        self.chunk = data
        self.start = 0
        self.reads += 1
        if self.head_parts is not None:
            self.head_parts.append(data)
            self.head_bytes += len(data)
        self.feeding = True
        try:
            exchange.upstream_data(data)
        finally:
            self.feeding = False
        if self.pooled_at is not None:  # see give_back
            now, self.pooled_at = self.pooled_at, None
            self.pool.give_back(self, now)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost tells the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.discard(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client.resume_reading()

    # -- httptools callbacks, relayed to the exchange ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # Fix: a response begins after the last one ended and before any request: the endpoint sent more
            # than it was asked for. Pooled, the rest of it was read as the next request's response (its bytes
            # went to that client before any head). Drop the connection.
            self.close()
            return
        chunk, start = self.chunk, self.start
        # Fix: llhttp skips empty lines before a response; the head (and its status) starts after them. They were
        # forwarded as part of the head, which then reached the client mangled.
        while start < len(chunk) and (chunk[start] == _CR or chunk[start] == _LF):
            start += 1
        self.head_chunk = chunk
        self.head_start = start
        self.head_parts = []
        self.head_bytes = len(chunk) - start

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            head = self._head()
            # The status from the head's bytes: llhttp (strict) has checked "HTTP/x.y NNN", and asking the parser
            # is a method call from compiled code on every response.
            status = (head[9] - 48) * 100 + (head[10] - 48) * 10 + head[11] - 48
            self.exchange.response_head(status, head)

    def _head(self) -> bytes:
        """The head just parsed: status line and header lines, each with its CRLF, without the blank line. llhttp
        has checked it (strict: CRLF only), so it ends at the first blank line after its start."""
        chunk, start, first = self.chunk, self.head_start, self.head_chunk
        if first is chunk:
            end = chunk.find(b"\r\n\r\n", start)
            if end < 0:  # cannot happen after llhttp's strict parse; if it did, a 502 beats forwarding garbage
                raise ValueError("the response head's end is not where the parser found it")
            head = chunk[start : end + 2]
            self.start = end + 4  # an interim (1xx) response may be followed by the final one in this chunk
        else:
            assert first is not None
            assert self.head_parts is not None
            joined = first[start:] + b"".join(self.head_parts)
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                raise ValueError("the response head's end is not where the parser found it")
            head = joined[: end + 2]
            self.start = len(chunk) - (len(joined) - end - 4)
        self.head_chunk = self.head_parts = None
        self.head_bytes = 0
        return head

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_done(upstream_keep_alive=self.keeps_alive())

    def keeps_alive(self) -> bool:
        """The endpoint keeps this connection open after the response just parsed (llhttp's verdict)."""
        return bool(self.parser.should_keep_alive())

    # --------------------------------------------------------------------------------------------------------------

    def give_back(self, now: float) -> None:
        """The response is complete: back to the pool. Fix: only once the bytes it came in are all parsed, for
        bytes after it were read as the response of the request that took the connection meanwhile (a pipelined
        one, dispatched as this one ended); now they find no exchange and end the connection."""
        self.exchange = None
        if self.feeding:
            self.pooled_at = now
        else:
            self.pool.give_back(self, now)

    def pause_reading(self) -> None:
        """The client is not taking the response as fast as it comes: stop reading from the endpoint."""
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def reset_parser(self) -> None:
        """After a response without a body that the parser cannot know of (HEAD), start over."""
        self.parser = httptools.HttpResponseParser(self)
        self.head_chunk = self.head_parts = None

    def writable(self) -> bool:
        return not self.lost

    def close(self) -> None:
        self.exchange = None
        self.held = None
        self.lost = True  # fix: closed now, though connection_lost comes later: `take` must not hand it out
        if self.transport is not None:
            self.transport.abort()  # a half-used upstream connection is never worth a graceful close


class Pool:
    """Idle keep-alive connections to one endpoint; newest first (warm), bounded."""

    __slots__ = ("address", "busy", "host", "idle", "opened", "port", "size")

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.size = size
        self.idle: deque[Upstream] = deque()
        self.busy: set[Upstream] = set()  # serving an exchange: what a drain deadline cuts
        self.opened = 0  # connections open, idle or busy

    def take(self) -> Upstream | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                self.busy.add(conn)
                return conn
        return None

    def give_back(self, conn: Upstream, now: float) -> None:
        self.busy.discard(conn)
        if conn.lost or len(self.idle) >= self.size:
            conn.close()
            return
        conn.exchange = None
        conn.idle_since = now
        conn.reused = True
        self.idle.append(conn)

    def close_idle(self) -> None:
        """Close the idle connections (their endpoint refused a new one: they are dead or soon will be)."""
        while self.idle:
            self.idle.pop().close()

    def discard(self, conn: Upstream) -> None:
        self.opened -= 1
        self.busy.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def expire(self, older_than: float) -> None:
        """Close idle connections unused since `older_than` (the backend would close them soon anyway)."""
        while self.idle and self.idle[0].idle_since < older_than:
            self.idle.popleft().close()

    def close(self) -> None:
        """Close every connection, busy ones included: their exchanges hear of it through connection_lost."""
        self.close_idle()
        for conn in list(self.busy):
            if conn.transport is not None:
                conn.transport.abort()

    async def connect(self, timeout_s: float) -> Upstream:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Upstream(self), self.host, self.port), timeout_s
        )
        self.opened += 1  # counted even if lost: `discard` has counted it off already
        if conn.lost:
            # Fix: reset after it opened and before this task resumed (a sync worker's app killed with the connection
            # in its backlog). Handed out, the request went on a dead transport and nothing ever told its exchange:
            # a client waited for the 60-s response timeout (CI's TimeoutError in the kill loop).
            raise ConnectionResetError(f"{self.address} reset the connection as it opened")
        self.busy.add(conn)
        return conn
