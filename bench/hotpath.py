"""The router's own per-request work, without sockets: its protocols driven with fake transports in one process.

A request goes in through `ClientConnection.data_received`, out to a pooled `Upstream` (whose transport keeps
what was written), and nginx's five-header response comes back through `Upstream.data_received`. What is timed
is the router's Python plus llhttp's parsing; not the event loop, not system calls. On a shared machine this is
steadier than wrk: each figure is the fastest of many short batches.

    .venv/bin/python bench/hotpath.py [--browser] [--profile] [--show]
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/hotpath.py   # another tree, e.g. `git archive <commit> src`
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

from portero.router.client import ClientConnection
from portero.router.server import Router
from portero.router.upstream import Upstream
from portero.spec.models import RouterSettings, ServiceSpec

PLAIN = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18000\r\n\r\n"
BROWSER_HEADERS = [  # browser.lua's
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"),
    ("Accept-Language", "es-ES,es;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("Accept-Encoding", "gzip, deflate, br"),
    (
        "Cookie",
        "session=3f2a9c1e7b4d4e0f8a6b5c2d1e0f9a8b; csrftoken=Xq7pL2mN9vB4kR8sT1wY6zA3cD5fG0hJ; theme=dark; lang=es",
    ),
    ("Referer", "http://127.0.0.1/portal/index.html"),
    ("Connection", "keep-alive"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Cache-Control", "max-age=0"),
]
BROWSER = PLAIN[:-2] + "".join(f"{k}: {v}\r\n" for k, v in BROWSER_HEADERS).encode() + b"\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"
)


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--browser", action="store_true", help="browser.lua's request headers")
    parser.add_argument("--profile", action="store_true", help="cProfile 2,000 requests instead of timing")
    parser.add_argument("--show", action="store_true", help="print what went upstream and back to the client")
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    settings = RouterSettings.model_validate({"health": {"interval_s": 60}})
    router = Router(settings)
    router.now = time.monotonic
    spec = ServiceSpec.model_validate({"endpoints": [{"address": "127.0.0.1:18081"}], "balance": {"slow_start_s": 0}})
    router.apply(settings, {"bench": spec})
    endpoint = next(iter(router.services["bench"].endpoints.values()))
    upstream, upstream_transport = Upstream(endpoint.pool), FakeTransport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    endpoint.pool.opened += 1
    endpoint.pool.give_back(upstream, 0.0)
    client, client_transport = ClientConnection(router), FakeTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    request = BROWSER if args.browser else PLAIN

    def one() -> None:
        client.data_received(request)
        upstream.data_received(RESPONSE)

    for _ in range(2000):
        one()
    assert client_transport.out[-1].endswith(b"hello world\n"), client_transport.out[-1]
    if args.show:
        print(upstream_transport.out[-1].decode(), client_transport.out[-1].decode(), sep="\n")
    batch = 2000
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [one() for _ in range(batch)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    best = float("inf")
    for _ in range(args.batches):
        client_transport.out.clear()
        upstream_transport.out.clear()
        started = time.perf_counter()
        for _ in range(batch):
            one()
        best = min(best, (time.perf_counter() - started) / batch)
    kind = "browser-like" if args.browser else "plain"
    print(f"{kind}: {best * 1e6:.2f} µs per request (the router's Python and llhttp; no event loop, no syscalls)")


if __name__ == "__main__":
    main()
