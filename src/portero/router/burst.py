"""Writes held for the router's burst at the end of each pass of the event loop (`Router.defer` says why): the
base of both sides' protocols, the connection from a client and the connection to an endpoint."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from portero.router.server import Router

HELD_MAX: Final = 64 * 1024  # bytes held before a connection writes at once: a large body is bounded by back-pressure


class BurstWriter(asyncio.Protocol):
    __slots__ = ("held", "held_bytes", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] | None = None  # writes waiting for the router's flush
        self.held_bytes = 0

    def writable(self) -> bool:
        """False once the connection is closed: what is written then is dropped."""
        return True

    def hold(self, router: Router) -> None:
        """Collect writes until the router's flush at the end of this pass of the event loop: the pieces of one
        read (a response's head and body) go out in one write, and every connection's writes in one burst."""
        if self.held is None and router.defer():
            self.held = []
            router.held.append(self)

    def write(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > HELD_MAX:
                self.flush()  # a large body streams on at once
        elif self.transport is not None and self.writable():
            self.transport.write(data)

    def flush(self) -> None:
        held, self.held = self.held, None
        self.held_bytes = 0
        if held and self.transport is not None and self.writable():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))
