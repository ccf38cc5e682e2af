"""Which service a request goes to: by Host (exact, `*.domain`, or `*`) and the longest path prefix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portero.router.wire import CLOSE_BRACKET
from portero.spec.models import Route


@dataclass(frozen=True)
class CompiledRoute:
    host: bytes  # b"*", b"example.com" or b".example.com" (for *.example.com)
    prefix: bytes
    service: str
    redirect: bool = False  # plain HTTP gets 308 to HTTPS
    hsts: bytes = b""  # the Strict-Transport-Security header line of its HTTPS answers, or nothing


def compile_routes(routes: Iterable[Route]) -> list[CompiledRoute]:
    """Most specific first: exact host before wildcard before any, then longer prefixes."""
    compiled = [
        CompiledRoute(
            r.host.lower().removeprefix("*").encode() if r.host != "*" else b"*",
            r.prefix.encode(),
            r.service,
            r.redirect_https,
            b"strict-transport-security: %b\r\n" % r.hsts.header.encode() if r.hsts is not None else b"",
        )
        for r in routes
    ]
    rank = {True: 0, False: 1}
    return sorted(compiled, key=lambda r: (2 if r.host == b"*" else rank[not r.host.startswith(b".")], -len(r.prefix)))


def find(routes: list[CompiledRoute], host: bytes, path: bytes) -> CompiledRoute | None:
    name = host.rsplit(b":", 1)[0].lower() if CLOSE_BRACKET not in host else host.lower()
    for route in routes:
        host_matches = route.host in (b"*", name) or (route.host[:1] == b"." and name.endswith(route.host))
        if host_matches and path.startswith(route.prefix):
            return route
    return None


def match(routes: list[CompiledRoute], host: bytes, path: bytes) -> str | None:
    found = find(routes, host, path)
    return found.service if found is not None else None
