"""One request through the router: pick an endpoint, stream the request there, stream the response back,
retry where it is safe, and account for it.

Theory of operation. An exchange is created when a request head is complete, in phase NEW. It asks its service
for an endpoint; with none free it waits in the service's bounded queue (QUEUED). With an endpoint it takes a
pooled connection or opens one (CONNECTING); once it has a connection it writes the head and whatever body
arrived meanwhile (SENT; at most PENDING_MAX bytes are held: beyond that the client is paused), then streams the
rest of the body as it comes. The endpoint's response head goes to the client (RESPONDING) and its body streams
after it, or the endpoint switches protocols (TUNNEL). Every path ends in DONE. The phases and the steps between
them are one table, `_TABLE`; a step the table does not hold raises `ExchangeStateError` naming it.

Framing to the endpoint is always made by the router from the parsed message (Content-Length bytes as counted,
chunked re-encoded), never copied, so bytes the client sends after the end of a request can never reach an
endpoint as part of it. A failed try is counted against its endpoint by kind (`stats.FAULTS`) and handed to
`RetryPolicy.decide`: tries that provably reached no app are retried at once, others only within the retry
budget, and a retry never goes back to the endpoint that just failed unless only its connection was stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httptools

from portero.router import stats, wire
from portero.router.budget import CHARGED_RETRY, FREE_RETRY, NO_RETRY, STATUS
from portero.router.upstream import Upstream

if TYPE_CHECKING:
    from portero.router.client import ClientConnection
    from portero.router.service import Endpoint, ServiceRoute

PENDING_MAX: Final = 64 * 1024  # body held while no endpoint is attached; also the most a retry can replay
# A response with a Content-Length this small goes to the client whole, once it is complete: an endpoint that dies
# in the middle of it (its node killed between the head and the body) costs no request, for it is tried again
# elsewhere, where a head sent already could not be taken back. Larger and unframed ones stream as they come.
HOLD_MAX: Final = 64 * 1024
NO_BODY_STATUS: Final = frozenset({204, 304})

# Phases (what the exchange waits for) and steps (what happened), as ints: the table is looked up on every step.
NEW: Final = 0  # the head is parsed; no endpoint yet
QUEUED: Final = 1  # waiting in the service's queue for an endpoint that can take it
CONNECTING: Final = 2  # an endpoint is picked; a connection to it is opening
SENT: Final = 3  # the request is going or has gone upstream; no response head yet
RESPONDING: Final = 4  # the response head went to the client; its body follows
TUNNEL: Final = 5  # the endpoint switched protocols: bytes flow both ways untouched
DONE: Final = 6  # answered whole, failed with the router's own answer, cut, or abandoned by the client
PHASES: Final = ("new", "queued", "connecting", "sent", "responding", "tunnel", "done")

WAITED: Final = 0  # no endpoint could take it now
PICKED: Final = 1  # an endpoint was picked and a connection to it is opening
ATTACHED: Final = 2  # a connection is attached and the request went on it
RETRIED: Final = 3  # the try failed; another begins
ANSWERED: Final = 4  # the response head went to the client
UPGRADED: Final = 5  # the endpoint answered 101
ENDED: Final = 6  # it is over
STEPS: Final = ("waited", "picked", "attached", "retried", "answered", "upgraded", "ended")

_TABLE: Final = {
    NEW: {WAITED: QUEUED, PICKED: CONNECTING, ATTACHED: SENT, ENDED: DONE},
    QUEUED: {WAITED: QUEUED, PICKED: CONNECTING, ATTACHED: SENT, ENDED: DONE},
    CONNECTING: {ATTACHED: SENT, RETRIED: NEW, ENDED: DONE},
    SENT: {ANSWERED: RESPONDING, UPGRADED: TUNNEL, RETRIED: NEW, ENDED: DONE},
    RESPONDING: {ENDED: DONE},
    TUNNEL: {ENDED: DONE},
    DONE: {},
}
# The table flattened, indexed by `phase << 3 | step` (-1: not allowed): an index into a tuple is native code where
# a dict lookup boxes its key, and it runs three times a request.
_NEXT: Final = tuple(_TABLE.get(key >> 3, {}).get(key & 7, -1) for key in range(len(_TABLE) << 3))


class ExchangeStateError(ValueError):
    """A step the exchange's table does not allow in its phase: a bug in the router, named precisely."""

    def __init__(self, request_id: bytes, phase: int, step: int) -> None:
        super().__init__(
            f"exchange {request_id.decode(errors='replace')}: step {STEPS[step]!r} is not allowed in phase "
            f"{PHASES[phase]!r}"
        )


