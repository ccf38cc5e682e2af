"""A recording HTTP/1.1 backend for the router's tests.

It parses what it receives with its own strict parser (not llhttp, so the router's parsing gets a second
opinion), records every byte and every request, and answers as the test tells it to (`handler`). A message
it cannot parse is recorded in `errors` and answered with 400: a conformance test then fails on it.

Runnable as a script, for tests that kill a backend with SIGKILL: `python backend.py NAME [PORT]` prints its port
and serves until killed; every answer's body is `NAME`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import struct
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")
HEALTH_PATH = "/__health"  # the path the router's active checks probe; such requests are kept apart
MAX_LINE = 64 * 1024
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/(1\.[01])$")
HEX = re.compile(rb"^[0-9A-Fa-f]{1,15}$")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Malformed(Exception):
    pass


@dataclass
class Request:
    conn: int  # the backend's number of the connection it came on, from 1
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""  # kept only while the backend keeps bodies
    body_size: int = 0

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: the backend's name
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0  # before answering
    chunks: list[bytes] | None = None  # a chunked response of these chunks
    stream_bytes: int = 0  # a Content-Length body of this many bytes, written with back-pressure
    until_close: bool = False  # no framing: the body ends when the backend closes the connection
    close: bool = False  # close the connection after answering
    reset: bool = False  # abort the connection without an answer
    raw: bytes | None = None  # these bytes are the whole response
    websocket: bool = False  # accept a WebSocket upgrade, then echo frames


Handler = Callable[[Request], Reply]


class LoopThread:
    """A uvloop event loop in a daemon thread; tests (in the main thread) hand it work and wait for it."""

    def __init__(self, name: str) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30) -> T:
        """Run a plain function on the loop's thread (the router is not thread-safe) and return its result."""
        if threading.current_thread() is self.thread:  # called from a function already on it
            return fn(*args)
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class RecordingBackend:
    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.handler: Handler = lambda request: Reply()
        self.keep_bodies = True  # False: count body bytes only (uploads of 100 MB)
        self.record_raw = True
        self.raw: dict[int, bytearray] = {}  # every byte received, by connection
        self.heads: list[Request] = []  # every request whose head arrived (body perhaps not)
        self.requests: list[Request] = []  # every request received whole
        self.probes = 0  # the router's active health checks (kept out of `heads` and `requests`)
        self.probe_connections: set[int] = set()
        self.errors: list[str] = []  # what the backend could not parse
        self.connections = 0
        self.open_connections = 0
        self.streamed = 0  # bytes of `stream_bytes` bodies written (and drained into the socket)
        self.answering = 0  # requests being answered now, and the most at once
        self.most_answering = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def received(self) -> bytes:
        """All bytes received on connections that were not health checks."""
        skip = self.probe_connections
        return b"".join(bytes(data) for conn, data in sorted(self.raw.items()) if conn not in skip)

    # -- lifecycle (on the backend's loop) -----------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and reset every connection, as a crashed server would."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    # -- one connection ------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        conn = Connection(self, self.connections, reader, writer)
        try:
            while True:
                request = await conn.read_request()
                if request is None:
                    break
                if request.target == HEALTH_PATH:
                    self.probes += 1
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                self.requests.append(request)
                self.answering += 1
                self.most_answering = max(self.most_answering, self.answering)
                try:
                    if not await self._answer(request, self.handler(request), conn, writer):
                        break
                finally:
                    self.answering -= 1
        except Malformed as exc:
            self.errors.append(f"connection {conn.number}: {exc}")
            with contextlib.suppress(ConnectionError):
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the test is over: end quietly (asyncio's streams log a cancelled handler as an error)
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, request: Request, reply: Reply, conn: Connection, writer: asyncio.StreamWriter) -> bool:
        """Send `reply`; False when the connection is to end."""
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.reset:
            writer.transport.abort()
            return False
        if reply.raw is not None:
            writer.write(reply.raw)
            await writer.drain()
            return not reply.close
        if reply.websocket:
            await self._websocket(request, conn, writer)
            return False
        body = self.name.encode() if reply.body is None else reply.body
        bodiless = request.method == "HEAD" or reply.status in (204, 304)
        head = [f"HTTP/1.1 {reply.status} Whatever", *(f"{k}: {v}" for k, v in reply.headers)]
        if reply.chunks is not None:
            head.append("transfer-encoding: chunked")
        elif reply.stream_bytes:
            head.append(f"content-length: {reply.stream_bytes}")
        elif not reply.until_close and reply.status not in (204, 304):
            head.append(f"content-length: {len(body)}")
        if reply.close or reply.until_close:
            head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if bodiless:
            pass
        elif reply.chunks is not None:
            for piece in reply.chunks:
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif reply.stream_bytes:
            await self._stream(writer, reply.stream_bytes)
        else:
            writer.write(body)
        await writer.drain()
        return not (reply.close or reply.until_close)

    async def _stream(self, writer: asyncio.StreamWriter, total: int) -> None:
        """`total` bytes of `pattern`, written in 64 KiB pieces, each once the last one drained (back-pressure)."""
        piece = pattern(64 * 1024)
        left = total
        while left:
            part = piece[: min(left, len(piece))]
            writer.write(part)
            left -= len(part)
            await writer.drain()
            self.streamed += len(part)

    async def _websocket(self, request: Request, conn: Connection, writer: asyncio.StreamWriter) -> None:
        key = (request.header("sec-websocket-key") or "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        while True:
            opcode, payload = await read_frame(conn.read_exactly)
            if opcode == 0x8:  # close: answer it and end
                writer.write(encode_frame(0x8, payload, mask=False))
                await writer.drain()
                return
            writer.write(encode_frame(opcode, payload, mask=False))
            await writer.drain()


class Connection:
    """A strict HTTP/1.1 request reader over one backend connection (RFC 9112, no leniency)."""

    def __init__(
        self, backend: RecordingBackend, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.backend = backend
        self.number = number
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    async def _more(self) -> bool:
        data = await self.reader.read(256 * 1024)
        if not data:
            return False
        if self.backend.record_raw:
            self.backend.raw.setdefault(self.number, bytearray()).extend(data)
        self.buf += data
        return True

    async def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                if end == 0 or self.buf[end - 1] != 0x0D:
                    raise Malformed(f"bare LF in {bytes(self.buf[: end + 1])!r}")
                line = bytes(self.buf[: end - 1])
                del self.buf[: end + 1]
                if b"\r" in line:
                    raise Malformed(f"bare CR in {line!r}")
                return line
            if len(self.buf) > MAX_LINE:
                raise Malformed("line longer than 64 KiB")
            if not await self._more():
                raise asyncio.IncompleteReadError(bytes(self.buf), None)

    async def read_request(self) -> Request | None:
        if not self.buf and not await self._more():
            return None
        match = REQUEST_LINE.match(await self._line())
        if match is None:
            raise Malformed("bad request line")
        method, target, version = (part.decode() for part in match.groups())
        headers: list[tuple[str, str]] = []
        while line := await self._line():
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN.match(name):
                raise Malformed(f"bad header line {line!r}")
            value = value.strip(b" \t")
            if any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in value):
                raise Malformed(f"control byte in header value {value!r}")
            headers.append((name.decode(), value.decode("latin-1")))
        request = Request(self.number, method, target, version, headers)
        if version == "1.1" and len(request.all("host")) != 1:
            raise Malformed(f"an HTTP/1.1 request with {len(request.all('host'))} Host headers")
        if target == HEALTH_PATH:
            self.backend.probe_connections.add(self.number)
        else:
            self.backend.heads.append(request)
        if (request.header("expect") or "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as servers do before reading the body
        await self._body(request)
        return request

    async def _body(self, request: Request) -> None:
        lengths = request.all("content-length")
        codings = request.all("transfer-encoding")
        if lengths and codings:
            raise Malformed("Content-Length and Transfer-Encoding")
        if codings:
            if codings != ["chunked"]:
                raise Malformed(f"Transfer-Encoding {codings!r}")
            await self._chunked(request)
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                raise Malformed(f"Content-Length {lengths!r}")
            await self._exactly(request, int(lengths[0]))

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not await self._more():
                raise asyncio.IncompleteReadError(bytes(self.buf), size)
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    async def _exactly(self, request: Request, size: int) -> None:
        while size:
            if not self.buf and not await self._more():
                raise asyncio.IncompleteReadError(b"", size)
            piece = self.buf[:size]
            del self.buf[: len(piece)]
            size -= len(piece)
            request.body_size += len(piece)
            if self.backend.keep_bodies:
                request.body += piece

    async def _chunked(self, request: Request) -> None:
        while True:
            size_line = (await self._line()).split(b";", 1)[0]
            if not HEX.match(size_line):
                raise Malformed(f"chunk size {size_line!r}")
            size = int(size_line, 16)
            if size == 0:
                while await self._line():  # trailers
                    pass
                return
            await self._exactly(request, size)
            if await self._line():
                raise Malformed("chunk data longer than its size")


def pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


# -- WebSocket frames (RFC 6455 §5.2), just enough for an echo -----------------------------------------------------


def encode_frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    head = bytearray([0x80 | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head.append(bit | size)
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return bytes(head) + payload
    key = b"\x37\xfa\x21\x3d"
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(read_exactly: Callable[[int], Awaitable[bytes]]) -> tuple[int, bytes]:
    first, second = await read_exactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await read_exactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await read_exactly(8))
    key = await read_exactly(4) if second & 0x80 else b""
    payload = await read_exactly(size)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


async def _main(name: str, port: int) -> None:
    backend = RecordingBackend(name)
    backend.record_raw = False
    await backend.start(port)
    print(backend.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_main(sys.argv[1] if len(sys.argv) > 1 else "backend", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
