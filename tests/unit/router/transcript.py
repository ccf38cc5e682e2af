"""Drive the router's protocol objects without sockets, as h11's tests drive its connection: a fake transport on
each side records what the router writes (and its pauses and closes), a fake clock stands for the loop's, and the
router's `connector` seam hands out fake upstream connections when the test says so.

    h = Harness(endpoints=1)
    h.send(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    conn = h.open()                    # the connection the exchange asked for opens
    conn.answer(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    h.client_bytes()                   # what the client got; conn.received(): what the endpoint got
    h.phases(1)                        # the first request's phases: ["connecting", "sent", "responding", "done"]
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httptools

from portero.router.client import ClientConnection
from portero.router.exchange import PHASES, Exchange
from portero.router.server import Router
from portero.router.service import Endpoint
from portero.router.snapshot import EndpointEntry, RoutingSnapshot, ServiceEntry
from portero.router.upstream import Upstream
from portero.spec.models import Balance, RouterSettings

PEER = ("192.0.2.7", 50000)
LOCAL = ("127.0.0.1", 8000)


class FakeTransport(asyncio.Transport):
    """Records writes and the calls that change the connection's state, in order (`log`)."""

    def __init__(self, peer: tuple[str, int] = PEER, local: tuple[str, int] = LOCAL) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.log: list[str] = []
        self.closed = False
        self.reading = True
        self._extra = {"peername": peer, "sockname": local}

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        assert not self.closed, f"write after close: {bytes(data)!r}"
        self.out.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False
        self.log.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.log.append("resume")

    def close(self) -> None:
        self.closed = True
        self.log.append("close")

    def abort(self) -> None:
        self.closed = True
        self.log.append("abort")

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def bytes(self) -> bytes:
        return b"".join(self.out)


@dataclass
class Conn:
    """A connection from the router to an endpoint: the router's protocol object and the fake transport under it."""

    endpoint: str
    protocol: Upstream
    transport: FakeTransport = field(default_factory=FakeTransport)

    def received(self) -> bytes:
        return self.transport.bytes()

    def answer(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def hang_up(self) -> None:
        """The endpoint closed the connection (or it broke): what the loop tells the protocol."""
        self.transport.closed = True
        self.protocol.connection_lost(None)


@dataclass
class Connect:
    endpoint: Endpoint
    exchange: Exchange
    tries: int


class Harness:
    def __init__(self, endpoints: int = 1, *, tls: bool = False, **settings: Any) -> None:
        self.clock = 1000.0
        self.router = Router(RouterSettings(**settings))
        self.router.now = self.now
        self.router._id_prefix = b"r"  # request ids r-1, r-2, ... (the prefix is random otherwise)
        self.router.trace = []
        self.router.connector = self._connector
        self.connects: list[Connect] = []  # asked for, not opened yet
        self.conns: list[Conn] = []  # every upstream connection, in the order they opened
        self.route(*(f"127.0.0.1:{9001 + i}" for i in range(endpoints)))
        self.service = self.router.services["web"]
        self.client_transport = FakeTransport()
        self.client = ClientConnection(self.router, tls=tls)
        self.client.connection_made(self.client_transport)

    def now(self) -> float:
        return self.clock

    def route(self, *addresses: str) -> None:
        """A new routing snapshot: the service `web` has exactly these static endpoints (as the control plane
        sends one when a replica comes, goes or moves to another port)."""
        entries = tuple(EndpointEntry(address, 1, "static") for address in addresses)
        service = ServiceEntry("web", Balance(algorithm="round_robin"), "/health", entries)
        self.router.load(RoutingSnapshot(self.router.version + 1, self.router.settings, (service,)))

    # -- the client's side ---------------------------------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        """Bytes from the client, each chunk one read. A paused connection would not be read: they wait."""
        for chunk in chunks:
            self.client.data_received(chunk)

    def client_bytes(self) -> bytes:
        return self.client_transport.bytes()

    def client_gone(self) -> None:
        self.client_transport.closed = True
        self.client.connection_lost(ConnectionResetError())

    # -- the endpoints' side -------------------------------------------------------------------------------------

    def _connector(self, endpoint: Endpoint, exchange: Exchange, tries: int) -> None:
        self.connects.append(Connect(endpoint, exchange, tries))

    def _new_conn(self, endpoint: Endpoint) -> Conn:
        conn = Conn(endpoint.key, Upstream(endpoint.pool))
        conn.protocol.connection_made(conn.transport)
        endpoint.pool.opened += 1
        self.conns.append(conn)
        return conn

    def open(self) -> Conn:
        """The oldest connection asked for opens (as Pool.connect's task would end)."""
        pending = self.connects.pop(0)
        conn = self._new_conn(pending.endpoint)
        pending.endpoint.pool.busy.add(conn.protocol)
        pending.exchange.connected(conn.protocol, pending.tries, self.clock)
        return conn

    def refuse(self, exc: BaseException | None = None) -> None:
        pending = self.connects.pop(0)
        pending.exchange.connect_failed(exc or ConnectionRefusedError(), pending.tries, self.clock)

    def pooled(self, endpoint: int = 0) -> Conn:
        """An idle keep-alive connection in the endpoint's pool, one that has served a response before."""
        target = list(self.service.endpoints.values())[endpoint]
        conn = self._new_conn(target)
        target.pool.give_back(conn.protocol, self.clock)
        return conn

    # -- time ----------------------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Time passes; the router's sweep runs (as Router._sweep does every SWEEP_S)."""
        self.clock += seconds
        if not self.client.closed:
            self.client.check(self.clock)
        self.service.sweep(self.clock)

    # -- what happened -------------------------------------------------------------------------------------------

    def phases(self, number: int) -> list[str]:
        """The phases the request numbered `number` (1: the first the router made an id for) went through."""
        request_id = b"r-%x" % number
        return [PHASES[phase] for rid, phase in self.trace() if rid == request_id]

    def trace(self) -> list[tuple[bytes, int]]:
        trace = self.router.trace
        assert trace is not None
        return trace

    def requests_seen(self, conn: Conn) -> list[bytes]:
        """The requests an endpoint got on `conn`, each as its method and target plus its body (framing undone)."""
        return parse_requests(conn.received())


def parse_requests(data: bytes) -> list[bytes]:
    seen: list[bytes] = []

    class Collect:
        def __init__(self) -> None:
            self.body = b""
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            seen.append(parser.get_method() + b" " + self.url + b" " + self.body)
            self.url = self.body = b""

    parser = httptools.HttpRequestParser(Collect())
    parser.feed_data(data)
    return seen
