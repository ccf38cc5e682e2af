"""A raw HTTP/1.1 client over blocking sockets: the tests write requests byte for byte and read responses
strictly (Content-Length, chunked, or to the close), so they see exactly what the router sends."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

# Past the router's own 10-s timeouts (queue, request head, idle): a request the router holds that long gets its
# answer (503, 408) or its close here, which names the timeout, instead of a bare TimeoutError (CI saw one, once).
TIMEOUT_S = 15.0


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class ProtocolError(AssertionError):
    """The router sent something that is not a well-formed HTTP/1.1 response."""


class Client:
    def __init__(
        self, port: int, timeout: float = TIMEOUT_S, tls: ssl.SSLContext | None = None, server_name: str = ""
    ) -> None:
        """`tls`: speak HTTPS, checking the certificate against `server_name` with that context's roots."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=server_name)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_unless_closed(self, data: bytes) -> bool:
        """Send, unless the router has closed the connection (what a test of a refusal expects): then False."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def request(self, data: bytes, head: bool = False) -> Response:
        self.send(data)
        return self.response(head=head)

    def get(self, path: str = "/", host: str = "app", headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return self.request(get(path, host, headers))

    # -- reading -------------------------------------------------------------------------------------------------

    def _more(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if not self._more():
                raise ProtocolError(f"connection closed in a line: {bytes(self.buf)!r}")
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        if b"\n" in line or b"\r" in line:
            raise ProtocolError(f"bare CR or LF in {line!r}")
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._more():
                raise ProtocolError(f"connection closed {size - len(self.buf)} bytes before the end of a body")
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def response(self, head: bool = False) -> Response:
        """The next final response (interim 1xx ones are skipped); `head`: it answers a HEAD request."""
        while True:
            status_line = self.read_line()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
                raise ProtocolError(f"bad status line {status_line!r}")
            status = int(parts[1])
            headers = []
            while line := self.read_line():
                name, colon, value = line.partition(b":")
                if not colon or name != name.strip():
                    raise ProtocolError(f"bad header line {line!r}")
                headers.append((name.decode(), value.strip().decode("latin-1")))
            if not 100 <= status < 200 or status == 101:
                break
        response = Response(status, headers, b"", "none")
        codings = response.all("transfer-encoding")
        lengths = response.all("content-length")
        if codings and lengths:
            raise ProtocolError("response with both Transfer-Encoding and Content-Length")
        if head or status in (101, 204, 304):
            return response
        if codings:
            if codings != ["chunked"]:
                raise ProtocolError(f"response Transfer-Encoding {codings}")
            response.framing = "chunked"
            while size := int(self.read_line().split(b";")[0], 16):
                response.chunks.append(self.read_exactly(size))
                if self.read_line():
                    raise ProtocolError("chunk longer than its size")
            while self.read_line():  # trailers
                pass
            response.body = b"".join(response.chunks)
        elif lengths:
            if len(set(lengths)) != 1:
                raise ProtocolError(f"response Content-Lengths {lengths}")
            response.framing = "length"
            response.body = self.read_exactly(int(lengths[0]))
        else:
            response.framing = "close"
            while self._more():
                pass
            response.body = bytes(self.buf)
            self.buf.clear()
        return response

    def closed_within(self, timeout: float) -> bool:
        """True when the router closes (or resets) the connection within `timeout`, with nothing more sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return not self.buf
            if not data:
                return not self.buf
            self.buf += data
        return False


def get(path: str = "/", host: str = "app", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def one(port: int, data: bytes, head: bool = False) -> Response:
    with Client(port) as client:
        return client.request(data, head=head)