class BadResponse(Exception):
    """The endpoint's response cannot be forwarded as HTTP/1.1 (raised inside the parser's callbacks)."""


def _forwardable(raw: bytes, limit: int) -> wire.ResponseHead:
    """The response head `raw` read for forwarding, or BadResponse when it cannot be forwarded."""
    if len(raw) > limit:
        raise BadResponse(f"response head larger than {limit} bytes")
    head = wire.response_head(raw)
    if head.unknown_coding:
        raise BadResponse("response with a transfer coding other than chunked")
    return head


class Exchange:
    __slots__ = (
        "attached_reads",
        "avoid",
        "charged_retries",
        "client",
        "client_http10",
        "deadline",
        "endpoint",
        "extra_head",
        "free_retries",
        "hash_key",
        "head",
        "holding",
        "is_head",
        "keep_alive",
        "method",
        "pending",
        "pending_size",
        "phase",
        "quiet_since",
        "rechunk",
        "replay",
        "request_chunked",
        "request_done",
        "request_id",
        "response_close",
        "seen_reads",
        "sent_at",
        "service",
        "started_at",
        "status",
        "tried",
        "tries",
        "until_close",
        "upgrade",
        "upstream",
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
        self.client_http10 = http10
        self.upgrade = upgrade
        self.is_head = method == b"HEAD"
        self.started_at = now
        self.sent_at = now
        self.phase = NEW
        self.request_done = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = []  # None once the body outgrew what a retry may resend
        self.endpoint: Endpoint | None = None
        self.upstream: Upstream | None = None
        self.avoid: Endpoint | None = None  # the endpoint a retry must not go back to
        self.tried: list[Endpoint] = []
        self.tries = 0  # every try, also identifies the current one to its connect task
        self.charged_retries = 0
        self.free_retries = 0
        self.response_close = False
        self.rechunk = False
        self.until_close = False
        self.holding: list[bytes] | None = None  # a small response kept until it is complete (HOLD_MAX)
        self.status = 0
        self.deadline = 0.0
        self.seen_reads = 0
        self.attached_reads = 0  # the connection's reads when this try began on it
        self.quiet_since = now
        self.hash_key: bytes | None = None
        self.extra_head = b""  # header lines the router adds to the response (HSTS)

    def _to(self, step: int) -> None:
        after = _NEXT[self.phase << 3 | step]
        if after < 0:
            raise ExchangeStateError(self.request_id, self.phase, step)
        self.phase = after
        trace = self.service.router.trace
        if trace is not None:
            trace.append((self.request_id, after))

    @property
    def done(self) -> bool:
        return self.phase == DONE

    @property
    def waiting(self) -> bool:
        return self.phase == QUEUED

    # -- dispatch --------------------------------------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        endpoint = self.service.pick(self, now)
        if endpoint is None and self.avoid is not None:
            # A retry that waited in the queue: the endpoint it left may be the only one that can take it now, and
            # skipping it kept the request waiting until its queue timeout (a client's 10-s hang in a kill loop).
            self.avoid = None
            endpoint = self.service.pick(self, now)
        if endpoint is None:
            if self.service.enqueue(self, now):
                self._to(WAITED)
            else:
                self.fail(503, "no endpoint is ready and the queue is full", maintenance=True)
            return
        self.try_at(endpoint, now)

    def try_at(self, endpoint: Endpoint, now: float) -> None:
        self.tries += 1
        self.tried.append(endpoint)
        self.endpoint = endpoint
        endpoint.begin()
        conn = endpoint.pool.take()
        if conn is not None:
            self.attach(conn, now)
        else:
            self._to(PICKED)
            self.deadline = now + self.service.router.connect_timeout_s + 1  # the connect task's own, plus
            endpoint.connect(self, self.tries)

    def connected(self, conn: Upstream, tries: int, now: float) -> None:
        """The connection the try numbered `tries` asked for is open."""
        if tries != self.tries or self.phase != CONNECTING:  # that try is over (the client left, a deadline passed)
            conn.pool.give_back(conn, now)
            return
        self.attach(conn, now)

    def attach(self, conn: Upstream, now: float) -> None:
        self._to(ATTACHED)
        self.upstream = conn
        conn.exchange = self
        self.sent_at = now
        self.seen_reads = self.attached_reads = conn.reads
        self.quiet_since = now
        # The response timeout runs from the end of the request: a long upload is judged by its progress instead.
        self.deadline = now + self.service.router.response_timeout_s if self.request_done else 0.0
        conn.hold(self.service.router)  # sent with the other endpoints' requests of this pass (Router.defer)
        last_chunk = self.request_done and self.request_chunked and not self.upgrade
        if self.pending or last_chunk:
            parts = [self.head, *self.pending]
            if last_chunk:
                parts.append(wire.LAST_CHUNK)
            conn.write(b"".join(parts))
        else:
            conn.write(self.head)  # a request without a body, the usual case: no list to build and join
        if self.pending_size > PENDING_MAX:
            self.client.resume_reading()
        self.pending = []
        self.pending_size = 0

    def connect_failed(self, exc: BaseException, tries: int, now: float) -> None:
        if tries != self.tries or self.phase != CONNECTING:
            return  # that try is over already
        if isinstance(exc, TimeoutError):
            self.failed_try(stats.CONNECT_TIMEOUT, now, 504, "cannot connect to an endpoint in time")
        else:
            self.failed_try(stats.REFUSED, now, 502, f"cannot connect to an endpoint ({type(exc).__name__})")

    def failed_try(self, fault: int, now: float, status: int, detail: str, *, stale: bool = False) -> None:
        """The try at the current endpoint failed before any response byte reached the client: count it against
        that endpoint (unless `stale`: the connection, not this request, failed), then try again where
        `RetryPolicy.decide` allows, or answer with `status`."""
        endpoint, upstream = self.endpoint, self.upstream
        sent = self.phase == SENT
        reused = upstream is not None and upstream.reused
        self.holding = None  # what it had answered so far is dropped: nothing of it reached the client
        if endpoint is not None and fault != STATUS and not stale:
            endpoint.fault(fault, now - self.sent_at, now)
        self.release(ok=False)
        kind = self._retry_kind(fault, sent=sent, reused=reused)
        if kind == NO_RETRY or endpoint is None:
            self.fail(status, detail)
            return
        endpoint.stats.counters.retries += 1
        if kind == FREE_RETRY:
            self.free_retries += 1
        else:
            self.charged_retries += 1
            self.service.router.budget.spend(now)
        if sent:  # resend what went to the failed endpoint, kept in the replay buffer
            self.pending = list(self.replay or [])
            self.pending_size = sum(len(p) for p in self.pending)
        self.avoid = None if kind == FREE_RETRY and reused and fault == stats.RESET else endpoint
        self._to(RETRIED)
        following = self.service.pick(self, now)
        if following is None and kind == CHARGED_RETRY:
            # No other endpoint can take it now (the others died, or restart): back to the one that failed, as
            # HAProxy retries the same server when it cannot redispatch. Where that one has died, its refused
            # connection is a free retry, which waits in the queue for an endpoint. It was answered 502 at once:
            # 52 requests when two of three replicas were killed 3 s apart.
            self.avoid = None
            following = self.service.pick(self, now)
        if following is not None:
            self.try_at(following, now)
        elif self.service.enqueue(self, now):
            self._to(WAITED)  # no endpoint can take it now: it waits for one, as a new request would
        else:
            self.fail(status, detail)

    def _retry_kind(self, fault: int, *, sent: bool, reused: bool) -> int:
        router = self.service.router
        if self.client.closed or (sent and self.replay is None):
            return NO_RETRY  # nobody to answer, or a body that cannot be sent again
        kind = router.retry_policy.decide(
            fault,
            self.method,
            sent=sent,
            reused=reused,
            charged_so_far=self.charged_retries,
            free_so_far=self.free_retries,
            free_limit=len(self.service.endpoints) + 1,
        )
        if kind == CHARGED_RETRY and not router.budget.allows(router.now()):
            return NO_RETRY
        return kind

    def release(self, *, ok: bool | None) -> None:
        """Let go of the endpoint; `ok` is the outcome for passive health (None: no verdict)."""
        endpoint, self.endpoint = self.endpoint, None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        if endpoint is not None:
            endpoint.end(self.service.router.now(), ok=ok)

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
            if self.phase == SENT:
                self.deadline = router.now() + router.response_timeout_s

    # -- response, from the endpoint ------------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        upstream = self.upstream
        assert upstream is not None
        if self.phase == TUNNEL:  # bytes as they are
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
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, BadResponse):
                raise
            self.broken_response(str(cause))
            return
        except httptools.HttpParserError as exc:
            if self.phase == DONE:
                # Fix: garbage after this exchange's complete response: the connection (pooled already) is
                # no good, but this client was answered. It was closed, and the next request on the pooled
                # connection got its parser's error as a 502.
                upstream.close()
                return
            if self.phase == SENT and upstream.reused and upstream.reads == self.attached_reads + 1:
                # Junk where this answer should begin, on a pooled connection: what the endpoint says on its own
                # about an earlier request (a server that did not read a chunked body it was sent reads the body
                # as a request, and answers that). Like a pooled connection closed before answering: dropped,
                # and the request goes again on another connection, at no cost to the endpoint.
                self.failed_try(stats.RESET, self.service.router.now(), 502, f"invalid response: {exc}", stale=True)
                return
            self.broken_response(f"invalid response from the endpoint: {exc}")
            return
        limit = self.service.router.max_response_head_bytes
        if upstream.head_bytes > limit and self.upstream is upstream and self.phase == SENT:
            self.broken_response(f"response head larger than {limit} bytes")

    def response_head(self, status: int, raw: bytes) -> None:
        router = self.service.router
        head = _forwardable(raw, router.max_response_head_bytes)
        if 100 <= status < 200 and status != 101:
            if not self.client_http10:  # interim responses (100 Continue, 103 Early Hints) reach HTTP/1.1 clients
                self.client.write(head.kept + b"\r\n")
            return
        if status in router.retry_policy.on_status and self._retry_status(status):
            return
        self.status = status
        hold = status != 101 and not self.is_head and 0 <= head.length <= HOLD_MAX
        if not hold:
            self._to(UPGRADED if status == 101 else ANSWERED)
        if status == 101:  # the exchange is a tunnel from here: its answer is counted now
            self._record(self.service.router.now())
        out = self._client_head(head, status)
        self.deadline = 0.0
        if hold:
            self.holding = out
            return
        self.client.write(b"".join(out))
        if status == 101:
            self.client.start_tunnel(self)
        elif self.is_head:
            upstream = self.upstream
            assert upstream is not None
            keep_alive = upstream.keeps_alive()  # before the reset: it is the head's verdict
            upstream.reset_parser()  # httptools cannot be told a HEAD response has no body
            self.response_done(upstream_keep_alive=keep_alive)

    def _client_head(self, head: wire.ResponseHead, status: int) -> list[bytes]:
        """The pieces of the response head as the client gets it: the endpoint's kept lines, then the framing and
        connection lines the router decides, and the request id."""
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
        if status != 101:
            close = self.response_close or not self.keep_alive or not self.request_done or self.service.router.closing
            out.append(b"connection: close\r\n" if close else b"connection: keep-alive\r\n")
            self.response_close = close
        if self.extra_head:
            out.append(self.extra_head)
        out.append(b"x-request-id: %b\r\n\r\n" % self.request_id)
        return out

    def _retry_status(self, status: int) -> bool:
        """An answer the policy retries elsewhere (`router.retry_on_status`): counted as the endpoint's answer,
        never shown to the client. False when it may not be retried: it is forwarded then."""
        endpoint = self.endpoint
        assert endpoint is not None
        now = self.service.router.now()
        if not self.request_done or self._retry_kind(STATUS, sent=True, reused=False) != CHARGED_RETRY:
            return False
        if not any(e.available(now) and e is not endpoint for e in self.service.endpoints.values()):
            return False  # nowhere else to go: the answer is the best there is
        endpoint.stats.record(status, now - self.sent_at)
        self.failed_try(STATUS, now, 502, f"the endpoint answered {status}")
        return True

    def response_body(self, data: bytes) -> None:
        if self.holding is not None:
            self.holding.append(data)
        else:
            self.client.write(wire.chunk(data) if self.rechunk else data)

    def response_done(self, *, upstream_keep_alive: bool) -> None:
        if self.holding is not None:  # complete: now it goes out, whole
            self._to(ANSWERED)
            self.client.write(b"".join(self.holding))
            self.holding = None
        elif self.phase != RESPONDING:
            return  # the end of an interim response, or of a head that opened a tunnel
        if self.rechunk:
            self.client.write(wire.LAST_CHUNK)
        router = self.service.router
        now = router.now()
        endpoint, upstream = self.endpoint, self.upstream
        self.endpoint = self.upstream = None
        if endpoint is not None:
            if upstream is not None and upstream_keep_alive and self.request_done and not upstream.lost:
                upstream.give_back(now)
            elif upstream is not None:
                upstream.close()
            endpoint.end(now, ok=self.status < 500)
        self._record(now, endpoint)
        self.finish()
        self.client.exchange_done(self, close=self.response_close, now=now)

    def _record(self, now: float, endpoint: Endpoint | None = None) -> None:
        """The answer, at its endpoint (the time it took there) and at its service (the time its client waited)."""
        endpoint = endpoint or self.endpoint
        if endpoint is not None:
            endpoint.stats.record(self.status, now - self.sent_at)
        self.service.stats.record(self.status, now - self.started_at)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.phase == TUNNEL:
            self.upstream = None
            self.release(ok=None)
            self.finish()
            self.client.close()
            return
        now = self.service.router.now()
        if self.phase == RESPONDING:
            # Part of a response is out; the client cannot be told anything else. Close-delimited bodies end here.
            if self.until_close and self.endpoint is not None:  # fix: was `not rechunk and response_close`
                self.upstream = None
                self.response_done(upstream_keep_alive=False)
                return
            self.cut(stats.RESET, now)
            return
        self.failed_try(stats.RESET, now, 502, "the endpoint closed the connection before responding")

    def broken_response(self, detail: str) -> None:
        now = self.service.router.now()
        if self.phase == RESPONDING:
            self.cut(stats.BAD_RESPONSE, now)
        else:
            self.failed_try(stats.BAD_RESPONSE, now, 502, detail)

    def cut(self, fault: int, now: float) -> None:
        """The endpoint failed after the response head went out: the client's connection is closed."""
        if self.endpoint is not None:
            self.endpoint.fault(fault, now - self.sent_at, now)
        self.release(ok=False)
        self.service.stats.record(502, now - self.started_at)  # the client got a head, then a broken body
        self.finish()
        self.client.close()

    # -- deadlines, checked by the router's sweep -----------------------------------------------------------------

    def check(self, now: float) -> None:
        if self.deadline and now > self.deadline:
            self.timed_out(now)
            return
        upstream = self.upstream
        phase = self.phase
        if upstream is None or (phase != SENT and phase != RESPONDING):
            return
        # Progress is a byte from the endpoint, or it taking the request (its socket's buffer not full) before it
        # answered, or the client holding the response up (not the endpoint's fault: the client's own timeout
        # judges that).
        sending = phase == SENT and self.holding is None and not upstream.write_paused
        if upstream.reads != self.seen_reads or sending or self.client.write_paused:
            self.seen_reads = upstream.reads
            self.quiet_since = now
        elif now - self.quiet_since > self.service.router.settings.stall_timeout_s:
            if phase == RESPONDING:
                self.cut(stats.STALLED, now)
            elif self.holding is not None:
                self.failed_try(stats.STALLED, now, 504, "the endpoint stopped sending its response")
            else:
                self.failed_try(stats.STALLED, now, 504, "the endpoint stopped reading the request")

    def timed_out(self, now: float) -> None:
        phase = self.phase
        if phase == QUEUED:
            self.service.dequeue(self)
            self.fail(503, "no endpoint became ready in time", maintenance=True)
        elif phase == CONNECTING:
            self.failed_try(stats.CONNECT_TIMEOUT, now, 504, "cannot connect to an endpoint in time")
        elif phase == SENT:
            self.failed_try(stats.TIMEOUT, now, 504, "the endpoint did not answer in time")

    # -- endings --------------------------------------------------------------------------------------------------

    def fail(self, status: int, detail: str, *, maintenance: bool = False) -> None:
        """Answer with the router's own response; the connection closes unless the request was read whole."""
        self.release(ok=None)
        self.status = status
        close = not self.request_done or not self.keep_alive or self.upgrade or self.service.router.closing
        if maintenance:
            body = wire.MAINTENANCE_PAGE
            headers: tuple[tuple[bytes, bytes], ...] = ((b"retry-after", b"5"), (b"cache-control", b"no-store"))
            kind = b"text/html; charset=utf-8"
        else:
            body, headers, kind = wire.error_body(status, detail), (), b"text/plain; charset=utf-8"
        self.client.write(
            wire.response(status, body, content_type=kind, headers=headers, close=close, request_id=self.request_id)
        )
        service_stats = self.service.stats
        now = self.service.router.now()
        service_stats.record(status, now - self.started_at)
        service_stats.counters.own += 1
        self.finish()
        self.client.exchange_done(self, close=close, now=now)

    def abort(self) -> None:
        """The client is gone (or the exchange cannot go on): drop everything, no verdict on the endpoint."""
        if self.phase == DONE:
            return
        if self.phase == QUEUED:
            self.service.dequeue(self)
        if self.phase != TUNNEL:  # a tunnel ends when either side closes
            self.service.stats.counters.aborted += 1
        self.release(ok=None)
        self.finish()

    def finish(self) -> None:
        if self.phase == DONE:
            return
        self._to(ENDED)
        self.deadline = 0.0
        self.service.router.active -= 1
