"""A routed service: its endpoints (each with pool, health, breaker, outlier state and stats), its balancer
and the bounded queue where requests wait when no endpoint can take them."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from enum import StrEnum
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Final

from portero.router import outlier
from portero.router.balancer import Balancer, effective_weight
from portero.router.breaker import CircuitBreaker
from portero.router.health import ActiveHealth
from portero.router.stats import FAULTS, REFUSED, STATUS_CLASSES, Counters, LatencyHistogram, bucket_of
from portero.router.target import Target
from portero.router.upstream import Pool
from portero.tasks import spawn

if TYPE_CHECKING:
    from portero.router.exchange import Exchange
    from portero.router.server import Router

log = logging.getLogger(__name__)


class EndpointState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"  # no new requests; the ones in flight may finish until `drain_until`
    DOWN = "down"  # failing its active checks


_ACTIVE: Final = EndpointState.ACTIVE  # read from a static by compiled code; `EndpointState.ACTIVE` is a lookup


class Stats:
    """Counters and a latency histogram: an endpoint's (its tries: the time each took there), or a service's (the
    answers its clients got: the time each client waited, queue included; and apart, in `waits`, the time requests
    spent in its queue, observed for those that waited only)."""

    __slots__ = ("counters", "latency", "waits")

    def __init__(self) -> None:
        self.counters = Counters()
        self.latency = LatencyHistogram()
        self.waits = LatencyHistogram()

    def record(self, status: int, seconds: float) -> None:
        # Counters.record_status and LatencyHistogram.observe, inlined: this runs on every response.
        index = status // 100 - 1
        self.counters.responses[index if 0 <= index < 5 else 4] += 1
        self.observe(seconds)

    def observe(self, seconds: float) -> None:
        latency = self.latency
        latency.counts[bucket_of(seconds)] += 1
        latency.sum += seconds
        latency.count += 1


class Endpoint:
    __slots__ = (
        "breaker",
        "drain_until",
        "health",
        "key",
        "last_check",
        "outlier",
        "pool",
        "probing",
        "replica_id",
        "service",
        "source",
        "state",
        "stats",
        "target",
    )

    def __init__(
        self, service: ServiceRoute, host: str, port: int, weight: int, source: str, now: float, replica_id: str = ""
    ) -> None:
        router = service.router
        self.service = service
        self.key = f"{host}:{port}"
        self.source = source  # "replica" (portero runs it), "static" (spec file) or "registered" (API)
        self.replica_id = replica_id
        self.target = Target(self.key, weight, since=now)
        self.pool = Pool(host, port, router.settings.pool_size)
        self.state = EndpointState.ACTIVE
        self.drain_until = 0.0
        # Replicas are checked by the supervisor; other endpoints by the router, starting UP as in HAProxy.
        checks = router.settings.health
        self.health = None if source == "replica" else ActiveHealth(healthy=True, rise=checks.rise, fall=checks.fall)
        self.probing = False  # a replica that refused a connection: probed by the router until it answers
        self.last_check = 0.0
        self.breaker = CircuitBreaker(router.breaker_policy)
        self.outlier = outlier.OutlierState(healthy_since=now)
        self.stats = Stats()

    def available(self, now: float) -> bool:
        """May take a new request now (the breaker's half-open probe slots are taken only on `allow`)."""
        if self.state is not _ACTIVE or self.target.weight <= 0:
            return False
        ejected_until = self.outlier.ejected_until
        if ejected_until is not None and now < ejected_until:
            return False
        limit = self.service.max_in_flight
        if limit and self.target.in_flight >= limit:
            return False
        reopens = self.breaker.reopens_at  # None unless the breaker is open
        return reopens is None or now >= reopens

    def begin(self) -> None:
        self.target.in_flight += 1
        self.stats.counters.requests += 1
        self.stats.counters.in_flight += 1

    def end(self, now: float, *, ok: bool | None) -> None:
        self.target.in_flight -= 1
        self.stats.counters.in_flight -= 1
        if ok is None:
            self.breaker.release()
        else:
            self.breaker.record(now, ok=ok)
            service = self.service
            # A success ejects nothing: the count of ejected endpoints (a walk over all of them) only for failures.
            ejected_now = 0 if ok else service.ejected_count(now)
            ejected = outlier.record(
                self.outlier, now, service.outlier_policy, ejected_now, len(service.endpoints), ok=ok
            )
            if ejected:
                self.stats.counters.ejections += 1
                until = (self.outlier.ejected_until or now) - now
                service.router.tell("endpoint.ejected", self, f"ejected for {until:.0f} s after failures in a row")
        if self.service.queue:
            self.service.wake(now)

    def fault(self, kind: int, seconds: float, now: float) -> None:
        """A try here failed (stats.FAULTS); a refused connection takes the endpoint out of rotation at once."""
        self.stats.counters.faults[kind] += 1
        self.stats.observe(seconds)
        if kind == REFUSED and self.state is EndpointState.ACTIVE:
            self.state = EndpointState.DOWN
            self.pool.close_idle()
            self.last_check = now  # first probe one interval from now: it has just refused
            if self.health is None:
                self.probing = True  # a replica: the supervisor's checks do not reach the router when it is down
            else:
                self.health.down()
            self.service.router.tell("endpoint.down", self, "refused a connection: out of rotation until it answers")

    def up(self, now: float) -> None:
        """Its active checks pass again (or a replica that refused answers): back in rotation, with slow start."""
        self.probing = False
        if self.state is EndpointState.DOWN:
            self.state = EndpointState.ACTIVE
            self.target.since = now
            self.service.wake(now)

    def connect(self, exchange: Exchange, tries: int) -> None:
        self.service.router.connector(self, exchange, tries)

    def drain(self, until: float) -> None:
        self.state = EndpointState.DRAINING
        self.drain_until = until

    def snapshot(self, now: float) -> dict[str, object]:
        latency = self.stats.latency
        counters = self.stats.counters
        return {
            "address": self.key,
            "service": self.service.name,
            "source": self.source,
            "replica": self.replica_id or None,
            "state": self.state.value,
            "weight": self.target.weight,
            "effective_weight": round(self.service.effective_weight(self, now), 2),
            "health": None if self.health is None else ("up" if self.health.healthy else "down"),
            "breaker": self.breaker.state.value,
            "ejected": outlier.is_ejected(self.outlier, now),
            "in_flight": self.target.in_flight,
            "requests": counters.requests,
            "responses": dict(zip(STATUS_CLASSES, counters.responses, strict=True)),
            "faults": dict(zip(FAULTS, counters.faults, strict=True)),
            "errors": counters.responses[4] + sum(counters.faults),
            "retries": counters.retries,
            "ejections": counters.ejections,
            "latency_p50_s": latency.percentile(50),
            "latency_p95_s": latency.percentile(95),
            "latency_p99_s": latency.percentile(99),
        }


class ServiceRoute:
    def __init__(self, router: Router, name: str, balancer: Balancer, slow_start_s: float) -> None:
        self.router = router
        self.name = name
        self.balancer = balancer
        self.slow_start_s = slow_start_s
        self.endpoints: dict[str, Endpoint] = {}
        self.queue: deque[Exchange] = deque()
        self.queued_at: dict[Exchange, float] = {}  # when each exchange in the queue began to wait
        self.stats = Stats()  # what its clients got, whoever answered (`counters.own`: the router itself)
        self.max_in_flight = 0
        self.hash_header: bytes | None = None
        self.hash_cookie: str | None = None
        self.outlier_policy = router.outlier_policy
        self.balancer_name = ""
        self.replica_weight = 1
        self.health_path = "/health"

    def effective_weight(self, endpoint: Endpoint, now: float) -> float:
        return effective_weight(endpoint.target, now, self.slow_start_s)

    def ejected_count(self, now: float) -> int:
        return sum(1 for e in self.endpoints.values() if outlier.is_ejected(e.outlier, now))

    def pick(self, exchange: Exchange, now: float) -> Endpoint | None:
        endpoints = self.endpoints
        avoid = exchange.avoid
        candidates = [e.target for e in endpoints.values() if e.available(now) and e is not avoid]
        tried = exchange.tried
        if tried and len(candidates) > 1:
            fresh = [t for t in candidates if endpoints[t.key] not in tried]  # a retry goes elsewhere when it can
            candidates = fresh or candidates
        key = exchange.hash_key if self.hash_header or self.hash_cookie else None
        while candidates:
            # One candidate (available, so its weight is positive) is every balancer's answer, and asking would
            # change no state: smooth round robin adds its weight and takes the same total off again.
            target = candidates[0] if len(candidates) == 1 else self.balancer.pick(candidates, now, key)
            if target is None:
                return None
            chosen = endpoints[target.key]  # a target's key is its endpoint's
            if chosen.breaker.allow(now):
                return chosen
            candidates.remove(target)  # half-open with every probe slot taken
        return None

    def peek(self, now: float) -> Endpoint | None:
        candidates = [e for e in self.endpoints.values() if e.available(now)]
        target = self.balancer.peek([e.target for e in candidates], now, None)
        return next((e for e in candidates if e.target is target), None)

    def hash_key_of(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        if self.hash_header is not None:
            return next((v for n, v in headers if n.lower() == self.hash_header), None)
        if self.hash_cookie is not None:
            for name, value in headers:
                if name.lower() == b"cookie":
                    try:
                        jar = SimpleCookie(value.decode("latin-1"))
                    except CookieError:
                        continue
                    if self.hash_cookie in jar:
                        return jar[self.hash_cookie].value.encode()
        return None

    # -- waiting for an endpoint ----------------------------------------------------------------------------------

    def enqueue(self, exchange: Exchange, now: float) -> bool:
        """Room in the queue for `exchange` (which then waits, until `queue_timeout_s`)."""
        if len(self.queue) >= self.router.settings.queue_max or self.router.settings.queue_timeout_s <= 0:
            return False
        if not exchange.waiting:  # a requeued exchange keeps its place in time
            exchange.deadline = now + self.router.settings.queue_timeout_s
            self.queued_at[exchange] = now
        self.queue.append(exchange)
        self.router.demand(self)
        return True

    def dequeue(self, exchange: Exchange) -> None:
        """Out of the queue without an endpoint (timed out, the client left): its wait counts all the same."""
        with contextlib.suppress(ValueError):
            self.queue.remove(exchange)
        self.waited(exchange, self.router.now())

    def wake(self, now: float) -> None:
        """Hand waiting requests to endpoints that can take them, oldest first."""
        for _ in range(len(self.queue)):
            if not any(e.available(now) for e in self.endpoints.values()):
                return
            exchange = self.queue.popleft()
            exchange.dispatch(now)
            if not exchange.waiting:  # not put back (every available endpoint's breaker refused it)
                self.waited(exchange, now)

    def waited(self, exchange: Exchange, now: float) -> None:
        at = self.queued_at.pop(exchange, None)
        if at is not None:
            self.stats.waits.observe(now - at)

    # -- endpoint set ---------------------------------------------------------------------------------------------

    def restart_balancing(self, now: float) -> None:
        """Weights changed (a deployment moved traffic): the balancer starts over, so that every endpoint gets its
        new share from the next request. Smooth round robin's running weights, left from the old weights, starved
        the endpoints whose weight went up: four new replicas got no request while an old one took 323."""
        for endpoint in self.endpoints.values():
            endpoint.target.current = 0.0
        self.wake(now)

    def add(self, endpoint: Endpoint, now: float) -> None:
        old = self.endpoints.get(endpoint.key)
        if old is not None:  # a draining endpoint of the same address comes back: its counts go on where they were
            endpoint.stats = old.stats
            old.pool.size = 0  # its connections close as its last requests end
            old.pool.close_idle()
        self.endpoints[endpoint.key] = endpoint
        self.wake(now)

    def sweep(self, now: float) -> None:
        """Time-based changes: ejections that end, drains that finish or run out, idle connections."""
        for key, endpoint in list(self.endpoints.items()):
            if outlier.release_due(endpoint.outlier, now):
                endpoint.target.since = now  # back from ejection: slow start
            if endpoint.state is EndpointState.DRAINING and (
                endpoint.target.in_flight == 0 or now >= endpoint.drain_until
            ):
                endpoint.pool.close()
                del self.endpoints[key]
                self.router.departed.append(endpoint)  # its last counts are still to be reported
                continue
            endpoint.pool.expire(now - 30.0)
        if self.queue:
            self.wake(now)


def open_connection(endpoint: Endpoint, exchange: Exchange, tries: int) -> None:
    """Open a connection to `endpoint` for the try numbered `tries` of `exchange`, in a task of its own, and tell
    the exchange how it went: the router's `connector`, which tests replace to run the router without sockets."""
    router = endpoint.service.router
    timeout = router.settings.connect_timeout_s

    async def opening() -> None:
        try:
            conn = await endpoint.pool.connect(timeout)
        except (OSError, TimeoutError) as exc:
            exchange.connect_failed(exc, tries, router.now())
        else:
            exchange.connected(conn, tries, router.now())

    spawn(opening(), name=f"connect:{endpoint.key}")
