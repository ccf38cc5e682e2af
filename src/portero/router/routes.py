"""Which service a request goes to: by Host (exact, `*.domain`, or `*`) and the longest path prefix."""

from __future__ import annotations

from dataclasses import dataclass

from portero.router.wire import CLOSE_BRACKET


@dataclass(frozen=True)
class CompiledRoute:
    host: bytes  # b"*", b"example.com" or b".example.com" (for *.example.com)
    prefix: bytes
    service: str


def compile_routes(routes: list[tuple[str, str, str]]) -> list[CompiledRoute]:
    """Most specific first: exact host before wildcard before any, then longer prefixes."""
    compiled = [
        CompiledRoute(host.lower().removeprefix("*").encode() if host != "*" else b"*", prefix.encode(), service)
        for host, prefix, service in routes
    ]
    rank = {True: 0, False: 1}
    return sorted(compiled, key=lambda r: (2 if r.host == b"*" else rank[not r.host.startswith(b".")], -len(r.prefix)))


def match(routes: list[CompiledRoute], host: bytes, path: bytes) -> str | None:
    name = host.rsplit(b":", 1)[0].lower() if CLOSE_BRACKET not in host else host.lower()
    for route in routes:
        host_matches = route.host in (b"*", name) or (route.host[:1] == b"." and name.endswith(route.host))
        if host_matches and path.startswith(route.prefix):
            return route.service
    return None
