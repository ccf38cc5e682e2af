"""The router: listener, services and routes, the sweep that enforces deadlines, and the registry of
endpoints (replicas from the supervisor, static ones from the spec, registered ones from the API)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import random
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from portero.router.balancer import make_balancer
from portero.router.breaker import BreakerPolicy
from portero.router.budget import RetryBudget, RetryPolicy
from portero.router.burst import BurstWriter
from portero.router.client import ClientConnection
from portero.router.outlier import OutlierPolicy
from portero.router.probe import probe
from portero.router.routes import CompiledRoute, compile_routes, find, match
from portero.router.service import Endpoint, EndpointState, ServiceRoute, open_connection
from portero.router.snapshot import RoutingSnapshot, ServiceEntry, from_spec
from portero.spec.models import RouterSettings, ServiceSpec
from portero.tasks import settle, spawn
from portero.tls import contexts

if TYPE_CHECKING:
    from portero.router.exchange import Exchange

log = logging.getLogger(__name__)
SWEEP_S: Final = 0.25  # resolution of every router deadline
ACCEPT_BURST: Final = 256  # connections accepted per wake-up of the listener (HAProxy's tune.maxaccept: 4)
ACCEPT_PAUSE_S: Final = 0.1


class RouterError(ValueError):
    """A registry request that cannot be done; the message names the field and value."""


class Router:
    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.services: dict[str, ServiceRoute] = {}
        self.routes: list[CompiledRoute] = []
        self.default_service: str | None = None
        self.connections: set[ClientConnection] = set()
        self.active = 0
        self._trusted_cache: dict[bytes, bool] = {}
        self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min)
        self._configure(settings)
        self._ids = 0  # the last request id's number
        self._id_prefix = os.urandom(4).hex().encode()
        self._listeners: list[socket.socket] = []
        self.closing = False  # stopping: no new connections, each connection closes after its current response
        self.version = -1  # of the snapshot loaded last
        self.departed: list[Endpoint] = []  # endpoints removed since `take_departed` was last called
        self._tasks: list[asyncio.Task[None]] = []
        self._demand_hooks: list[Callable[[str], None]] = []
        self._event_hooks: list[Callable[[str, str, str, str], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.held: list[BurstWriter] = []  # connections whose writes wait for `_flush` (see `defer`)
        self._flush_scheduled = False
        self._flush_now = self._flush  # bound once: `self._flush` from compiled code makes a new method object
        self.stopped = False
        self.now: Callable[[], float] = lambda: 0.0
        # Seams for driving the router without sockets (tests/unit/router/transcript.py): how a connection to an
        # endpoint is opened, and a list that, when set, gets every exchange's phase as it changes.
        self.connector: Callable[[Endpoint, Exchange, int], None] = open_connection
        self.trace: list[tuple[bytes, int]] | None = None
        self.tls = contexts.ContextBook()  # the certificates new HTTPS connections are served (tls/contexts.py)
        self._tls_listeners: list[socket.socket] = []
        self.handshakes: dict[str, int] = {}  # "TLSv1.3", ...: completed; "failed:<reason>": not (report.py)
        self.challenges: dict[bytes, bytes] = {}  # ACME HTTP-01 paths pending, and their answers
        self.https_routes = False  # a route redirects plain HTTP or sends HSTS: requests look their route up
        self.https_port = 443  # where the HTTPS listener is, for redirects (`router.tls.public_port` wins)

    def _configure(self, settings: RouterSettings) -> None:
        self.settings = settings
        # What every request reads, as the router's own attributes: a field of the pydantic model is a Python
        # attribute lookup (and an unboxing) from compiled code, several per request. `settings` stays the source.
        self.header_timeout_s = float(settings.header_timeout_s)
        self.idle_timeout_s = float(settings.idle_timeout_s)
        self.body_grace_s = float(settings.body_grace_s)
        self.connect_timeout_s = float(settings.connect_timeout_s)
        self.response_timeout_s = float(settings.response_timeout_s)
        self.max_body_bytes = int(settings.max_body_bytes)
        self.max_response_head_bytes = int(settings.max_response_head_bytes)
        if (self.budget.ratio, self.budget.min_retries) != (settings.retry_budget_ratio, settings.retry_budget_min):
            # Only a new budget is a new count: every snapshot (each endpoint that comes or goes) emptied it, and a
            # replica killed with more than `retry_budget_min` requests in flight failed the rest with 502.
            self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min)
        self.retry_policy = RetryPolicy(
            attempts=settings.retry_attempts,
            on_timeout=settings.retry_on_timeout,
            on_status=frozenset(settings.retry_on_status),
        )
        o, b = settings.outlier, settings.breaker
        self.outlier_policy = OutlierPolicy(
            o.consecutive_failures, o.base_ejection_s, o.max_ejection_s, o.max_ejection_percent
        )
        self.breaker_policy = BreakerPolicy(b.failure_ratio, b.min_requests, b.window_s, b.open_s, b.half_open_probes)
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        self._trusted_cache = {}  # what `is_trusted` found under the proxies trusted until now

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(
        self, sockets: list[socket.socket] | None = None, secure: list[socket.socket] | None = None
    ) -> None:
        """Serve on `sockets` (a worker's, inherited from the router's parent process), or on a socket of its own
        bound to `router.host:router.port` (a router alone: tests, benchmarks); HTTPS on `secure` (a worker's), or
        on a socket of its own at `router.tls` when that is set and `sockets` is not given."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.now = loop.time
        settings = self.settings
        if sockets is None:
            try:
                sockets = [listen(settings.host, settings.port)]
            except OSError as exc:
                raise RouterError(
                    f"cannot listen on {settings.host}:{settings.port} for the router: {exc.strerror} "
                    "(set router.port in the spec)"
                ) from exc
            if secure is None and settings.tls is not None:
                try:
                    secure = [listen(settings.tls.host or settings.host, settings.tls.port)]
                except OSError as exc:
                    sockets[0].close()
                    raise RouterError(
                        f"cannot listen on {settings.tls.host or settings.host}:{settings.tls.port} for HTTPS: "
                        f"{exc.strerror} (set router.tls.port in the spec)"
                    ) from exc
        self._tls_listeners = list(secure or ())
        if self._tls_listeners:
            self.https_port = int(self._tls_listeners[0].getsockname()[1])
        self._listeners = [*sockets, *self._tls_listeners]
        for listener in self._listeners:
            listener.setblocking(False)
            loop.add_reader(listener.fileno(), self._accepting(listener))
        self._tasks = [
            spawn(self._sweep(), name="router-sweep", eternal=True),
            spawn(self._check_endpoints(), name="router-health", eternal=True),
        ]
        names = ", ".join("{}:{}".format(*listener.getsockname()[:2]) for listener in sockets)
        log.info("router listening on %s", names)

    def _accepting(self, listener: socket.socket) -> Callable[[], None]:
        """What the loop calls when `listener` has connections to accept."""
        return functools.partial(self._accept, listener, secure=listener in self._tls_listeners)

    def _accept(self, listener: socket.socket, *, secure: bool) -> None:
        """Accept up to ACCEPT_BURST connections per wake-up. The loop's own server accepts one per loop
        iteration (libuv >= 1.45), and an iteration of a busy router serves hundreds of connections, so 1,000
        new clients waited seconds in the accept queue (wrk counted up to 168 requests over 5 s)."""
        loop = self._loop
        if loop is None or self.closing:
            return
        for _ in range(ACCEPT_BURST):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: stop accepting for a moment (as HAProxy does) rather than
                    # spin on a listener that stays readable; the kernel's queue holds the clients meanwhile.
                    log.error("router cannot accept connections: %s; retrying in %.1f s", exc, ACCEPT_PAUSE_S)
                    _stop_reading(loop, listener.fileno())
                    loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting, listener)
                    return
                continue  # the client left before we accepted it (ECONNABORTED...)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                spawn(self._adopt_tls(loop, sock), name="router-accept-tls")
            else:
                spawn(self._adopt(loop, sock), name="router-accept")

    async def _adopt(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(lambda: ClientConnection(self), sock)
        except OSError:
            sock.close()

    async def _adopt_tls(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """The handshake is the transport's (uvloop's, with OpenSSL); the connection is counted once it ends, by
        its TLS version or by why it failed. Each connection keeps the context it started with."""
        context = self.tls.front
        if context is None:  # no certificate loaded (yet): nothing to offer
            self._count("failed:no_certificate")
            sock.close()
            return
        settings = self.settings.tls
        timeout = settings.handshake_timeout_s if settings is not None else 10.0
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: ClientConnection(self, tls=True), sock, ssl=context, ssl_handshake_timeout=timeout
            )
        except ssl.SSLError:
            self._count("failed:protocol")  # not TLS, no common version or cipher, a bad record
            sock.close()
            return
        except ConnectionAbortedError:
            self._count("failed:timeout")  # uvloop aborts a handshake that outlives its timeout so
            sock.close()
            return
        except OSError:
            self._count("failed:closed")  # the client went away in the middle
            sock.close()
            return
        secured = transport.get_extra_info("ssl_object")
        self._count(str(secured.version()) if secured is not None else "unknown")

    def _count(self, outcome: str) -> None:
        self.handshakes[outcome] = self.handshakes.get(outcome, 0) + 1

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._loop is not None and not self.closing and listener in self._listeners:
            self._loop.add_reader(listener.fileno(), self._accepting(listener))

    def stop_accepting(self) -> None:
        """No new connection from now on. The listening sockets are closed here, in this process: where a parent
        process holds them too (the router's workers), the kernel keeps queueing connections for the others."""
        self.closing = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            if self._loop is not None:
                _stop_reading(self._loop, listener.fileno())
            listener.close()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; requests in flight may finish within `grace_s`, each connection closing after its
        current response and idle ones at once; then every connection is closed."""
        self.stop_accepting()
        deadline = self.now() + grace_s
        while (self.active or self.connections) and self.now() < deadline:
            for conn in list(self.connections):
                conn.close_when_idle(self.now())
            await asyncio.sleep(0.05)
        self.stopped = True
        for conn in list(self.connections):
            conn.close()
        for task in self._tasks:
            settle(task)
            task.cancel()
        for service in self.services.values():
            for endpoint in service.endpoints.values():
                endpoint.pool.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self._listeners
        host, port = self._listeners[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int]:
        assert self._tls_listeners
        host, port = self._tls_listeners[0].getsockname()[:2]
        return str(host), int(port)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self.now()
            for conn in list(self.connections):
                conn.check(now)
            for service in self.services.values():
                service.sweep(now)

    # -- the routing state ---------------------------------------------------------------------------------------

    def apply(self, settings: RouterSettings, services: dict[str, ServiceSpec]) -> None:
        """Route a spec's services to their static endpoints (a router alone: tests, benchmarks)."""
        self.load(from_spec(settings, services, self.version + 1))

    def load(self, snapshot: RoutingSnapshot) -> None:
        """Route exactly what `snapshot` says from now on (see snapshot.py): endpoints it lacks drain, new ones join
        with slow start, changed weights take effect on the next pick."""
        settings = snapshot.settings
        self._configure(settings)
        now = self.now()
        for entry in snapshot.services:
            self._load_endpoints(self._route_for(entry), entry, now)
        names = {entry.name for entry in snapshot.services}
        for gone in set(self.services) - names:
            for endpoint in self.services[gone].endpoints.values():
                if endpoint.state is not EndpointState.DRAINING:
                    endpoint.drain(now + settings.drain_timeout_s)
        self.routes = compile_routes(settings.routes)
        self.https_routes = any(r.redirect or r.hsts for r in self.routes)
        self.default_service = snapshot.services[0].name if snapshot.services else None
        self._load_tls(snapshot)
        self.version = snapshot.version

    def _load_endpoints(self, route: ServiceRoute, entry: ServiceEntry, now: float) -> None:
        """The service's endpoints become the entry's: those it lacks drain, new ones join, weights change."""
        drain_s = self.settings.drain_timeout_s
        wanted = {e.address: e for e in entry.endpoints}
        for key, endpoint in route.endpoints.items():
            if key not in wanted and endpoint.state is not EndpointState.DRAINING:
                endpoint.drain(now + drain_s)
        reweighted = False
        for address, e in wanted.items():
            current = route.endpoints.get(address)
            if e.draining:
                if current is not None and current.state is not EndpointState.DRAINING:
                    current.drain(now + (e.drain_s or drain_s))
            elif current is None or current.state is EndpointState.DRAINING:
                host, port = split_address(address)
                route.add(Endpoint(route, host, port, e.weight, e.source, now, e.replica), now)
            elif current.target.weight != e.weight:
                current.target.weight = e.weight
                reweighted = True
        if reweighted:
            route.restart_balancing(now)

    def _load_tls(self, snapshot: RoutingSnapshot) -> None:
        self.challenges = {
            b"/.well-known/acme-challenge/" + token.encode(): answer.encode() for token, answer in snapshot.challenges
        }
        book = contexts.build(snapshot.settings.tls, snapshot.certificates, self.tls)
        for error in book.errors:
            if error not in self.tls.errors:
                log.warning("%s; its names keep the certificate they had", error)
                for hook in self._event_hooks:
                    hook("tls.load_failed", "", "", error)
        self.tls = book

    def _route_for(self, entry: ServiceEntry) -> ServiceRoute:
        balance = entry.balance
        route = self.services.get(entry.name)
        if route is None or route.balancer_name != balance.algorithm:
            balancer = make_balancer(balance.algorithm, random.random, balance.slow_start_s)
            fresh = ServiceRoute(self, entry.name, balancer, balance.slow_start_s)
            if route is not None:
                fresh.endpoints = route.endpoints
            route = self.services[entry.name] = fresh
            route.balancer_name = balance.algorithm
        route.slow_start_s = balance.slow_start_s
        route.max_in_flight = balance.max_in_flight
        route.hash_header = balance.hash_header.lower().encode() if balance.hash_header else None
        route.hash_cookie = balance.hash_cookie
        route.replica_weight = balance.weight
        route.health_path = entry.health_path
        route.outlier_policy = self.outlier_policy
        return route

    # -- the request path's helpers -------------------------------------------------------------------------------

    def route(self, host: bytes, path: bytes) -> ServiceRoute | None:
        name = match(self.routes, host, path) if self.routes else self.default_service
        return self.services.get(name) if name is not None else None

    def https_policy(self, host: bytes, path: bytes) -> CompiledRoute | None:
        """The route of a request, for its redirect to HTTPS and its HSTS header (only when a route has them)."""
        return find(self.routes, host, path)

    def is_trusted(self, peer: bytes) -> bool:
        if not self._trusted:
            return False
        known = self._trusted_cache.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer.decode())
            except ValueError:
                known = False
            else:
                known = any(address in network for network in self._trusted)
            if len(self._trusted_cache) > 10_000:
                self._trusted_cache.clear()
            self._trusted_cache[peer] = known
        return known

    def defer(self) -> bool:
        """Have `_flush` run once the event loop has handled every connection that is readable now; False when
        there is no running loop (writes then go out at once). A connection that says yes holds its writes until
        then. Why: a write to a sleeping peer wakes it (an inter-processor interrupt, costly in a VM: 11 % of the
        router's time); writes made in one burst at the end of the loop's pass find the peer awake after the first.
        HAProxy gets the same effect from its run queue, which processes every readable stream before sending."""
        if not self._flush_scheduled:
            if self._loop is None:
                return False
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_now)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        held, self.held = self.held, []
        for conn in held:
            try:
                conn.flush()
            except Exception:  # the rest must still go out: a write held past this pass would never be sent
                log.exception("router: a held write failed; the other connections' writes go on")

    def next_request_id(self) -> bytes:
        self._ids += 1  # a native int: `next()` on an itertools.count is a builtin lookup and a call from compiled code
        return b"%b-%x" % (self._id_prefix, self._ids)

    def demand(self, service: ServiceRoute) -> None:
        """A request is waiting for an endpoint (scale from zero listens here)."""
        for hook in self._demand_hooks:
            hook(service.name)

    def on_demand(self, hook: Callable[[str], None]) -> None:
        self._demand_hooks.append(hook)

    def tell(self, kind: str, endpoint: Endpoint, message: str) -> None:
        """Something happened to an endpoint that the operator should see (an ejection, a refusal): logged here,
        and handed to whoever listens (`on_event`: the control plane records it as an event)."""
        service = endpoint.service.name
        log.warning("%s of %s: %s", endpoint.key, service, message, extra={"endpoint": endpoint.key})
        for hook in self._event_hooks:
            hook(kind, service, endpoint.key, message)

    def on_event(self, hook: Callable[[str, str, str, str], None]) -> None:
        """`hook(kind, service, address, message)` for every `tell`."""
        self._event_hooks.append(hook)

    # -- lookups --------------------------------------------------------------------------------------------------

    def take_departed(self) -> list[Endpoint]:
        departed, self.departed = self.departed, []
        return departed

    def endpoint(self, service: str, address: str) -> Endpoint:
        route = self._service(service)
        endpoint = route.endpoints.get(address)
        if endpoint is None:
            raise LookupError(f"service {service!r} has no endpoint {address!r}")
        return endpoint

    def _service(self, name: str) -> ServiceRoute:
        route = self.services.get(name)
        if route is None:
            raise LookupError(f"no service named {name!r} is routed")
        return route

    # -- active checks of endpoints portero does not run ----------------------------------------------------------

    async def _check_endpoints(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self.now()
            checks = self.settings.health
            for route in self.services.values():
                for endpoint in route.endpoints.values():
                    checked = endpoint.health is not None or endpoint.probing
                    if checked and now - endpoint.last_check >= checks.interval_s:
                        endpoint.last_check = now
                        spawn(self._check(route, endpoint), name=f"check:{endpoint.key}")

    async def _check(self, route: ServiceRoute, endpoint: Endpoint) -> None:
        host, port = split_address(endpoint.key)
        ok = await probe(host, port, route.health_path, self.settings.health.timeout_s)
        now = self.now()
        if endpoint.health is None:  # a replica that refused a connection: one answer brings it back
            if ok and endpoint.probing:
                endpoint.up(now)
                log.info("endpoint %s of %s answers again", endpoint.key, route.name)
            return
        if endpoint.health.observe(ok=ok):
            if endpoint.health.healthy:
                endpoint.up(now)
                log.info("endpoint %s of %s is up", endpoint.key, route.name)
            else:
                if endpoint.state is EndpointState.ACTIVE:
                    endpoint.state = EndpointState.DOWN
                log.warning("endpoint %s of %s is down", endpoint.key, route.name)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise RouterError(f"address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket for `host` (a name is resolved to its first address)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _stop_reading(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    # Typeshed says bool, uvloop returns None: called through `object` so the compiled router does not check it.
    remove: Callable[[int], object] = loop.remove_reader
    remove(fd)
