"""The admin API's HTTP server: uvicorn's httptools protocol with the limits every server on a port needs, which
uvicorn leaves out: a deadline for each request to arrive whole (head and body), a cap on open connections, and a
cap on request bodies. Without them, 2 x 10,000 half-sent requests were never timed out and took every file
descriptor, and a 10 MB JSON body of 700,000 keys held the API for 22 s and took 1.2 GB.

Keep-alive connections without a request are closed by uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portero.spec.models import AdminSettings


class Limits:
    """Set once by `portero up` from `admin.*` (uvicorn builds the protocol itself, without arguments of ours)."""

    request_timeout_s = 10.0
    max_connections = 256
    max_body_bytes = 4 << 20


def configure(settings: AdminSettings) -> None:
    Limits.request_timeout_s = settings.request_timeout_s
    Limits.max_connections = settings.max_connections
    Limits.max_body_bytes = settings.max_body_bytes


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrival: asyncio.TimerHandle | None = None
        self.body_bytes = 0
        self.refused = False  # answered 408 or 413: nothing more is read or served on it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= Limits.max_connections:
            transport.abort()  # over the cap: gone at once, its descriptor with it
            return
        super().connection_made(transport)
        self._arm()  # the first request's head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:
            return  # refused in connection_made: uvicorn never knew it
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        if self.refused:
            return
        super().on_message_begin()
        self.body_bytes = 0
        self._arm()

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        length = next((value for name, value in self.headers if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > Limits.max_body_bytes:
            self._refuse(413, f"request body larger than {Limits.max_body_bytes} bytes")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.body_bytes += len(body)
        if self.body_bytes > Limits.max_body_bytes:
            self._refuse(413, f"request body larger than {Limits.max_body_bytes} bytes")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self.refused:
            super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self.arrival = self.loop.call_later(Limits.request_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self.arrival is not None:
            self.arrival.cancel()
            self.arrival = None

    def _too_slow(self) -> None:
        self.arrival = None
        if self.transport is not None and not self.transport.is_closing():
            self._refuse(408, f"request not received within {Limits.request_timeout_s:g} s")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer with `status` unless a response has begun (then just close), and read nothing more."""
        self.refused = True
        self._disarm()
        started = self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started
        if not started:
            body = json.dumps({"error": {"status": status, "message": detail, "problems": []}}).encode()
            reason = {408: b"Request Timeout", 413: b"Content Too Large"}[status]
            self.transport.write(
                b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
                % (status, reason, len(body), body)
            )
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app's `receive` says the client left
            self.cycle.message_event.set()
        self.transport.close()
