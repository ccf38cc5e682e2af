"""Endpoints that misbehave, each the way a real one was seen to: `python misbehaving.py MODE` prints its port and
serves until killed.

Modes: `stall-after-head` (Content-Length: 100, 10 bytes, then silence), `stall-after-head-large` (the same with
Content-Length 1,000,000), `never-read-body` (reads the request head, never its body), `huge-head` (header lines
without end, up to 300 MB), `hang` (reads the request, never answers), `early-hints` (103 with a Link header, then
200), `gzip-chunked` (`Transfer-Encoding: gzip, chunked`), `lenient` (Python's own http.server: answers whatever it
is sent, as leniently as it does).
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUGE_HEAD_BYTES = 300 * 1024 * 1024


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await read_head(reader)
            if mode == "never-read-body":
                await asyncio.Event().wait()
            if b"content-length" in head.lower() and mode != "hang":
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            if mode.startswith("stall-after-head"):
                length = 1_000_000 if mode.endswith("-large") else 100
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"x" * 10)
                await writer.drain()
                await asyncio.Event().wait()
            elif mode == "hang":
                await asyncio.Event().wait()
            elif mode == "huge-head":
                writer.write(b"HTTP/1.1 200 OK\r\n")
                line = b"X-Filler: " + b"a" * 990 + b"\r\n"
                block = line * 64
                sent = 0
                while sent < HUGE_HEAD_BYTES:
                    writer.write(block)
                    await writer.drain()
                    sent += len(block)
                writer.write(b"Content-Length: 0\r\n\r\n")
                await writer.drain()
            elif mode == "early-hints":
                writer.write(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                )
                await writer.drain()
            elif mode == "gzip-chunked":
                body = gzip.compress(b"compressed hello")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                    + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
                )
                await writer.drain()
            else:
                raise SystemExit(f"unknown mode {mode!r}")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


class Lenient(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_HEAD = answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that reads its status line and leaves is what the test does on purpose


async def main(mode: str) -> None:
    server = await asyncio.start_server(lambda r, w: serve(mode, r, w), "127.0.0.1", 0, limit=1 << 20)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "lenient":
        httpd = QuietServer(("127.0.0.1", 0), Lenient)
        print(httpd.server_address[1], flush=True)
        httpd.serve_forever()
    else:
        asyncio.run(main(sys.argv[1]))
