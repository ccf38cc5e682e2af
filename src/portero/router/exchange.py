"""One request through the router: pick an endpoint, stream the request there, stream the response back,
retry where it is safe, and account for it.

Theory of operation. An exchange is created when a request head is complete. It asks its service for an
endpoint; with none free it waits in the service's bounded queue. Once it has a connection it writes the head
and whatever body arrived meanwhile (at most PENDING_MAX bytes are held: beyond that the client is paused),
then streams the rest of the body as it comes. Framing to the endpoint is always made by the router from the
parsed message (Content-Length bytes as counted, chunked re-encoded), never copied, so bytes the client sends
after the end of a request can never reach an endpoint as part of it. A connect failure, or a connection lost
before any response byte, is retried on another endpoint when the method is idempotent (or nothing was sent),
the body can be replayed, tries remain and the router's retry budget allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from portero.router import wire
from portero.router.upstream import Upstream

if TYPE_CHECKING:
    from portero.router.client import ClientConnection
    from portero.router.service import Endpoint, ServiceRoute

PENDING_MAX = 64 * 1024  # body held while no endpoint is attached; also the most a retry can replay
NO_BODY_STATUS = frozenset({204, 304})


class Exchange:
    __slots__ = (
        "attempt",
        "client",
        "client_http10",
        "content_length",
        "deadline",
        "done",
        "endpoint",
        "hash_key",
        "head",
        "is_head",
        "keep_alive",
        "method",
        "pending",
        "pending_size",
        "rechunk",
        "replay",
        "request_chunked",
        "request_done",
        "request_id",
        "response_close",
        "response_started",
        "retrying",
        "sent_anything",
        "service",
        "started_at",
        "status",
        "tried",
        "until_close",
        "upgrade",
        "upstream",
        "waiting",
    )

    def __init__(
        self,
        client: ClientConnection,
        service: ServiceRoute,
        method: bytes,
        head: bytes,
        request_id: bytes,
        *,
        keep_alive: bool,
        chunked: bool,
        content_length: int,
        http10: bool,
        upgrade: bool,
        now: float,
    ) -> None:
        self.client = client
        self.service = service
        self.method = method
        self.head = head
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.request_chunked = chunked
        self.content_length = content_length
        self.client_http10 = http10
        self.upgrade = upgrade
        self.is_head = method == b"HEAD"
        self.started_at = now
        self.request_done = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = []  # None once the body outgrew what a retry may resend
        self.endpoint: Endpoint | None = None
        self.upstream: Upstream | None = None
        self.tried: list[Endpoint] = []
        self.attempt = 0
        self.sent_anything = False
        self.response_started = False
        self.response_close = False
        self.rechunk = False
        self.until_close = False
        self.retrying = False
        self.waiting = False
        self.status = 0
        self.deadline = 0.0
        self.done = False
        self.hash_key: bytes | None = None

    # -- dispatch --------------------------------------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        endpoint = self.service.pick(self, now)
        if endpoint is None:
            if not self.service.enqueue(self, now):
                self.fail(503, "no endpoint is ready and the queue is full", maintenance=True)
            return
        self.attempt += 1
        self.tried.append(endpoint)
        self.endpoint = endpoint
        endpoint.begin()
        conn = endpoint.pool.take()
        if conn is not None:
            self.attach(conn, now)
        else:
            self.deadline = now + self.service.router.settings.connect_timeout_s + 1
            endpoint.connect(self)

    def attach(self, conn: Upstream, now: float) -> None:
        if self.done or self.client.closed:  # the client left while we were connecting
            # Fix: abort() has released the endpoint already (this asserted, and leaked the connection).
            conn.pool.give_back(conn, now)
            self.release(ok=None)
            return
        self.upstream = conn
        conn.exchange = self
        # The response timeout runs from the end of the request: a long upload is judged by its rate instead.
        self.deadline = now + self.service.router.settings.response_timeout_s if self.request_done else 0.0
        parts = [self.head, *self.pending]
        if self.request_done and self.request_chunked and not self.upgrade:
            parts.append(wire.LAST_CHUNK)
        conn.hold(self.service.router)  # sent with the other endpoints' requests of this pass (Router.defer)
        conn.write(b"".join(parts))
        self.sent_anything = True
        if self.pending_size > PENDING_MAX:
            self.client.resume_reading()
        self.pending = []
        self.pending_size = 0

    def connect_failed(self, exc: BaseException, now: float) -> None:
        if self.done:  # fix: aborted while connecting; nobody is left to answer or to retry for
            return
        timed_out = isinstance(exc, TimeoutError)
        self.retry_or_fail(now, 504 if timed_out else 502, f"cannot connect to an endpoint ({type(exc).__name__})")

    def retry_or_fail(self, now: float, status: int, detail: str) -> None:
        endpoint = self.endpoint
        self.release(ok=False)
        router = self.service.router
        # A request that reached no endpoint (connection refused) costs nothing to send elsewhere: the budget,
        # which keeps retries from multiplying an overloaded service's load, applies to the others only.
        if (
            endpoint is not None
            and not self.response_started
            and not self.unreplayable()
            and router.retry_policy.may_retry(self.method, self.sent_anything, False, self.attempt)
            and (not self.sent_anything or router.budget.can_retry(router.active, router.retries_in_flight))
        ):
            endpoint.stats.retries += 1
            if not self.retrying:
                self.retrying = True
                router.retries_in_flight += 1
            if self.sent_anything:  # resend what went to the failed endpoint, kept in the replay buffer
                self.pending = list(self.replay or [])
                self.pending_size = sum(len(p) for p in self.pending)
            # Fix: else nothing was sent, and `pending` still holds the whole body so far; it was replaced by the
            # replay buffer, which is dropped past 64 KiB, so the next endpoint got a body without its start.
            self.sent_anything = False
            self.dispatch(now)
            return
        self.fail(status, detail)

    def unreplayable(self) -> bool:
        """Something went upstream that a retry could not send again (a body beyond the replay buffer)."""
        return self.sent_anything and self.replay is None

    def release(self, ok: bool | None) -> None:
        """Let go of the endpoint; `ok` is the outcome for passive health (None: no verdict)."""
        endpoint, self.endpoint = self.endpoint, None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        if endpoint is not None:
            endpoint.end(ok, self.service.router.now())

    # -- request body, from the client ----------------------------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        if self.request_chunked and not self.upgrade:
            data = wire.chunk(data)
        if self.replay is not None:
            self.replay.append(data)
            if sum(len(p) for p in self.replay) > PENDING_MAX:
                self.replay = None
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_MAX:
            self.client.pause_reading()  # resumed when an endpoint is attached

    def request_complete(self) -> None:
        self.request_done = True
        if self.upstream is not None:
            if self.request_chunked and not self.upgrade:
                self.upstream.write(wire.LAST_CHUNK)
            router = self.service.router
            self.deadline = router.now() + router.settings.response_timeout_s

    # -- response, from the endpoint ------------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        upstream = self.upstream
        assert upstream is not None
        if self.status == 101:  # tunnel (WebSocket): bytes as they are
            self.client.write(data)
            return
        client = self.client
        client.hold(client.router)  # flushed by the router once this pass of the event loop is done
        try:
            upstream.parser.feed_data(data)
        except httptools.HttpParserUpgrade as switch:  # 101: what follows the head is the tunnel's
            offset = switch.args[0] if switch.args and isinstance(switch.args[0], int) else len(data)
            if data[offset:]:
                self.client.write(data[offset:])
        except httptools.HttpParserError as exc:
            if self.done:
                # Fix: garbage after this exchange's complete response: the connection (pooled already) is
                # no good, but this client was answered. It was closed, and the next request on the pooled
                # connection got its parser's error as a 502.
                upstream.close()
                return
            self.broken_response(f"invalid response from the endpoint: {exc}")

    def response_head(self, status: int, upstream_keep_alive: bool, raw: bytes) -> None:
        if 100 <= status < 200 and status != 101:
            if not self.client_http10:  # interim responses (100 Continue) pass through to HTTP/1.1 clients
                self.client.write(b"HTTP/1.1" + raw[8 : raw.find(b"\r\n") + 2] + b"\r\n")
            return
        self.status = status
        self.response_started = True
        head = wire.response_head(raw)
        out = [head.kept]
        bodiless = self.is_head or status in NO_BODY_STATUS or status == 101
        # Fix: a body with neither length nor chunking ends when the endpoint closes (RFC 9112 §6.3); the
        # client got it truncated (an HTTP/1.1 client never saw the last chunk).
        self.until_close = not head.has_length and not head.chunked and not bodiless
        if status == 101:
            out.append(b"connection: upgrade\r\nupgrade: %b\r\n" % (head.upgrade or b"websocket"))
        elif not head.has_length and not bodiless:
            if self.client_http10:
                self.response_close = True  # an HTTP/1.0 client reads to the close
            else:
                self.rechunk = True
                out.append(b"transfer-encoding: chunked\r\n")
        close = self.response_close or not self.keep_alive or not self.request_done
        if status != 101:
            out.append(b"connection: close\r\n" if close else b"connection: keep-alive\r\n")
            self.response_close = close
        out.append(b"x-request-id: %b\r\n\r\n" % self.request_id)
        self.client.write(b"".join(out))
        self.deadline = 0.0
        if status == 101:
            self.client.start_tunnel(self)
        elif self.is_head:
            assert self.upstream is not None
            self.upstream.reset_parser()  # httptools cannot be told a HEAD response has no body
            self.response_done(upstream_keep_alive)

    def response_body(self, data: bytes) -> None:
        self.client.write(wire.chunk(data) if self.rechunk else data)

    def response_done(self, upstream_keep_alive: bool) -> None:
        if self.status in (0, 101):
            return  # the end of an interim response, or of a head that opened a tunnel
        if self.rechunk:
            self.client.write(wire.LAST_CHUNK)
        router = self.service.router
        now = router.now()
        endpoint, upstream = self.endpoint, self.upstream
        self.endpoint = self.upstream = None
        if endpoint is not None:
            endpoint.stats.record(self.status, now - self.started_at)
            if upstream is not None and upstream_keep_alive and self.request_done and not upstream.lost:
                upstream.give_back(now)
            elif upstream is not None:
                upstream.close()
            endpoint.end(self.status < 500, now)
        self.finish()
        self.client.exchange_done(self, close=self.response_close)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.status == 101:
            self.client.close()
            return
        self.upstream = None
        if self.response_started:
            # Part of a response is out; the client cannot be told anything else. Close-delimited bodies end here.
            if self.until_close and self.endpoint is not None:  # fix: was `not rechunk and response_close`
                self.response_done(False)
                return
            self.release(ok=False)
            self.finish()
            self.client.close()
            return
        self.retry_or_fail(self.service.router.now(), 502, "the endpoint closed the connection before responding")

    def broken_response(self, detail: str) -> None:
        if self.response_started:
            self.release(ok=False)
            self.finish()
            self.client.close()
        else:
            self.release(ok=False)
            self.fail(502, detail)

    # -- endings --------------------------------------------------------------------------------------------------

    def timed_out(self, now: float) -> None:
        if self.waiting:
            self.service.dequeue(self)
            self.fail(503, "no endpoint became ready in time", maintenance=True)
        elif not self.response_started:
            if self.endpoint is not None:
                self.endpoint.stats.timeouts += 1
            self.retry_or_fail(now, 504, "the endpoint did not answer in time")
        else:
            self.abort()

    def fail(self, status: int, detail: str, maintenance: bool = False) -> None:
        """Answer with the router's own response; the connection closes unless the request was read whole."""
        self.release(ok=None)
        self.status = status
        close = not self.request_done or not self.keep_alive or self.upgrade
        if maintenance:
            body = wire.MAINTENANCE_PAGE
            headers: tuple[tuple[bytes, bytes], ...] = ((b"retry-after", b"5"), (b"cache-control", b"no-store"))
            kind = b"text/html; charset=utf-8"
        else:
            body, headers, kind = wire.error_body(status, detail), (), b"text/plain; charset=utf-8"
        self.client.write(
            wire.response(status, body, content_type=kind, headers=headers, close=close, request_id=self.request_id)
        )
        self.service.stats.record(status, self.service.router.now() - self.started_at)
        self.finish()
        self.client.exchange_done(self, close=close)

    def abort(self) -> None:
        """The client is gone (or the exchange cannot go on): drop everything, no verdict on the endpoint."""
        if self.waiting:
            self.service.dequeue(self)
        self.release(ok=None)
        self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.deadline = 0.0
        router = self.service.router
        router.active -= 1
        if self.retrying:
            self.retrying = False
            router.retries_in_flight -= 1
